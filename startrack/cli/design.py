"""``startrack design``: how precisely, and where in the pixel, a sensor can localise a star."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..design import REGIONS, design
from ..psf import EPSF
from ..io import write_table
from .common import pyplot

HELP = """Cramér–Rao precision limit (PL) of a star over the pixel, for sensor design
(small-PSF paper). For a Gaussian spot of radius R px (or a measured ePSF) with
N photo-electrons over dark variance V e-^2 it writes to DIR:

  map.ecsv       PL_x, PL_y at every intra-pixel position (x, y from the pixel
                 centre) and its region: RLE / RME / RHE, three equal PL levels
  regions.ecsv   each region's area fraction and mean PL
  radius.ecsv    RMS and best PL_x against the Gaussian radius, beside the
                 closed-form boundary optimum (r/N) sqrt(pi (N + 2V) / 2)
  verdict.txt    best achievable PL and where, and the defocus that minimises
                 the average PL
  design.png     all of it drawn (needs matplotlib: the 'plot' extra)

With --wavelength-nm, --f-number and --pixel-um it adds the diffraction limit
1.22 lambda F / a and the best PL at the smallest radius it allows (DL/3).
The map's bound treats flux and background as known (the paper's); --params
all gives the bound of a fit of x, y, flux and background.

examples:
  startrack design --radius 0.2 --photons 1500 --dark-var 25 --out design
  startrack design --epsf epsf.fits --photons 5000 --dark-var 25 --gain 0.2 \\
      --wavelength-nm 550 --f-number 2 --pixel-um 5.3 --out design
"""


def register(sub):
    p = sub.add_parser("design", help="precision limit over the pixel, for sensor design", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    psf = p.add_mutually_exclusive_group(required=True)
    psf.add_argument("--radius", type=float, metavar="R", help="Gaussian PSF radius r in px")
    psf.add_argument("--epsf", metavar="FILE", help="ePSF FITS file from 'startrack epsf build'")
    p.add_argument("--photons", type=float, required=True, metavar="N", help="photo-electrons per star")
    p.add_argument("--dark-var", type=float, required=True, metavar="V", help="dark variance sd2 in e-^2")
    p.add_argument("--gain", type=float, default=1.0, metavar="K", help="DN per e- (to quote the signal in DN)")
    p.add_argument("--background", type=float, default=0.0, metavar="B", help="sky in e-/pixel (default 0)")
    p.add_argument("--wavelength-nm", type=float, metavar="L", help="wavelength in nm (for the diffraction limit)")
    p.add_argument("--f-number", type=float, metavar="F", help="focal ratio of the optics")
    p.add_argument("--pixel-um", type=float, metavar="A", help="pixel pitch in micrometres")
    p.add_argument("--params", choices=["xy", "all"], default="xy",
                   help="unknowns of the map's bound: position only (xy, default) or x, y, flux, background (all)")
    p.add_argument("--grid", type=int, default=40, help="intra-pixel grid points per axis (default 40)")
    p.add_argument("--out", "-o", default="design", metavar="DIR", help="output folder (default design)")
    p.set_defaults(func=run)


def run(args):
    psf = EPSF.load(args.epsf) if args.epsf else args.radius
    if args.grid < 2:
        raise ValueError(f"--grid must be at least 2, got {args.grid}")
    params = ("x", "y") if args.params == "xy" else ("x", "y", "flux", "background")
    d = design(psf, args.photons, args.dark_var, gain=args.gain, background=args.background,
               wavelength_nm=args.wavelength_nm, f_number=args.f_number, pixel_um=args.pixel_um, params=params,
               n=args.grid)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_table(d.pmap, out / "map.ecsv")
    write_table(d.regions, out / "regions.ecsv")
    write_table(d.curve, out / "radius.ecsv")
    (out / "verdict.txt").write_text(d.verdict + "\n")
    print(d.verdict)
    print()
    for row in d.regions:
        print(f"  {row['region']}: {100 * row['area_fraction']:5.1f} % of the pixel, mean PL {row['pl_mean']:.4f} px")
    print(f"  tables: {out / 'map.ecsv'}, {out / 'regions.ecsv'}, {out / 'radius.ecsv'}")
    plt = pyplot("install the 'plot' extra for design.png")
    if plt is None:
        return 0
    fig, ax = plt.subplots(1, 4, figsize=(19, 4.4))
    n = int(round(np.sqrt(len(d.pmap))))
    ext = [-0.5, 0.5, -0.5, 0.5]
    for a, col in zip(ax[:2], ("pl_x", "pl_y")):
        img = np.asarray(d.pmap[col]).reshape(n, n)
        im = a.imshow(np.log10(img), origin="lower", extent=ext, cmap="viridis")
        fig.colorbar(im, ax=a, label=f"log10 {col} (px)")
        a.set_title(f"{col.upper().replace('_', ' ')} over the pixel")
        a.set_xlabel("x from the pixel centre (px)")
        a.set_ylabel("y (px)")
    level = np.array([REGIONS.index(r) for r in d.pmap["region"]]).reshape(n, n)
    cmap = plt.get_cmap("RdYlGn_r", 3)
    ax[2].imshow(level, origin="lower", extent=ext, cmap=cmap, vmin=-0.5, vmax=2.5)
    for k, row in enumerate(d.regions):
        ax[2].plot([], [], "s", color=cmap(k), label=f"{row['region']} {100 * row['area_fraction']:.0f} %, "
                                                    f"{row['pl_mean']:.4f} px")
    ax[2].legend(loc="upper right", fontsize=8)
    ax[2].set_title("regions of low / medium / high error")
    ax[2].set_xlabel("x from the pixel centre (px)")
    plot_radius(ax[3], [d.curve], mark=d.radius, diffraction=d.diffraction)
    fig.tight_layout()
    fig.savefig(out / "design.png", dpi=110)
    plt.close(fig)
    print(f"  plot: {out / 'design.png'}")
    return 0


def plot_radius(ax, curves, mark=None, diffraction=None):
    """Draw RMS and best PL against radius with the closed-form optimum (the small-PSF paper's Fig. 3a).

    ``curves`` are :func:`startrack.design.pl_versus_radius` tables (one per noise level).
    """
    for c, ls in zip(curves, ("-", "--", ":", "-.")):
        lab = f"sd2 = {c.meta['dark_var']:g}"
        r = np.asarray(c["radius"])
        ax.semilogy(r, c["pl_rms"], "r" + ls, label=f"RMS PL ({lab})")
        ax.semilogy(r, c["pl_best"], "b" + ls, label=f"best PL ({lab})")
        ax.semilogy(r, c["pl_closed_form"], "k" + ls, lw=0.9, label=f"closed form ({lab})")
    hi = max(float(np.max(c["pl_best"])) for c in curves)
    ax.set_ylim(0.5 * min(float(np.min(c["pl_closed_form"])) for c in curves), 20 * hi)
    if mark is not None:
        ax.axvline(mark, color="0.5", lw=0.8, label=f"this PSF, r = {mark:.3f} px")
    if diffraction:
        ax.axvspan(0, diffraction["r_min"], color="0.85", label="below the diffraction limit (DL/3)")
    ax.set_xlim(0, float(max(np.max(c["radius"]) for c in curves)))
    ax.set_xlabel("Gaussian PSF radius r (px)")
    ax.set_ylabel("precision limit PL_x (px)")
    ax.set_title(f"PL against radius, N = {curves[0].meta['photons']:g} e-")
    ax.legend(fontsize=7)
