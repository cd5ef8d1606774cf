"""One front door from a frame to star positions with their Cramér–Rao bounds.

:func:`measure_stars` is :func:`startrack.detect` (threshold on a
matched-filtered image, centre of gravity) followed by
:func:`startrack.localize` (Poisson MLE started from the centre of gravity),
one row per star with both tables' columns. The star tracker
(:func:`startrack.sky.pipeline.solve_frame`) and ``startrack localize`` both
go through it.
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy.table import Table

from .detect import detect
from .flags import BAD_FIT
from .localize import localize
from .psf import PSFModel
from .sensor import as_sensor
from .validate import as_image, as_int, one_of

__all__ = ["measure_stars", "DETECTION_COLUMNS"]

#: Columns of :func:`startrack.detect` that :func:`measure_stars` keeps beside the fit's (``flux`` and
#: ``background`` are the fit's: the detection's are only its start).
DETECTION_COLUMNS = ("x_cg", "y_cg", "peak", "snr", "npix", "saturated")


def _peak_fraction(model: PSFModel) -> float:
    """Largest fraction of a star's flux one pixel can record (the star centred on the pixel)."""
    return float(model.image(2.0, 2.0, (5, 5))[2, 2])


def measure_stars(image, model, sensor=None, *, threshold=5.0, roi=None, max_stars=None, fit="all",
                  keep_bad=False) -> Table:
    """Stars of a frame with their Cramér–Rao bounds: detection, CG start, Poisson MLE.

    Parameters
    ----------
    image : 2-D array
        Raw frame (DN; photo-electrons without a sensor).
    model : PSFModel
        PSF model of the fit, e.g. ``GaussianPSF(0.5)`` or an ``EPSF``.
    sensor : Sensor, optional
        Gain, offset, dark variance, read noise and saturation; None takes
        the pixel values as photo-electrons (gain 1, no offset or dark noise).
    threshold : float
        Detection threshold in sigmas of the matched-filtered background noise.
    roi : int, optional
        Width (px) of the CG and fitting window; default the model's own
        (:meth:`PSFModel.default_roi`).
    max_stars : int, optional
        Keep only the brightest ``max_stars`` detections.
    fit : {"all", "xy"}
        Fit x, y, flux and background, or only x, y with the flux and the
        background held at the detection's.
    keep_bad : bool
        False (default): drop fits that failed (flags in
        :data:`startrack.flags.BAD_FIT`, no finite ``x_err``, no positive
        flux) and single hot pixels; the number of hot pixels dropped is in
        ``meta["hot_pixels_rejected"]``. True: keep every detection with its
        flags and its ``hot_pixel`` mark.

    Returns
    -------
    Table
        One row per star, brightest (fitted flux) first: ``id`` (the
        detection's), the fit's columns (``x, y`` px, ``flux`` e-,
        ``background`` e-/px above the dark level, ``x_err, y_err, flux_err,
        background_err``, ``flags``, ``converged`` ...; see
        :func:`startrack.localize`), the detection's ``x_cg, y_cg, peak, snr,
        npix, saturated`` and ``hot_pixel``: the brightest pixel holds more
        of the flux than the PSF can put into one (halfway between the PSF's
        largest pixel fraction and 1), so it is not a star.

    Examples
    --------
    >>> import startrack as st
    >>> sensor = st.Sensor(gain=0.2, offset=37, dark_var=25)
    >>> psf = st.GaussianPSF(0.4)
    >>> img = st.simulate.simulate_frame((32, 32), 15.3, 16.5, 3000, psf, sensor, seed=1)
    >>> stars = st.measure_stars(img, psf, sensor)
    >>> len(stars), bool(abs(stars["x"][0] - 15.3) < 5 * stars["x_err"][0])
    (1, True)
    """
    img = as_image(image)
    if not np.isfinite(img).any():
        raise ValueError("the frame has no finite pixels (all NaN)")
    if not isinstance(model, PSFModel):
        raise ValueError(f"model must be a startrack PSF model (e.g. GaussianPSF(0.3)), got {type(model).__name__}")
    sensor = as_sensor(sensor)
    fit = one_of(fit, "fit", ("all", "xy"))
    roi = model.default_roi() if roi is None else as_int(roi, "roi", minimum=3)
    with warnings.catch_warnings():
        # tiles of NaN pixels leave NaN medians in the background map; detect ignores them
        warnings.simplefilter("ignore", RuntimeWarning)
        det = detect(img, sensor, threshold=threshold, roi=roi, max_stars=max_stars)
    frac = np.asarray(det["peak"], float) / sensor.gain / np.maximum(np.asarray(det["flux"], float), 1e-9)
    hot = frac > 0.5 * (1.0 + _peak_fraction(model))
    rejected = 0
    if not keep_bad:
        rejected = int(hot.sum())
        det, hot = det[~hot], hot[~hot]
    kw = {}
    params = ("x", "y", "flux", "background")
    if fit == "xy":
        params = ("x", "y")
        bg_e = (np.asarray(det["background"], float) - sensor.offset) / sensor.gain - sensor.dark_var
        kw = {"flux": np.asarray(det["flux"], float), "background": np.maximum(bg_e, 0.0)}
    res = localize(img, det, model, sensor, roi=roi, fit=params, **kw)
    res.add_column(det["id"], index=0)
    for col in DETECTION_COLUMNS:
        res[col] = det[col]
    res["hot_pixel"] = hot
    if not keep_bad:
        ok = ((np.asarray(res["flags"]) & BAD_FIT) == 0) & np.isfinite(np.asarray(res["x_err"], float))
        res = res[ok & (np.asarray(res["flux"], float) > 0)]
    # NaN fluxes (failed fits kept with keep_bad) sort last
    res = res[np.argsort(-np.asarray(res["flux"], float), kind="stable")]
    res.meta.update(det.meta)
    res.meta["hot_pixels_rejected"] = rejected
    return res
