import numpy as np
import pytest

import startrack as st


@pytest.fixture
def sensor():
    return st.Sensor(gain=0.2, offset=37.0, dark_var=25.0)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# -- a short night-sky sequence of a ground-fixed zenith camera, with pass 1 done (pipeline.solve_frame) ----------
#: The acceptance sequence of issue 14, cut to 60 frames: 1024 x 1024 px of 5.3 um behind f = 25 mm, 366 ms
#: cadence, the paper's EMVA sensor, a non-Gaussian small PSF (0.3 px core, a twice as wide wing with 20 % of the
#: light, offset; centroid at the reference point, so that positions and the truth mean the same point).
NIGHT = dict(n_frames=60, start="2026-03-20T22:00:00", cadence=0.366, latitude=47.0, longitude=8.0, roll_deg=30.0,
             mag_limit=7.0, seed=3)
NIGHT_PSF = ((0.8, 0.3, -0.05, -0.02), (0.2, 0.6, 0.20, 0.08))


def night_pass1(n_frames, *, seed, start, cadence, latitude, longitude, roll_deg, mag_limit):
    """The simulated sequence through pass 1: tables as the night-sky runner hands them to pass 2."""
    from astropy.table import Table, vstack

    from startrack.sky.camera import Camera
    from startrack.sky.earth import Site
    from startrack.sky.nightsky import star_stamps
    from startrack.sky.pipeline import RESULT_COLUMNS, solve_frame
    from startrack.sky.simulate import ground_sequence
    from startrack.sky.starid.solver import StarIdentifier

    camera = Camera.from_dict({"focal_length_mm": 25.0, "pixel_pitch_um": 5.3, "width": 1024, "height": 1024})
    sensor = st.Sensor(gain=0.14, offset=37.0, dark_var=54.4, saturation=65535)
    psf = st.GaussianMixturePSF(NIGHT_PSF)
    model = st.GaussianPSF(psf.equivalent_radius())
    site = Site(latitude, longitude)
    ident = StarIdentifier(camera)
    rows, stars, stamps, origins, truths, quats = [], [], [], [], [], []
    prior = None
    for k, (image, truth) in enumerate(ground_sequence(camera, psf, sensor, site, n_frames, start=start,
                                                       cadence=cadence, roll_deg=roll_deg, catalog=ident.catalog,
                                                       mag_limit=mag_limit, seed=seed)):
        when = truth.meta["time"]
        res = solve_frame(image, ident, model, sensor, time=when, prior=prior)
        prior = res.solution if res.solution.solved else None
        rows.append({"frame": k, "file": f"frame_{k:05d}.fits", "time": when, **res.row})
        s = res.stars[res.stars["hip"] > 0]
        cut, org = star_stamps(image, s["x"], s["y"])  # as the runner cuts them
        t = Table({c: s[c] for c in ("hip", "x_cg", "y_cg", "x", "y", "x_err", "y_err", "flux", "background",
                                     "flags")})
        t["frame"] = k
        stars.append(t)
        stamps.append(cut)
        origins.append(org)
        quats.append(truth.meta["attitude_quaternion"])
        truth = Table(truth, meta={})
        truth["frame"] = k
        truths.append(truth["frame", "hip", "x", "y", "flux"])
    names = ["frame", "file", "time"] + RESULT_COLUMNS[1:]
    frames = Table(rows=[[r[c] for c in names] for r in rows], names=names)
    stars = vstack(stars, metadata_conflicts="silent")
    stars["stamp"] = np.arange(len(stars))
    return dict(frames=frames, stars=stars, stamps=np.concatenate(stamps), origins=np.concatenate(origins),
                truth=vstack(truths), truth_quaternions=np.array(quats), camera=camera, sensor=sensor, model=model,
                site=site, catalog=ident.catalog, psf=psf)


@pytest.fixture(scope="session")
def night(tmp_path_factory):
    """:data:`NIGHT` through pass 1 and pass 2 (per-star ePSF), made once and shared by the xdist workers."""
    import os
    import pickle

    from filelock import FileLock

    from startrack.sky.star_epsf import per_star_epsf

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this run's folder, shared by its workers
    path = root / "night_sequence.pkl"
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return pickle.loads(path.read_bytes())
        d = night_pass1(**NIGHT)
        d["stars2"], d["frames2"] = per_star_epsf(d["stars"], d["stamps"], d["origins"], d["frames"], d["camera"],
                                                  d["sensor"], d["catalog"], model=d["model"])
        path.write_bytes(pickle.dumps(d))
        return d
