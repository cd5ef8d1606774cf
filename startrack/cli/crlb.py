"""``startrack crlb``: precision limits of a Gaussian spot over the pixel, and the closed forms."""

from __future__ import annotations

import numpy as np

from ..crlb import boundary_optimum, intrapixel_map, precision_limit, two_pixel_limit
from ..psf import GaussianPSF
from ..sensor import Sensor
from .common import command

HELP = """Cramér–Rao precision limit (PL) of a pixel-integrated Gaussian spot of radius
R px with N photo-electrons over dark noise V e-^2: at the pixel centre, on a
pixel boundary, its RMS over all intra-pixel positions, and the closed-form
boundary optimum (r/N) sqrt(pi (N + 2V) / 2) of the small-PSF paper.

--params x|xy treats flux and background as known (the paper's bound);
--params all (default) is the bound of a four-parameter fit.

example:
  startrack crlb --radius 0.2 --photons 1500 --dark-var 25 --params x
"""


def register(sub):
    p = command(sub, "crlb", "precision limit of a spot over the pixel", HELP, quiet=False)
    p.add_argument("--radius", type=float, required=True, metavar="R", help="Gaussian radius r in px")
    p.add_argument("--photons", type=float, required=True, metavar="N", help="photo-electrons in the spot")
    p.add_argument("--dark-var", type=float, default=0.0, metavar="V", help="dark variance sd2 in e-^2 (default 0)")
    p.add_argument("--background", type=float, default=0.0, metavar="B", help="sky in e-/pixel (default 0)")
    p.add_argument("--params", default="all", choices=["x", "xy", "all"],
                   help="unknown parameters: x, xy (known flux) or all (default)")
    p.add_argument("--roi", type=int, default=None, help="window width in px (default: holds the spot)")
    p.add_argument("--grid", type=int, default=40, help="intra-pixel grid points per axis (default 40)")
    p.set_defaults(func=run)


def run(args):
    if args.radius <= 0 or args.photons <= 0 or args.dark_var < 0 or args.background < 0:
        raise ValueError("--radius and --photons must be positive, --dark-var and --background non-negative")
    model = GaussianPSF(args.radius)
    sensor = Sensor(gain=1.0, dark_var=args.dark_var)
    roi = args.roi or model.default_roi()
    c = float(roi // 2)
    kw = dict(params=args.params, roi=roi)
    centre = precision_limit(model, c, c, args.photons, args.background, sensor, **kw)[0]
    edge = precision_limit(model, c + 0.5, c, args.photons, args.background, sensor, **kw)[0]
    m = intrapixel_map(model, args.photons, args.background, sensor, n=args.grid, **kw)
    rms = float(np.sqrt(np.mean(np.square(m["pl_x"]))))
    best = float(np.min(m["pl_x"]))
    where = m[int(np.argmin(m["pl_x"]))]
    closed = boundary_optimum(args.radius, args.photons, args.dark_var)
    two = two_pixel_limit(model, c + 0.5, c, args.photons, args.background, sensor, roi=roi)
    name = {"x": "known flux and background, y known", "xy": "known flux and background",
            "all": "x, y, flux and background fitted"}[args.params]
    print(f"PSF radius {args.radius:g} px, N = {args.photons:g} e-, dark variance {args.dark_var:g} e-^2, "
          f"background {args.background:g} e-/px; bound: {name}; ROI {roi}x{roi}")
    print(f"  PL_x at the pixel centre       {centre:.5f} px")
    print(f"  PL_x on a pixel boundary       {edge:.5f} px")
    print(f"  PL_x RMS over the pixel        {rms:.5f} px")
    print(f"  PL_x best on the grid          {best:.5f} px at (dx, dy) = ({where['x']:+.3f}, {where['y']:+.3f})")
    print(f"  two-pixel approximation (Eq.11) {two:.5f} px  (boundary, known flux)")
    print(f"  closed-form optimum (Eq.14)    {closed:.5f} px  (boundary, known flux; valid for r < 0.3 px)")
    return 0
