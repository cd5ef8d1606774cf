"""Per-pixel effective PSF from a turntable calibration, as a PSF model.

The small-PSF paper's first way (Zhan et al. 2023, Engineering 27, 140,
section 2.1): a spot is stepped across the sensor at known sub-pixel steps;
each pixel's mean value, as a function of the known star position, is that
pixel's own ePSF ``phi_ij(x)`` (or ``phi_ij(x, y)`` on a 2-D grid of
positions), interpolated by a not-a-knot cubic spline. Unlike one shared
ePSF it carries each pixel's response non-uniformity and the optics' local
aberrations, but only for the sensor region and the range of positions
calibrated. :class:`PixelEPSF` renders it through
:func:`startrack.psf.render_one` (kind ``PIXEL_GRID``) with the spline's
exact first and second derivatives, so :func:`startrack.localize` and
:mod:`startrack.crlb` take it unchanged. Build one with
:func:`startrack.calibration.turntable.build_pixel_epsf`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.interpolate import CubicSpline

from .psf import PIXEL_GRID, PSFModel

__all__ = ["PixelEPSF"]


def _breaks(v, name):
    v = np.asarray(v, dtype=float)
    if v.ndim != 1 or v.size < 4:
        raise ValueError(f"{name} must hold at least 4 star positions (not-a-knot cubic spline), got {v.size}")
    if not np.all(np.isfinite(v)) or np.any(np.diff(v) <= 0):
        raise ValueError(f"{name} must be finite and strictly increasing")
    return v


class PixelEPSF(PSFModel):
    """Per-pixel ePSF: each calibrated pixel's recorded fraction of the flux against the star position.

    Parameters
    ----------
    values : ndarray
        Fraction of unit flux recorded by each pixel of the calibrated block:
        shape ``(nx, nrows, ncols)`` for stars at positions ``x`` along one
        axis (1-D), or ``(nx, ny, nrows, ncols)`` for stars on the grid
        ``x`` by ``y`` (2-D).
    x : array, shape (nx,)
        Star x positions (px, frame coordinates), strictly increasing.
    y : float or array, shape (ny,)
        The star row the 1-D scan ran along (px; a number), or the grid's y
        positions (2-D).
    col0, row0 : int
        Frame column and row of the block's first pixel.
    transform : (tx, ty, A), optional
        2-D only: the grid coordinates of a star at frame position (x, y) are
        ``(u, v) = A @ (x - tx, y - ty)`` (A a 2x2 matrix), so a grid stepped
        by a turntable mounted at an angle to the pixel rows is modelled
        exactly; ``x`` and ``y`` are then the grid's u and v positions.
        Default: the identity (grid in frame coordinates).
    period : int, optional
        Repeat the block every ``period`` rows: a stack of frames tiled
        vertically into one mosaic (period = tile height) is then fitted in
        one :func:`startrack.localize` call. Default 0 (no repeat).
    meta : dict, optional
        Calibration metadata (``flux`` e-, ``background`` e-/px, ...).

    Notes
    -----
    A 1-D model ignores the star's y (it is the calibrated row ``y``): fit
    x only, with y held (``fit=("x",)`` or with flux/background). Beyond the
    calibrated positions the end cubic pieces extrapolate; stay inside
    :attr:`x_range` (and :attr:`y_range`).
    """

    kind = PIXEL_GRID
    support = 2.0

    def __init__(self, values, x, y, *, col0, row0, transform=None, period=0, meta=None):
        values = np.asarray(values, dtype=float)
        self.x = _breaks(x, "x")
        if np.ndim(y) == 0:
            self.ndim = 1
            self.y = float(y)
            shape_ok = values.ndim == 3 and values.shape[0] == self.x.size
        else:
            self.ndim = 2
            self.y = _breaks(y, "y")
            shape_ok = values.ndim == 4 and values.shape[:2] == (self.x.size, self.y.size)
        if not shape_ok:
            want = "(nx, nrows, ncols)" if self.ndim == 1 else "(nx, ny, nrows, ncols)"
            raise ValueError(f"values must have shape {want} matching the positions, got {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError("values must be finite")
        self.values = values
        self.col0, self.row0 = int(col0), int(row0)
        self.nrows, self.ncols = values.shape[-2:]
        if transform is None:
            transform = (0.0, 0.0, np.eye(2))
        tx, ty, A = float(transform[0]), float(transform[1]), np.asarray(transform[2], dtype=float)
        if A.shape != (2, 2) or not np.all(np.isfinite(A)) or abs(np.linalg.det(A)) < 1e-12:
            raise ValueError("transform must be (tx, ty, A) with A an invertible 2x2 matrix")
        if self.ndim == 1 and not (tx == 0 and ty == 0 and np.array_equal(A, np.eye(2))):
            raise ValueError("a transform applies to 2-D grids only (a 1-D model is a function of frame x)")
        self.transform = (tx, ty, A)
        self.period = int(period)
        if self.period < 0 or (self.period and self.period < self.nrows):
            raise ValueError(f"period must be 0 or at least the block height ({self.nrows} rows), got {period}")
        self.meta = dict(meta or {})
        self.path = None
        self.params, self.table = self._coefficients()

    def _coefficients(self):
        npix = self.nrows * self.ncols
        if self.ndim == 1:
            v = self.values.reshape(self.x.size, npix)
            c = CubicSpline(self.x, v, axis=0, bc_type="not-a-knot").c  # (4, nx-1, npix), highest power first
            table = np.ascontiguousarray(c[::-1].transpose(2, 1, 0))
            ybreaks = np.zeros(0)
        else:
            v = self.values.reshape(self.x.size, self.y.size, npix)
            cx = CubicSpline(self.x, v, axis=0, bc_type="not-a-knot").c  # (a', k, l, p)
            c = CubicSpline(self.y, cx, axis=2, bc_type="not-a-knot").c  # (b', l, a', k, p)
            c = c[::-1, :, ::-1]  # ascending powers: (b, l, a, k, p)
            table = np.ascontiguousarray(
                c.transpose(4, 3, 1, 2, 0).reshape(npix, (self.x.size - 1) * (self.y.size - 1), 16))
            ybreaks = self.y
        tx, ty, A = self.transform
        params = np.concatenate([[self.ndim, self.col0, self.row0, self.ncols, self.nrows, self.x.size,
                                  ybreaks.size, self.period, tx, ty], A.ravel(), self.x, ybreaks]).astype(np.float64)
        return params, table

    @property
    def x_range(self):
        """Calibrated star x positions (min, max), px."""
        return float(self.x[0]), float(self.x[-1])

    @property
    def y_range(self):
        """Calibrated star y positions (min, max), px; a single row for a 1-D model."""
        return (self.y, self.y) if self.ndim == 1 else (float(self.y[0]), float(self.y[-1]))

    def default_roi(self) -> int:
        return 5

    def shifted(self, columns, rows) -> "PixelEPSF":
        """The same model in a frame whose origin is ``columns``, ``rows`` px to the left and up.

        For a model built on a crop at (col0, row0) of a full frame,
        ``model.shifted(col0, row0)`` is the model in full-frame coordinates.
        """
        columns, rows = int(columns), int(rows)
        kw = dict(col0=self.col0 + columns, row0=self.row0 + rows, period=self.period, meta=self.meta)
        if self.ndim == 1:
            return PixelEPSF(self.values, self.x + columns, self.y + rows, **kw)
        tx, ty, A = self.transform
        return PixelEPSF(self.values, self.x, self.y, transform=(tx + columns, ty + rows, A), **kw)

    def tiled(self, period) -> "PixelEPSF":
        """The same model repeated every ``period`` rows (see ``period`` above)."""
        tx, ty, A = self.transform
        return PixelEPSF(self.values, self.x, self.y, col0=self.col0, row0=self.row0,
                         transform=None if self.ndim == 1 else (tx, ty, A), period=period, meta=self.meta)

    # -- files ---------------------------------------------------------------
    def save(self, path, overwrite=True):
        """Write a FITS file: the pixel values (primary HDU) and the star positions (XPOS, YPOS)."""
        hdr = fits.Header()
        hdr["PSFKIND"] = ("PIXEL_EPSF", "per-pixel ePSF (startrack.PixelEPSF)")
        hdr["NDIMPOS"] = (self.ndim, "1: scan along x at row YFIXED; 2: grid of x, y")
        hdr["COL0"] = (self.col0, "frame column of the first calibrated pixel")
        hdr["ROW0"] = (self.row0, "frame row of the first calibrated pixel")
        if self.ndim == 1:
            hdr["YFIXED"] = (self.y, "star row of the 1-D scan (px)")
        else:
            tx, ty, A = self.transform
            hdr["GRIDTX"] = (tx, "grid (u, v) = A (x - TX, y - TY)")
            hdr["GRIDTY"] = (ty, "grid (u, v) = A (x - TX, y - TY)")
            for (i, j), v in np.ndenumerate(A):
                hdr[f"GRIDA{i}{j}"] = (float(v), f"A[{i}, {j}]")
        for k, v in self.meta.items():
            if isinstance(v, (bool, int, float, str)) and not (isinstance(v, float) and not math.isfinite(v)):
                hdr[f"HIERARCH {k}"] = v
        hdus = [fits.PrimaryHDU(self.values, header=hdr), fits.ImageHDU(self.x, name="XPOS")]
        if self.ndim == 2:
            hdus.append(fits.ImageHDU(self.y, name="YPOS"))
        fits.HDUList(hdus).writeto(path, overwrite=overwrite)
        self.path = str(path)

    @classmethod
    def load(cls, path) -> "PixelEPSF":
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            with fits.open(path) as hdul:
                hdr = hdul[0].header
                if hdr.get("PSFKIND") != "PIXEL_EPSF":
                    raise ValueError("not a per-pixel ePSF file (no PSFKIND = PIXEL_EPSF)")
                values = np.array(hdul[0].data, dtype=float)
                x = np.array(hdul["XPOS"].data, dtype=float)
                y = float(hdr["YFIXED"]) if hdr["NDIMPOS"] == 1 else np.array(hdul["YPOS"].data, dtype=float)
                transform = None
                if hdr["NDIMPOS"] == 2:
                    transform = (hdr["GRIDTX"], hdr["GRIDTY"],
                                 np.array([[hdr["GRIDA00"], hdr["GRIDA01"]], [hdr["GRIDA10"], hdr["GRIDA11"]]]))
                skip = {"PSFKIND", "NDIMPOS", "COL0", "ROW0", "YFIXED", "GRIDTX", "GRIDTY", "GRIDA00", "GRIDA01",
                        "GRIDA10", "GRIDA11"}
                meta = {k: hdr[k] for k in hdr if k not in skip and k not in fits.PrimaryHDU().header
                        and not k.startswith("NAXIS")}
                col0, row0 = int(hdr["COL0"]), int(hdr["ROW0"])
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read a per-pixel ePSF ({str(exc).splitlines()[0]})") from None
        model = cls(values, x, y, col0=col0, row0=row0, transform=transform, meta=meta)
        model.path = str(path)
        return model

    @property
    def spec(self) -> str:
        return f"pixel-epsf:{self.path}" if self.path else "pixel-epsf"

    def __repr__(self):
        where = f"x {self.x[0]:.3f}..{self.x[-1]:.3f}"
        where += f", y {self.y:.3f}" if self.ndim == 1 else f", y {self.y[0]:.3f}..{self.y[-1]:.3f}"
        return (f"PixelEPSF({self.ndim}-D, {self.nrows}x{self.ncols} px block at column {self.col0}, row "
                f"{self.row0}; {where})")
