"""Reproduce the small-PSF paper's Fig. 3a: RMS and best precision limit against the Gaussian radius.

N = 1500 e- (300 DN at K = 0.2), dark variance 25 e-^2 (noise 1) and 250 e-^2
(noise 2); the spot runs along x over one pixel on a pixel-centre row; the
bound treats x alone as unknown (the paper's Eq. 5). Beside the exact CRLB:
the closed-form boundary optimum (r/N) sqrt(pi (N + 2 sd2) / 2) (Eq. 14),
which the paper reports to match the exact best PL for r < 0.3 px.

Writes benchmarks/fig3a.ecsv and benchmarks/fig3a.png (with matplotlib) and
prints the closed form's ratio to the exact best PL.

Run:  python benchmarks/bench_design.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import vstack

from startrack.design import pl_versus_radius

HERE = Path(__file__).parent


def main():
    radii = np.round(np.arange(0.10, 1.0001, 0.025), 3)
    curves = [pl_versus_radius(radii, 1500.0, v, n=200) for v in (25.0, 250.0)]
    for c in curves:
        c["dark_var"] = c.meta["dark_var"]
        c["closed_over_exact"] = c["pl_closed_form"] / c["pl_best"]
    table = vstack(curves, metadata_conflicts="silent")
    table.meta = {"photons": 1500.0, "bound": curves[0].meta["bound"], "path": curves[0].meta["path"],
                  "source": "Zhan et al. 2023, Engineering 27:140, Fig. 3a"}
    for col in ("pl_rms", "pl_best", "best_dx", "pl_closed_form", "pl_centre", "closed_over_exact"):
        table[col].format = ".6g"
    table.write(HERE / "fig3a.ecsv", overwrite=True)
    print(f"{'r (px)':>7} | {'sd2':>4} | {'RMS PL':>9} {'best PL':>9} {'closed':>9} {'closed/exact':>12}")
    for row in table:
        if row["radius"] in (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.6, 1.0):
            print(f"{row['radius']:7.3f} | {row['dark_var']:4.0f} | {row['pl_rms']:9.5f} {row['pl_best']:9.5f} "
                  f"{row['pl_closed_form']:9.5f} {row['closed_over_exact']:12.4f}")
    small = table["radius"] < 0.3
    worst = float(np.max(np.abs(table["closed_over_exact"][small] - 1)))
    print(f"closed form vs exact best PL for r < 0.3 px: within {100 * worst:.2f} % (both noise levels)")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: table only")
        return
    from startrack.plots import plot_radius

    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    plot_radius(ax, curves)
    ax.set_xlim(0.1, 1.0)
    ax.set_ylim(1e-3, 1.0)
    ax.set_title("Fig. 3a reproduced: N = 1500 e-, sd2 = 25 (solid) and 250 (dashed)")
    fig.tight_layout()
    fig.savefig(HERE / "fig3a.png", dpi=120)
    print(f"wrote {HERE / 'fig3a.ecsv'} and {HERE / 'fig3a.png'}")


if __name__ == "__main__":
    main()
