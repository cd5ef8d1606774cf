"""cedar-solve side of benchmarks/bench_starid.py and bench_framepath.py (runs in cedar-solve's own
environment: numpy < 2).

    python _cedar_worker.py (--frames frames.npz | --images images.npy) --out cedar.npz --database DB.npz \
        [--hip-main hip_main.dat --fov 12.4] --width W --height H --fov-estimate DEG [--fov-max-error DEG]

``--frames``: centroid lists (``x, y`` in startrack's convention: pixel
centres at integers). ``--images``: an (n, H, W) stack of frames, centroided
by cedar's own ``get_centroids_from_image`` (its image path; binary opening
off and ``min_area`` 2, since its defaults erase stars of a 0.5 px PSF), the
time of that step in ``t_centroid`` and included in ``t_wall``. Writes, per
frame, whether cedar solved it, its RA/Dec/Roll, and times. Builds the
database first when it is missing.
"""

import argparse
import logging
import time
from pathlib import Path

import numpy as np


def main():
    p = argparse.ArgumentParser()
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--frames")
    src.add_argument("--images")
    p.add_argument("--out", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--hip-main")
    p.add_argument("--fov", type=float)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--fov-estimate", type=float, required=True)
    p.add_argument("--fov-max-error", type=float)
    a = p.parse_args()
    logging.disable(logging.INFO)
    import tetra3

    db = Path(a.database)
    build_s = float("nan")
    if not db.exists():
        t3 = tetra3.Tetra3(load_database=None)
        t0 = time.perf_counter()
        t3.generate_database(max_fov=a.fov, save_as=str(db.with_suffix("")), star_catalog=a.hip_main,
                             star_max_magnitude=8.0, epoch_proper_motion=2026.9)
        build_s = time.perf_counter() - t0
    t3 = tetra3.Tetra3(load_database=str(db))
    if a.images:
        images = np.load(a.images)
        n = len(images)
    else:
        z = np.load(a.frames)
        start, x, y = z["start"], z["x"], z["y"]
        n = len(start) - 1
    solved = np.zeros(n, bool)
    radecroll = np.full((n, 3), np.nan)
    fov = np.full(n, np.nan)
    t_wall = np.full(n, np.nan)
    t_solve = np.full(n, np.nan)
    t_centroid = np.zeros(n)
    for k in range(n):
        t0 = time.perf_counter()
        if a.images:
            cen = tetra3.get_centroids_from_image(images[k], binary_open=False, min_area=2)
            t_centroid[k] = 1000 * (time.perf_counter() - t0)
        else:
            s = slice(start[k], start[k + 1])
            # tetra3 takes (row, col) with the top-left pixel's corner at (0, 0)
            cen = np.column_stack([y[s] + 0.5, x[s] + 0.5])
        r = t3.solve_from_centroids(cen, (a.height, a.width), fov_estimate=a.fov_estimate,
                                    fov_max_error=a.fov_max_error)
        t_wall[k] = 1000 * (time.perf_counter() - t0)
        t_solve[k] = r.get("T_solve", np.nan)
        if r.get("RA") is not None:
            solved[k] = True
            radecroll[k] = (r["RA"], r["Dec"], r["Roll"])
            fov[k] = r["FOV"]
    np.savez(a.out, solved=solved, radecroll=radecroll, fov=fov, t_wall=t_wall, t_solve=t_solve, t_centroid=t_centroid,
             build_s=build_s, version=tetra3.__version__ if hasattr(tetra3, "__version__") else "cedar-solve")


if __name__ == "__main__":
    main()
