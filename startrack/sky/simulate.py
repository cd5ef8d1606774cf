"""What a camera sees of the catalog: projected stars and simulated night-sky frames.

Used to make the sample frame, the star-identification benchmark and tests:
catalog stars at their apparent places for a frame time, rotated by an
attitude, projected through the camera (distortion included) and rendered
through a PSF model and the sensor model, with the defects real frames have
(missing stars, false spots, hot pixels). :func:`ground_sequence` and
:func:`write_ground_sequence` make the night-sky sequence of a camera fixed
to the ground, whose stars drift with the Earth's rotation.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table

from ..psf import PSFModel
from ..sensor import Sensor
from ..simulate import expose, render
from .attitude import Attitude
from .camera import Camera
from .catalog import Catalog, load_catalog, parse_time
from .earth import Site, earth_rotation

__all__ = ["project_stars", "sky_frame", "random_attitude", "ground_attitudes", "ground_sequence",
           "write_ground_sequence", "ZERO_POINT"]

#: Photo-electrons from a star of Hp = 0 in the default exposure: an Hp 7 star gives 1500 e-,
#: the small-PSF paper's reference signal.
ZERO_POINT = 1500.0 * 10 ** (0.4 * 7.0)


def random_attitude(rng) -> Attitude:
    """An attitude drawn uniformly over the sphere and in roll."""
    rng = np.random.default_rng(rng)
    z = rng.uniform(-1, 1)
    return Attitude.from_radec_roll(rng.uniform(0, 360), math.degrees(math.asin(z)), rng.uniform(0, 360))


def project_stars(catalog: Catalog, vectors, attitude: Attitude, camera: Camera, *, mag_limit=None, margin=0.0):
    """Catalog stars that land on the image: a Table of ``index, hip, x, y, hp``.

    ``vectors`` are the catalog's directions for the frame (e.g.
    :meth:`Catalog.apparent`); ``margin`` (px) keeps stars that far outside
    the edges (their light still reaches the image).
    """
    keep = np.ones(len(catalog), bool) if mag_limit is None else catalog.mag <= mag_limit
    b = attitude.boresight
    half_diag = math.atan(math.hypot(camera.width, camera.height) / 2.0 / camera.focal_length_px)
    keep &= np.asarray(vectors) @ b > math.cos(half_diag * 1.3 + 0.01)
    idx = np.flatnonzero(keep)
    x, y = camera.vector_to_pixel(attitude.to_camera(vectors[idx]))
    on = camera.in_image(x, y, margin=-margin)
    idx, x, y = idx[on], x[on], y[on]
    return Table({"index": idx, "hip": catalog.hip[idx], "x": x, "y": y, "hp": catalog.mag[idx]})


def sky_frame(catalog: Catalog, vectors, attitude: Attitude, camera: Camera, psf: PSFModel, sensor: Sensor, *,
              mag_limit=7.0, zero_point=ZERO_POINT, background=20.0, drop=0.0, false_spots=0, hot_pixels=0,
              hot_range=(500.0, 4000.0), seed=None):
    """A simulated frame of the sky seen with ``attitude``.

    Parameters
    ----------
    catalog, vectors : the stars and their directions for the frame time.
    mag_limit : float
        Faintest Hp rendered.
    zero_point : float
        Photo-electrons of an Hp = 0 star (flux = zero_point 10^(-0.4 Hp)).
    background : float
        Sky in e- per pixel.
    drop : float
        Fraction of the stars left out at random (clouds, dust, catalog gaps).
    false_spots : int
        Spurious star-like spots (satellites, planets, glints) at random places
        with random fluxes in the range of the rendered stars.
    hot_pixels : int
        Single pixels set to a random value in ``hot_range`` (DN) after exposure.
    seed : int or Generator

    Returns
    -------
    image : 2-D array (DN)
    truth : Table
        One row per rendered spot: ``x, y, flux`` (e-), ``hp``, ``hip`` (0 for
        false spots), ``index`` (catalog index, -1 for false spots); its meta
        holds the hot pixels' positions.
    """
    rng = np.random.default_rng(seed)
    stars = project_stars(catalog, vectors, attitude, camera, mag_limit=mag_limit, margin=3.0)
    if drop > 0 and len(stars):
        stars = stars[rng.uniform(size=len(stars)) >= drop]
    flux = zero_point * 10 ** (-0.4 * np.asarray(stars["hp"], float))
    x, y = np.asarray(stars["x"], float), np.asarray(stars["y"], float)
    hip, idx, hp = np.asarray(stars["hip"]), np.asarray(stars["index"]), np.asarray(stars["hp"], float)
    if false_spots:
        lo = zero_point * 10 ** (-0.4 * mag_limit)
        hi = max(lo * 2, float(flux.max()) if len(flux) else lo * 100)
        fx = rng.uniform(5, camera.width - 6, false_spots)
        fy = rng.uniform(5, camera.height - 6, false_spots)
        ff = lo * (hi / lo) ** rng.uniform(0, 1, false_spots)
        x, y, flux = np.concatenate([x, fx]), np.concatenate([y, fy]), np.concatenate([flux, ff])
        hip = np.concatenate([hip, np.zeros(false_spots, hip.dtype)])
        idx = np.concatenate([idx, np.full(false_spots, -1, idx.dtype)])
        hp = np.concatenate([hp, -2.5 * np.log10(ff / zero_point)])
    light = render((camera.height, camera.width), x, y, flux, psf, background)
    image = expose(light, sensor, rng)
    hot = np.column_stack([rng.integers(0, camera.width, hot_pixels), rng.integers(0, camera.height, hot_pixels)])
    if hot_pixels:
        image[hot[:, 1], hot[:, 0]] = np.round(rng.uniform(*hot_range, hot_pixels))
    truth = Table({"x": x, "y": y, "flux": flux, "hp": hp, "hip": hip, "index": idx})
    truth.meta["hot_pixels"] = hot.tolist()
    truth.meta["attitude_quaternion"] = attitude.quaternion.tolist()
    return image, truth


def ground_attitudes(times, site: Site, *, altitude_deg=90.0, azimuth_deg=0.0, roll_deg=0.0) -> list:
    """Attitudes (apparent GCRS -> camera) of a camera fixed to the ground at ``site`` at each time.

    ``A(t) = M @ R(t)``: the mounting :meth:`Site.mounting` composed with the
    Earth's rotation :func:`~startrack.sky.earth.earth_rotation`.
    """
    m = site.mounting(altitude_deg, azimuth_deg, roll_deg)
    return [Attitude(m @ r) for r in earth_rotation(times)]


def ground_sequence(camera: Camera, psf: PSFModel, sensor: Sensor, site: Site, n_frames, *, start,
                    cadence=0.366, altitude_deg=90.0, azimuth_deg=0.0, roll_deg=0.0, catalog=None, mag_limit=7.0,
                    zero_point=ZERO_POINT, background=20.0, seed=0):
    """Frames of a camera fixed to the ground, one every ``cadence`` seconds: the stars drift with the Earth.

    Each frame is :func:`sky_frame` at its time: catalog stars at their
    apparent places (reused within a minute, where aberration changes by
    < 0.001 arcsec), seen with :func:`ground_attitudes`, fluxes from their
    magnitudes. Frame ``k`` draws its noise from ``default_rng([seed, k])``,
    so any frame can be remade alone.

    Parameters
    ----------
    camera, psf, sensor : the optics, PSF model and sensor
    site : Site
    n_frames : int
    start : astropy Time or ISO string (UTC)
        Time of the first frame.
    cadence : float
        Seconds between frames (the small-PSF paper's night sky: 0.366 s).
    altitude_deg, azimuth_deg, roll_deg : float
        Pointing and roll (see :meth:`Site.mounting`); default the zenith, north up.
    catalog : Catalog, optional
        Default: the bundled catalog to ``mag_limit``.
    mag_limit, zero_point, background : as in :func:`sky_frame`
    seed : int

    Yields
    ------
    image : 2-D array (DN)
    truth : Table
        As :func:`sky_frame`; ``meta`` holds the frame's ``time`` (ISO) and
        ``attitude_quaternion``.
    """
    from astropy import units as u

    n_frames = int(n_frames)
    t0 = parse_time(start)
    times = t0 + np.arange(n_frames) * float(cadence) * u.s
    times.precision = 6  # ISO times to the microsecond: the sky turns 0.015 arcsec per millisecond
    if catalog is None:
        catalog = load_catalog(mag_limit)
    attitudes = ground_attitudes(times, site, altitude_deg=altitude_deg, azimuth_deg=azimuth_deg,
                                 roll_deg=roll_deg)
    for k in range(n_frames):
        image, truth = sky_frame(catalog, catalog.apparent(times[k]), attitudes[k], camera, psf, sensor,
                                 mag_limit=mag_limit, zero_point=zero_point, background=background,
                                 seed=np.random.default_rng([int(seed), k]))
        truth.meta["time"] = times[k].utc.isot
        yield image, truth


def write_ground_sequence(folder, camera: Camera, psf: PSFModel, sensor: Sensor, site: Site, n_frames, *,
                          start, cadence=0.366, progress=None, **kw):
    """Write a :func:`ground_sequence` as FITS frames with the camera file and the truth.

    Writes ``frame_00000.fits`` ... (16-bit, clipped to 0 .. 65535; ``DATE-OBS``, UTC),
    ``camera.toml`` (``[camera]``, ``[sensor]`` and ``[site]``),
    ``truth.ecsv`` (every rendered star in every frame: ``frame, hip, x, y,
    flux, hp``) and ``truth_frames.ecsv`` (``frame, file, time`` and the
    true attitude quaternion ``qx, qy, qz, qw``, scalar last).

    Parameters
    ----------
    folder : str or Path
    progress : callable, optional
        Called with the number of frames written so far.
    **kw
        Passed to :func:`ground_sequence` (pointing, catalog, magnitudes, seed).

    Returns
    -------
    list of Path
        The frame files, in time order.
    """
    from pathlib import Path

    from astropy.io import fits
    from astropy.table import vstack

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "camera.toml").write_text(f"# {psf.spec} PSF; simulated by startrack.sky.simulate.write_ground_sequence\n"
                                        + camera.to_toml() + "\n" + sensor.to_toml() + "\n" + site.to_toml())
    paths, truths, rows = [], [], []
    for k, (image, truth) in enumerate(ground_sequence(camera, psf, sensor, site, n_frames, start=start,
                                                       cadence=cadence, **kw)):
        path = folder / f"frame_{k:05d}.fits"
        hdr = fits.Header()
        hdr["DATE-OBS"] = (truth.meta["time"], "UTC mid-exposure")
        hdr["COMMENT"] = "simulated by startrack.sky.simulate.write_ground_sequence"
        fits.PrimaryHDU(np.clip(image, 0, 65535).astype(np.uint16), header=hdr).writeto(path, overwrite=True)
        paths.append(path)
        t = truth["hip", "x", "y", "flux", "hp"]
        t.add_column(np.full(len(t), k), name="frame", index=0)
        t.meta = {}
        truths.append(t)
        rows.append((k, path.name, truth.meta["time"], *truth.meta["attitude_quaternion"]))
        if progress is not None:
            progress(k + 1)
    table = vstack(truths) if truths else Table(names=("frame", "hip", "x", "y", "flux", "hp"))
    table.meta = {"psf": psf.spec, "cadence_s": float(cadence), "start": parse_time(start).utc.isot,
                  "note": "x, y in px (pixel centres at integers), flux in e-; hip 0 for spots that are no star"}
    table.write(folder / "truth.ecsv", overwrite=True)
    Table(rows=rows, names=("frame", "file", "time", "qx", "qy", "qz", "qw")).write(folder / "truth_frames.ecsv",
                                                                                    overwrite=True)
    return paths
