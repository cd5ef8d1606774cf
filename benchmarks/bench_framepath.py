"""Frame path benchmark: pixels in memory -> attitude, per stage, against cedar-solve's image path in one run.

Simulates a tracking sequence for two cameras (1024x1024, 5.3 um, f = 25 mm,
~12.4 deg, Hp <= 7; 2048x2048, 5.5 um, f = 16 mm, ~39 deg, Hp <= 5.5: ~30-150
stars a frame) as uint16 frames: the attitude slews 0.05 deg a frame, 10
hot pixels and 3 false spots each, Gaussian PSF through the EMVA 1288 sensor
model. startrack solves each frame with :func:`solve_frame` (Gaussian MLE
with CRLB; the previous frame's solution as the prior) on one numba thread;
the stages come from the row's ``t_*_ms`` columns. cedar-solve gets the
same frames: ``tetra3.get_centroids_from_image`` + ``solve_from_centroids``
(its own environment, numpy < 2; see ``_cedar_worker.py``).

Memory: the peak of the memory allocated while one 2048x2048 frame is
processed (``tracemalloc``, which sees every numpy array; the frame and the
identifier already loaded, the kernels compiled), in a fresh subprocess,
against the frame's bytes.

    python benchmarks/bench_framepath.py                 # 30 frames per camera, 3 repeats
    python benchmarks/bench_framepath.py --frames 10 --no-peers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numba
import numpy as np
from astropy.time import Time

from startrack import GaussianPSF, Sensor
from startrack.sky.attitude import ARCSEC, Attitude
from startrack.sky.camera import Camera
from startrack.sky.catalog import load_catalog
from startrack.sky.pipeline import solve_frame
from startrack.sky.simulate import random_attitude, sky_frame
from startrack.sky.starid import StarIdentifier

CAMERAS = {
    "1MP": ({"focal_length_mm": 25.0, "pixel_pitch_um": 5.3, "width": 1024, "height": 1024}, 7.0),
    "4MP": ({"focal_length_mm": 16.0, "pixel_pitch_um": 5.5, "width": 2048, "height": 2048}, 5.5),
}
SENSOR = Sensor(gain=0.14, offset=37.0, dark_var=54.4, saturation=4095.0)
PSF = GaussianPSF(0.5)
T0 = Time("2026-01-01T00:00:00", scale="utc")
STAGES = ("t_background_ms", "t_detect_ms", "t_cg_ms", "t_mle_ms", "t_identify_ms", "t_attitude_ms")


def make_frames(cam, mag_limit, n, seed):
    """A slewing sequence of uint16 frames and their true attitudes."""
    cat = load_catalog(8.0)
    vec = cat.apparent(T0)
    rng = np.random.default_rng(seed)
    att = random_attitude(rng)
    step = Attitude.from_radec_roll(0.05, 0.0, 0.0).matrix  # 0.05 deg a frame about the pole axis
    frames, truths = [], []
    for _ in range(n):
        img, _ = sky_frame(cat, vec, att, cam, PSF, SENSOR, mag_limit=mag_limit, false_spots=3, hot_pixels=10,
                           seed=rng)
        frames.append(np.clip(np.rint(img), 0, 65535).astype(np.uint16))
        truths.append(att)
        att = Attitude(att.matrix @ step.T)
    return frames, truths


def run_startrack(ident, frames, truths):
    """Solve the sequence with tracking; per-frame total and stage times (ms) and attitude errors (arcsec)."""
    prior = solve_frame(frames[0], ident, PSF, SENSOR, time=T0).solution  # the sequence's lost-in-space start
    out = {k: [] for k in ("time_ms", *STAGES, "err", "n_detected")}
    for img, tru in zip(frames, truths, strict=True):
        res = solve_frame(img, ident, PSF, SENSOR, time=T0, prior=prior)
        for k in ("time_ms", *STAGES, "n_detected"):
            out[k].append(res.row.get(k, np.nan))
        ok = res.solution.solved
        out["err"].append(np.linalg.norm(res.solution.attitude.error(tru)) / ARCSEC if ok else np.nan)
        prior = res.solution if ok else None
    return {k: np.asarray(v, float) for k, v in out.items()}


def run_cedar(frames, cam, work, python):
    """cedar-solve's image path on the same frames (None when its environment is missing)."""
    if not python or not Path(python).exists():
        return None
    from bench_starid import cedar_command

    path = work / f"framepath-{cam.width}.npy"
    np.save(path, np.stack(frames))
    out = work / f"cedar-framepath-out-{cam.width}.npz"
    cmd = cedar_command(python, cam, work, ["--images", str(path)], out)
    subprocess.run(cmd, check=True, env=os.environ | {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    z = np.load(out)
    return {"time_ms": z["t_wall"], "t_centroid_ms": z["t_centroid"], "solved": z["solved"]}


def peak_memory(cam_spec, mag_limit, seed):
    """Peak memory (bytes) allocated by one 2048x2048 frame's solve, measured in a fresh process."""
    code = (
        "import sys, json\n"
        "sys.argv = ['x']\n"
        "from bench_framepath import *\n"
        f"cam = Camera.from_dict({cam_spec!r})\n"
        f"frames, truths = make_frames(cam, {mag_limit}, 2, {seed})\n"
        "ident = StarIdentifier(cam)\n"
        "prior = solve_frame(frames[0], ident, PSF, SENSOR, time=T0).solution\n"
        "solve_frame(frames[0], ident, PSF, SENSOR, time=T0, prior=prior)\n"
        "import gc, tracemalloc; gc.collect()\n"
        "tracemalloc.start()\n"
        "res = solve_frame(frames[1], ident, PSF, SENSOR, time=T0, prior=prior)\n"
        "peak = tracemalloc.get_traced_memory()[1]\n"
        "print(json.dumps({'delta': peak, 'frame': frames[1].nbytes,"
        " 'solved': bool(res.solution.solved)}))\n")
    env = os.environ | {"PYTHONPATH": f"{Path(__file__).parent}:{Path(__file__).parents[1]}",
                        "NUMBA_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=30, help="frames per camera (default 30)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the frames (default 3)")
    p.add_argument("--seed", type=int, default=20261207)
    p.add_argument("--work", type=Path, default=Path("bench-starid-work"), help="scratch folder (peer DBs)")
    p.add_argument("--cedar-python", default="/work/venv-cedar/bin/python",
                   help="python of an environment with cedar-solve 0.5.1 (numpy < 2)")
    p.add_argument("--no-peers", action="store_true", help="startrack only")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    a = p.parse_args(argv)
    numba.set_num_threads(1)
    cv2.setNumThreads(1)  # one core: OpenCV's filter would otherwise take both
    a.work.mkdir(parents=True, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} {platform.processor()} "
              f"{platform.machine()}, python {platform.python_version()}", "frames": a.frames, "cameras": {}}
    for ci, (name, (spec, mag)) in enumerate(CAMERAS.items()):
        cam = Camera.from_dict(spec)
        frames, truths = make_frames(cam, mag, a.frames, a.seed + ci)
        ident = StarIdentifier(cam)
        run_startrack(ident, frames[:3], truths[:3])  # compile, warm the caches
        crep = {"repeats": []}
        for rep in range(a.repeats):
            st = run_startrack(ident, frames, truths)
            r = {"median_ms": float(np.median(st["time_ms"])),
                 "stages_median_ms": {k: float(np.nanmedian(st[k])) for k in STAGES if np.isfinite(st[k]).any()},
                 "solved": float(np.mean(np.isfinite(st["err"]))),
                 "median_err_arcsec": float(np.nanmedian(st["err"])),
                 "stars_median": float(np.median(st["n_detected"]))}
            cd = None if a.no_peers else run_cedar(frames, cam, a.work, a.cedar_python)
            if cd is not None:
                r["cedar_median_ms"] = float(np.median(cd["time_ms"]))
                r["cedar_centroid_median_ms"] = float(np.median(cd["t_centroid_ms"]))
                r["cedar_solved"] = float(np.mean(cd["solved"]))
                r["cedar_over_startrack"] = r["cedar_median_ms"] / r["median_ms"]
            crep["repeats"].append(r)
            print(f"{name} pass {rep + 1}: startrack {r['median_ms']:.2f} ms median "
                  f"({100 * r['solved']:.0f} % solved, {r['stars_median']:.0f} stars); stages "
                  + ", ".join(f"{k[2:-3]} {v:.2f}" for k, v in r["stages_median_ms"].items())
                  + (f"; cedar-solve {r['cedar_median_ms']:.1f} ms "
                     f"(its centroiding {r['cedar_centroid_median_ms']:.1f})"
                     f" = {r['cedar_over_startrack']:.1f}x" if "cedar_median_ms" in r else ""))
        report["cameras"][name] = crep
        if name == "4MP" and not a.no_memory:
            mem = peak_memory(spec, mag, a.seed + ci)
            crep["peak_memory_over_frame_bytes"] = mem["delta"] / mem["frame"]
            print(f"{name}: peak memory allocated by one frame's solve {mem['delta'] / 2**20:.1f} MiB = "
                  f"{mem['delta'] / mem['frame']:.2f}x the frame's {mem['frame'] / 2**20:.0f} MiB")
    out = a.work / "bench_framepath.json"
    out.write_text(json.dumps(report, indent=1, default=float))
    print(f"results: {out}; ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
