"""``startrack design``: how precisely, and where in the pixel, a sensor can localise a star."""

from __future__ import annotations

from pathlib import Path

from ..design import design
from ..io import write_table
from ..psf import EPSF
from .common import command, draw

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
    p = command(sub, "design", "precision limit over the pixel, for sensor design", HELP, out="design",
                what="folder", metavar="DIR")
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
    if not args.quiet:
        print(d.verdict)
        print()
        for row in d.regions:
            print(f"  {row['region']}: {100 * row['area_fraction']:5.1f} % of the pixel, mean PL "
                  f"{row['pl_mean']:.4f} px")
        print(f"  tables: {out / 'map.ecsv'}, {out / 'regions.ecsv'}, {out / 'radius.ecsv'}")
    from ..plots import plot_design

    draw(plot_design, out / "design.png", d, quiet=args.quiet, hint="install the 'plot' extra for design.png")
    return 0
