"""Monte-Carlo accuracy of the localisation against its Cramér–Rao bound.

The check every claim in this package rests on: render many noisy copies of
a spot at chosen intra-pixel positions through the sensor model, localise
them, and compare the error with the precision limit at the true position.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from .crlb import precision_limit
from .detect import centroid
from .likelihood import param_names
from .localize import localize
from .psf import PSFModel
from .sensor import Sensor
from .simulate import spot_grid

__all__ = ["intrapixel_accuracy", "position_errors"]


def intrapixel_accuracy(model: PSFModel, flux, background, sensor: Sensor, *, dx=None, dy=0.0, repeats=500,
                        fit=("x", "y", "flux", "background"), roi=None, fit_model=None, seed=0, quantize=True):
    """Bias and RMSE of MLE and CG along a line of intra-pixel positions, beside the PL.

    Parameters
    ----------
    model : PSFModel
        The true PSF the spots are rendered with.
    flux, background : float
        Photo-electrons in the spot and sky (e-/px).
    sensor : Sensor
    dx : array-like
        Offsets from the pixel centre along x (default 11 points over one pixel).
    dy : float
        Offset along y.
    repeats : int
        Noise realisations per position.
    fit : sequence of str
        Parameters fitted; flux and background are given their true values
        when not fitted, and the PL is the bound of the same parameter set.
    roi : int, optional
        Fitting window (default: the model's own).
    fit_model : PSFModel, optional
        Model the fitter uses (default: the true model).

    Returns
    -------
    Table
        Per position: ``dx, dy, pl_x`` (px, bound of the fitted set at the
        truth), ``bias_x, rmse_x`` (MLE), ``bias_cg, rmse_cg`` (CG), ``n_ok``
        (converged fits used) and ``ratio`` = rmse_x / pl_x.
    """
    dx = np.linspace(-0.5, 0.5, 11) if dx is None else np.atleast_1d(np.asarray(dx, float))
    roi = model.default_roi() if roi is None else int(roi)
    fit = param_names(fit)
    img, truth = spot_grid(model, dx, dy, flux, sensor, background=background, repeats=repeats, seed=seed,
                           spacing=roi + 4, quantize=quantize)
    kw = {}
    if "flux" not in fit:
        kw["flux"] = flux
    if "background" not in fit:
        kw["background"] = background
    res = localize(img, truth, fit_model or model, sensor, fit=fit, roi=roi, **kw)
    cg = centroid(img, truth, roi=roi)
    err = np.asarray(res["x"]) - np.asarray(truth["x"])
    err_cg = np.asarray(cg["x_cg"]) - np.asarray(truth["x"])
    ok_all = np.asarray(res["converged"])
    rows = []
    for d in dx:
        sel = np.isclose(truth["dx"], d)
        ok = sel & ok_all
        c = float(roi // 2)
        pl = precision_limit(model, c + d, c + dy, flux, background, sensor, params=fit, roi=roi)[0]
        rows.append((d, dy, pl, err[ok].mean(), np.sqrt(np.mean(err[ok] ** 2)),
                     np.nanmean(err_cg[sel]), np.sqrt(np.nanmean(err_cg[sel] ** 2)), int(ok.sum())))
    t = Table(rows=rows, names=("dx", "dy", "pl_x", "bias_x", "rmse_x", "bias_cg", "rmse_cg", "n_ok"))
    t["ratio"] = t["rmse_x"] / t["pl_x"]
    t.meta.update(model=getattr(model, "spec", repr(model)), flux=float(flux), background=float(background),
                  dark_var=sensor.dark_var, gain=sensor.gain, repeats=int(repeats), fit=list(fit), roi=roi)
    return t


def position_errors(x, y, x_true, y_true, *, bins=10):
    """Accuracy of estimated positions after removing one offset common to all stars.

    An ePSF's reference point is a convention (its centroid), so a constant
    shift from the true positions is not an error; what is left is noise and
    intra-pixel bias. The S-curve is the mean error in ``bins`` bins of the
    true intra-pixel phase along the same axis; its amplitude is the largest
    bin mean in absolute value.

    Returns
    -------
    dict
        ``n`` (finite estimates used), ``offset_x, offset_y`` (the removed
        mean errors), ``rmse_x, rmse_y`` and ``s_curve_x, s_curve_y``
        (amplitudes), all in px.
    """
    est = np.column_stack([np.asarray(x, float).ravel(), np.asarray(y, float).ravel()])
    tru = np.column_stack([np.asarray(x_true, float).ravel(), np.asarray(y_true, float).ravel()])
    ok = np.all(np.isfinite(est), axis=1)
    err = est[ok] - tru[ok]
    offset = err.mean(axis=0) if ok.any() else np.full(2, np.nan)
    err -= offset
    phase = tru[ok] - np.floor(tru[ok] + 0.5)
    edges = np.linspace(-0.5, 0.5, int(bins) + 1)
    out = {"n": int(ok.sum())}
    for a, name in enumerate("xy"):
        which = np.clip(np.digitize(phase[:, a], edges) - 1, 0, int(bins) - 1)
        means = [err[which == b, a].mean() for b in range(int(bins)) if np.any(which == b)]
        out[f"offset_{name}"] = float(offset[a])
        out[f"rmse_{name}"] = float(np.sqrt(np.mean(err[:, a] ** 2))) if ok.any() else np.nan
        out[f"s_curve_{name}"] = float(np.max(np.abs(means))) if means else np.nan
    return out
