"""Sensor design: where in a pixel a star can be localised, and how precisely.

For a small PSF the Cramér–Rao precision limit (PL) depends strongly on where
in the pixel the star falls: poor at the pixel centre (all the light in one
pixel says little about where it landed), excellent on a boundary (a tiny
move shifts light between two pixels). This module turns
:mod:`startrack.crlb` into the answers a sensor designer needs (small-PSF
paper, sections 2.3 and 3.1):

- :func:`precision_map`: the PL over the pixel with the RLE/RME/RHE regions
  (low, medium and high error: three equal PL levels) and their statistics;
- :func:`pl_versus_radius`: the RMS and best PL against the Gaussian radius
  beside the closed-form boundary optimum (the paper's Fig. 3a);
- :func:`design`: all of it for one optics + sensor, with the diffraction
  limit and a verdict in words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from . import crlb
from .psf import GaussianPSF, PSFModel
from .sensor import Sensor
from .validate import as_float

__all__ = ["precision_map", "pl_regions", "region_summary", "pl_versus_radius", "equivalent_radius", "design", "Design",
           "REGIONS"]

#: Region names, from the lowest PL level to the highest.
REGIONS = ("RLE", "RME", "RHE")


def precision_map(model: PSFModel, photons, sensor: Sensor, *, background=0.0, params=("x", "y"), n=40,
                  roi=None):
    """PL over the pixel, with each intra-pixel position classified as RLE, RME or RHE.

    Parameters
    ----------
    model : PSFModel
    photons : float
        Photo-electrons in the star (e-).
    sensor : Sensor
        Supplies the dark variance (and read noise).
    background : float
        Sky in e-/pixel.
    params : sequence of str
        Unknown parameters of the bound; the default ``("x", "y")`` treats
        flux and background as known (the small-PSF paper's bound).
    n : int
        Grid points per axis over the pixel.
    roi : int, optional
        Window (px) the information is summed over (default: the model's).

    Returns
    -------
    Table
        ``x, y`` (px from the pixel centre, in [-0.5, 0.5)), ``pl_x, pl_y``
        (px), ``pl`` (their RMS, px) and ``region``: the PL range is cut into
        three equal levels, low (RLE), medium (RME) and high (RHE) error.
    """
    t = crlb.intrapixel_map(model, photons, background, sensor, params=params, n=n, roi=roi)
    pl = np.sqrt(0.5 * (np.asarray(t["pl_x"]) ** 2 + np.asarray(t["pl_y"]) ** 2))
    t["pl"] = pl
    t["pl"].unit = "pix"
    t["region"] = pl_regions(pl)
    lo, hi = float(np.min(pl)), float(np.max(pl))
    t.meta.update(photons=float(photons), pl_levels=[lo + k * (hi - lo) / 3.0 for k in range(4)])
    return t


def pl_regions(pl) -> np.ndarray:
    """RLE, RME or RHE for each PL: its range cut into three equal levels (low, medium, high error).

    Examples
    --------
    >>> pl_regions([0.010, 0.012, 0.019, 0.030]).tolist()
    ['RLE', 'RLE', 'RME', 'RHE']
    """
    pl = np.asarray(pl, dtype=float)
    lo, hi = float(np.min(pl)), float(np.max(pl))
    level = np.minimum((3.0 * (pl - lo) / max(hi - lo, 1e-300)).astype(int), 2)
    return np.array(REGIONS)[level]


def region_summary(pmap: Table) -> Table:
    """Area fraction and mean PL of each region of a :func:`precision_map`.

    Returns
    -------
    Table
        ``region, area_fraction, pl_mean, pl_x_mean, pl_y_mean, pl_min, pl_max`` (px).
    """
    rows = []
    for name in REGIONS:
        sel = np.asarray(pmap["region"]) == name
        if not sel.any():
            rows.append((name, 0.0, np.nan, np.nan, np.nan, np.nan, np.nan))
            continue
        pl = np.asarray(pmap["pl"])[sel]
        rows.append((name, float(sel.mean()), float(pl.mean()), float(np.mean(np.asarray(pmap["pl_x"])[sel])),
                     float(np.mean(np.asarray(pmap["pl_y"])[sel])), float(pl.min()), float(pl.max())))
    t = Table(rows=rows, names=("region", "area_fraction", "pl_mean", "pl_x_mean", "pl_y_mean", "pl_min", "pl_max"))
    for col in t.colnames[2:]:
        t[col].unit = "pix"
    return t


def pl_versus_radius(radii, photons, dark_var, *, background=0.0, n=40):
    """RMS and best known-flux PL_x of a Gaussian spot against its radius (the small-PSF paper's Fig. 3a).

    As in the paper the spot runs along x over one pixel on a pixel-centre
    row, and the bound treats x alone as unknown.

    Parameters
    ----------
    radii : array-like
        Gaussian radii r (px).
    photons : float
        Photo-electrons N.
    dark_var : float
        Dark variance sd2 (e-^2).
    background : float
        Sky (e-/pixel).
    n : int
        Intra-pixel positions per pixel (the boundary is one of them).

    Returns
    -------
    Table
        ``radius, pl_rms, pl_best, best_dx`` (offset of the best position from
        the pixel centre), ``pl_closed_form`` (:func:`startrack.crlb.boundary_optimum`)
        and ``pl_centre`` (at the pixel centre), all in px.
    """
    radii = np.atleast_1d(np.asarray(radii, dtype=float))
    if np.any(~np.isfinite(radii)) or np.any(radii <= 0):
        raise ValueError("radii must be positive numbers of pixels")
    sensor = Sensor(gain=1.0, dark_var=dark_var)
    dx = -0.5 + np.arange(int(n)) / int(n)
    rows = []
    for r in radii:
        model = GaussianPSF(r)
        c = float(model.default_roi() // 2)
        pl, _ = crlb.precision_limit(model, c + dx, np.full_like(dx, c), photons, background, sensor, params=("x",))
        k = int(np.argmin(pl))
        centre = pl[np.argmin(np.abs(dx))]
        rows.append((r, float(np.sqrt(np.mean(pl**2))), float(pl[k]), float(dx[k]),
                     crlb.boundary_optimum(r, photons, dark_var), float(centre)))
    t = Table(rows=rows, names=("radius", "pl_rms", "pl_best", "best_dx", "pl_closed_form", "pl_centre"))
    for col in t.colnames:
        t[col].unit = "pix"
    t.meta.update(photons=float(photons), dark_var=float(dark_var), background=float(background),
                  bound="known flux and background, x only (small-PSF paper, Eq. 5)",
                  path="x over one pixel, y at the pixel centre")
    return t


def equivalent_radius(model: PSFModel) -> float:
    """Radius (px) of the pixel-integrated Gaussian that best matches the model: :meth:`PSFModel.equivalent_radius`."""
    return model.equivalent_radius()


@dataclass
class Design:
    """Everything :func:`design` works out for one optics + sensor.

    Attributes
    ----------
    pmap : Table
        :func:`precision_map` of the spot.
    regions : Table
        :func:`region_summary` of the map.
    curve : Table
        :func:`pl_versus_radius` at the design's photons and dark variance.
    radius : float
        Gaussian radius of the spot (given, or the ePSF's equivalent), px.
    diffraction : dict
        ``limit`` (DL, px), ``r_min`` (DL/3, px), ``pl_optimum`` (closed form at
        r_min) and ``pl_best`` (exact best PL at r_min), when optics are given.
    verdict : str
        One paragraph in words.
    """

    pmap: Table
    regions: Table
    curve: Table
    radius: float
    diffraction: dict = field(default_factory=dict)
    verdict: str = ""


def design(psf, photons, dark_var, *, gain=1.0, background=0.0, wavelength_nm=None, f_number=None, pixel_um=None,
           params=("x", "y"), n=40, radii=None):
    """Precision map, regions, PL against radius, diffraction limit and a verdict for one sensor.

    Parameters
    ----------
    psf : float or PSFModel
        A Gaussian radius r (px) or a PSF model (e.g. an :class:`~startrack.EPSF`).
    photons : float
        Photo-electrons in the star (e-).
    dark_var : float
        Dark variance sd2 (e-^2).
    gain : float
        DN per e- (only for quoting the signal in DN).
    background : float
        Sky (e-/pixel).
    wavelength_nm, f_number, pixel_um : float, optional
        Optics; all three give the diffraction limit ``1.22 lambda F / a`` (px)
        and the smallest useful radius DL/3.
    params : sequence of str
        Unknown parameters of the map's bound (default: position only).
    n : int
        Intra-pixel grid points per axis.
    radii : array-like, optional
        Radii of the PL-against-radius curve (default 0.05 to 1.5 px).

    Returns
    -------
    Design
    """
    photons = as_float(photons, "photons", positive=True)
    dark_var = as_float(dark_var, "dark_var", nonnegative=True)
    gain = as_float(gain, "gain", positive=True)
    if isinstance(psf, PSFModel):
        model = psf
        radius = equivalent_radius(model)
    else:
        radius = as_float(psf, "radius", positive=True)
        model = GaussianPSF(radius)
    optics = (wavelength_nm, f_number, pixel_um)
    if any(v is not None for v in optics) and not all(v is not None for v in optics):
        raise ValueError("the diffraction limit needs all three of wavelength_nm, f_number and pixel_um")
    sensor = Sensor(gain=gain, dark_var=dark_var)
    pmap = precision_map(model, photons, sensor, background=background, params=params, n=n)
    regions = region_summary(pmap)
    if radii is None:
        radii = np.round(np.geomspace(0.05, 1.5, 31), 4)
    radii = np.union1d(np.asarray(radii, float), [round(radius, 4)])
    diffraction = {}
    if wavelength_nm is not None:
        dl = crlb.diffraction_limit(as_float(wavelength_nm, "wavelength_nm", positive=True) * 1e-3,
                                    as_float(f_number, "f_number", positive=True),
                                    as_float(pixel_um, "pixel_um", positive=True))
        r_min, pl_opt = crlb.diffraction_optimum(wavelength_nm * 1e-3, f_number, pixel_um, photons, dark_var)
        radii = np.union1d(radii, [round(r_min, 4)])
        diffraction = dict(limit=dl, r_min=r_min, pl_optimum=pl_opt)
    curve = pl_versus_radius(radii, photons, dark_var, background=background, n=n)
    if diffraction:
        at = np.argmin(np.abs(curve["radius"] - round(diffraction["r_min"], 4)))
        diffraction["pl_best"] = float(curve["pl_best"][at])
    d = Design(pmap=pmap, regions=regions, curve=curve, radius=radius, diffraction=diffraction)
    d.verdict = _verdict(d, model, photons, dark_var, gain, background)
    return d


def _verdict(d: Design, model, photons, dark_var, gain, background):
    m = d.pmap
    k = int(np.argmin(m["pl"]))
    kx = int(np.argmin(m["pl_x"]))
    rms = float(np.sqrt(np.mean(np.square(m["pl"]))))
    low = d.regions[0]
    c = d.curve
    j = int(np.argmin(c["pl_rms"]))
    r_opt = float(c["radius"][j])
    what = (f"a Gaussian spot of radius {d.radius:.3g} px" if isinstance(model, GaussianPSF)
            else f"this PSF (equivalent Gaussian radius {d.radius:.3g} px)")
    text = (f"With {photons:.4g} e- per star ({photons * gain:.4g} DN at {gain:g} DN/e-), dark variance "
            f"{dark_var:.4g} e-^2 and sky {background:.4g} e-/px, {what} reaches its best precision limit, "
            f"{m['pl'][k]:.4f} px (x: {m['pl_x'][kx]:.4f} px), at ({m['x'][k]:+.2f}, {m['y'][k]:+.2f}) px from the "
            f"pixel centre, against {rms:.4f} px RMS over the whole pixel; the low-error region (RLE) covers "
            f"{100 * low['area_fraction']:.0f} % of the pixel with a mean PL of {low['pl_mean']:.4f} px. ")
    if r_opt > d.radius * 1.05:
        text += (f"For stars at random intra-pixel positions, defocusing to a radius of about {r_opt:.2f} px would "
                 f"minimise the average PL ({c['pl_rms'][j]:.4f} px RMS along x); keep the spot sharp only if stars "
                 f"can be steered to pixel boundaries, where the closed form gives "
                 f"{float(crlb.boundary_optimum(d.radius, photons, dark_var)):.4f} px. ")
    elif r_opt < d.radius * 0.95:
        text += (f"A sharper focus, to a radius of about {r_opt:.2f} px, would lower the average PL to "
                 f"{c['pl_rms'][j]:.4f} px RMS along x (and the best PL with it). ")
    else:
        text += (f"The average PL is already near its minimum ({c['pl_rms'][j]:.4f} px RMS along x at radius "
                 f"{r_opt:.2f} px): no defocus is needed. ")
    if d.diffraction:
        df = d.diffraction
        text += (f"Diffraction (DL = {df['limit']:.3f} px) keeps the radius above about {df['r_min']:.3f} px, where "
                 f"the best boundary PL is {df['pl_best']:.4f} px (closed form {df['pl_optimum']:.4f} px).")
    return text.strip()
