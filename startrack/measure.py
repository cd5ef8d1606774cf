"""One front door from a frame to star positions with their Cramér–Rao bounds.

:func:`measure_stars` is :func:`startrack.detect` (threshold on a
matched-filtered image, centre of gravity) followed by
:func:`startrack.localize` (Poisson MLE started from the centre of gravity),
one row per star with both tables' columns. The star tracker
(:func:`startrack.sky.pipeline.solve_frame`) and ``startrack localize`` both
go through it.
"""

from __future__ import annotations

from time import perf_counter

import numpy as np
from astropy.table import Table

from .detect import detect
from .flags import BAD_FIT
from .localize import localize
from .psf import PSFModel
from .sensor import as_sensor
from .validate import as_frame, as_int, one_of

__all__ = ["measure_stars", "DETECTION_COLUMNS"]

#: Columns of :func:`startrack.detect` that :func:`measure_stars` keeps beside the fit's (``flux`` and
#: ``background`` are the fit's: the detection's are only its start).
DETECTION_COLUMNS = ("x_cg", "y_cg", "peak", "snr", "npix", "saturated", "elongated")


def _peak_fraction(model: PSFModel) -> float:
    """Largest fraction of a star's flux one pixel can record (the star centred on the pixel)."""
    return float(model.image(2.0, 2.0, (5, 5))[2, 2])


def measure_stars(image, model, sensor=None, *, threshold=5.0, roi=None, max_stars=None, region=None, fit="all",
                  keep_bad=False, detections=None) -> Table:
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
        Keep only the brightest ``max_stars`` detections (brightest first:
        a tracker needs ~50); only those are fitted.
    region : (x0, y0, x1, y1) or 2-D bool array, optional
        Look for stars only in this box (px) or where the mask is True
        (see :func:`startrack.detect`).
    fit : {"all", "xy"}
        Fit x, y, flux and background, or only x, y with the flux and the
        background held at the detection's.
    keep_bad : bool
        False (default): drop fits that failed (flags in
        :data:`startrack.flags.BAD_FIT`, no finite ``x_err``, no positive
        flux), single hot pixels and pieces of lines (trails, lit edges:
        the detection's ``elongated``); the numbers dropped are in
        ``meta["hot_pixels_rejected"]`` and ``meta["elongated_rejected"]``.
        True: keep every detection with its flags and marks.
    detections : Table, optional
        A :func:`startrack.detect` table made with ``stamps=roi + 4``, to
        fit instead of detecting again.

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
    img = as_frame(image)
    if img.dtype.kind == "f" and not np.isfinite(img).any():
        raise ValueError("the frame has no finite pixels (all NaN)")
    if not isinstance(model, PSFModel):
        raise ValueError(f"model must be a startrack PSF model (e.g. GaussianPSF(0.3)), got {type(model).__name__}")
    sensor = as_sensor(sensor)
    fit = one_of(fit, "fit", ("all", "xy"))
    roi = model.default_roi() if roi is None else as_int(roi, "roi", minimum=3)
    times = {}
    if detections is None:
        # the fit's window is centred on the CG, within a pixel or two of the peak the stamp is centred on
        det = detect(img, sensor, threshold=threshold, smooth=max(0.7, model.equivalent_radius()), roi=roi,
                     max_stars=max_stars, region=region, stamps=roi + 4)
    else:
        det = detections
    times.update(det.meta["time_s"])
    if "stamps" not in det.meta:
        raise ValueError("detections must come from startrack.detect(..., stamps=roi + 4)")
    stamps, origins = det.meta["stamps"], det.meta["stamp_origins"]
    # a hot pixel holds more of its window's light than the PSF can put into one pixel
    frac = np.asarray(det["peak"], float) / sensor.gain / np.maximum(np.asarray(det["flux"], float), 1e-9)
    hot = frac > 0.5 * (1.0 + _peak_fraction(model))
    line = np.asarray(det["elongated"], bool)
    rejected = (0, 0)
    if not keep_bad:
        rejected = (int(hot.sum()), int((line & ~hot).sum()))
        good = ~hot & ~line
        det, hot, stamps, origins = det[good], hot[good], stamps[good], origins[good]
    kw = {}
    params = ("x", "y", "flux", "background")
    if fit == "xy":
        params = ("x", "y")
        bg_e = (np.asarray(det["background"], float) - sensor.offset) / sensor.gain - sensor.dark_var
        kw = {"flux": np.asarray(det["flux"], float), "background": np.maximum(bg_e, 0.0)}
    t0 = perf_counter()
    if len(det):
        res = localize(stamps, det, model, sensor, origins=origins, roi=roi, fit=params, **kw)
    else:  # an empty sky: the fit's empty table, from a stand-in frame
        res = localize(np.zeros((roi, roi)), det, model, sensor, roi=roi, fit=params, **kw)
    times["mle"] = perf_counter() - t0
    res.add_column(det["id"], index=0)
    for col in DETECTION_COLUMNS:
        res[col] = det[col]
    res["hot_pixel"] = hot
    if not keep_bad:
        ok = ((np.asarray(res["flags"]) & BAD_FIT) == 0) & np.isfinite(np.asarray(res["x_err"], float))
        res = res[ok & (np.asarray(res["flux"], float) > 0)]
    # NaN fluxes (failed fits kept with keep_bad) sort last
    res = res[np.argsort(-np.asarray(res["flux"], float), kind="stable")]
    res.meta.update({k: v for k, v in det.meta.items() if k not in ("stamps", "stamp_origins")})
    res.meta["hot_pixels_rejected"], res.meta["elongated_rejected"] = rejected
    res.meta["time_s"] = times
    return res
