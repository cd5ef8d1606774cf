"""Photon transfer (EMVA 1288): gain, offset, dark variance, saturation and linearity.

Dark frames and pairs of flat frames at several exposure levels give, per
level, the spatial mean ``mu_y`` (DN) and the temporal variance ``s2_y``
(DN^2; frame-to-frame differences cancel the fixed-pattern noise). The
sensor model of :class:`startrack.Sensor` predicts

    mu_y   = s0 + K (mu_e + sd2)              s2_y      = K^2 (mu_e + sd2 + sr^2) + 1/12
    mu_dark = s0 + K sd2                      s2_dark   = K^2 (sd2 + sr^2) + 1/12

(``mu_e`` photo-electrons, ``sd2`` the Poisson dark signal, ``sr`` Gaussian
read noise, 1/12 DN^2 the quantisation noise of rounding to whole DN), so

* the photon transfer curve ``s2_y - s2_dark = K (mu_y - mu_dark)`` gives the
  gain K as its slope (fitted through the origin below 70 % of saturation,
  as EMVA 1288 does);
* the dark variance gives the temporal dark noise ``sd2 + sr^2 = (s2_dark - 1/12) / K^2``
  (e-^2; EMVA 1288's ``sigma_d^2``, which includes the read noise);
* the variance peak gives the saturation ``mu_y.sat`` and the full well
  ``(mu_y.sat - mu_dark) / K``; the deviation of ``mu_y - mu_dark`` from a
  straight line in exposure time gives the linearity error.

What photon transfer cannot separate
------------------------------------
Dark frames measure two numbers, ``mu_dark`` and ``s2_dark``, but the model
has three: the offset ``s0``, the Poisson dark signal ``sd2`` (whose mean
raises ``mu_dark``) and the Gaussian read noise ``sr`` (zero mean). So the
split of the dark variance into Poisson and Gaussian parts, and with it
``s0``, is a convention: :func:`photon_transfer` takes the read noise as
given (default 0, the small-PSF paper's model where all dark noise is
Poisson), sets ``sd2 = s2_dark/K^2 - 1/(12 K^2) - sr^2`` and
``s0 = mu_dark - K sd2``. Every choice gives the *same likelihood*: the
shifted-Poisson datum ``(P - s0)/K + sr^2`` and its mean
``signal + sd2 + sr^2`` do not change when variance moves between ``sd2``
and ``sr^2`` with ``s0`` following, so localisation and its Cramér–Rao
bound are unaffected. Only ``offset`` and ``dark_var`` as separate numbers
depend on it. Dark frames at several exposure times add the dark current
(the slope of ``mu_dark``), not the split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table, vstack

from ..sensor import Sensor
from ..validate import as_float, as_stack
from .dataset import load_frames, read_manifest

__all__ = ["QUANTIZATION", "level_statistics", "photon_transfer", "measure_ptc", "PhotonTransfer", "plot_ptc"]

#: Variance (DN^2) of rounding to whole DN, uniform over one DN.
QUANTIZATION = 1.0 / 12.0
#: Fewest flat exposure levels a photon transfer fit accepts.
MIN_LEVELS = 4


def level_statistics(frames) -> dict:
    """Mean and temporal variance of frames taken at one exposure (EMVA 1288).

    Parameters
    ----------
    frames : (n, ny, nx) array, n >= 2
        Raw frames in DN at the same exposure (flats or darks).

    Returns
    -------
    dict
        ``mean`` (DN), ``var`` (DN^2, temporal: each pixel's variance over
        the frames after removing each frame's spatial mean, so fixed-pattern
        noise and frame-to-frame illumination drift cancel, averaged over
        pixels), ``mean_err``, ``var_err`` (their standard errors),
        ``npix``, ``nframes``, ``max_value`` (DN) and ``clip_fraction``
        (fraction of pixel values equal to the maximum: > 0 when clipped).
    """
    frames = as_stack(frames, "frames")
    if frames.shape[0] < 2:
        raise ValueError(f"photon transfer needs at least 2 frames per exposure, got shape {frames.shape}")
    n = frames.shape[0]
    npix = frames.shape[1] * frames.shape[2]
    means = frames.mean(axis=(1, 2))
    resid = frames - means[:, None, None]
    var = float(resid.var(axis=0, ddof=1).mean())
    top = float(frames.max())
    return {"mean": float(means.mean()), "var": var,
            "mean_err": math.sqrt(var / (npix * n)),
            # Gaussian sampling variance of a variance with npix (n - 1) degrees of freedom.
            "var_err": var * math.sqrt(2.0 / (npix * (n - 1))),
            "npix": npix, "nframes": n, "max_value": top, "clip_fraction": float(np.mean(frames == top))}


@dataclass
class PhotonTransfer:
    """Result of :func:`photon_transfer`: sensor parameters with standard uncertainties.

    Attributes
    ----------
    gain, gain_err : float
        System gain K (DN/e-).
    offset, offset_err : float
        Dark offset s0 (DN) for the given read-noise split (see module notes).
    dark_var, dark_var_err : float
        Poisson dark signal sd2 (e-^2) for the given read-noise split.
    dark_noise, dark_noise_err : float
        Temporal dark noise sqrt(sd2 + sr^2) in e- rms: EMVA 1288's sigma_d,
        the read noise as a datasheet quotes it (all dark noise, Poisson and Gaussian).
    read_noise : float
        The Gaussian read-noise part assumed (e-; an input, 0 by default).
    dark_mean, dark_mean_err : float
        Mean dark level mu_dark (DN) = s0 + K sd2.
    dark_current, dark_current_err : float
        Slope of the dark signal in e-/s (NaN with darks at one exposure only).
    saturation, saturation_err : float
        Mean pixel value where the temporal variance peaks (DN; EMVA 1288's
        mu_y.sat); NaN when the flats never saturate.
    full_well, full_well_err : float
        Saturation capacity (mu_y.sat - mu_dark)/K in e-.
    linearity_error, linearity_error_err : float
        EMVA 1288 linearity error: half the peak-to-peak relative deviation (%)
        of mu_y - mu_dark from a straight line in exposure time, between 5 % and
        95 % of saturation.
    levels : Table
        Per exposure level: kind, exposure_s, mean, var and their errors,
        ``signal`` (mu_y - mu_dark, DN), ``noise`` (s2_y - s2_dark, DN^2),
        ``used_gain``, ``used_linearity``, ``linearity_dev`` (%).
    """

    gain: float
    gain_err: float
    offset: float
    offset_err: float
    dark_var: float
    dark_var_err: float
    dark_noise: float
    dark_noise_err: float
    read_noise: float
    dark_mean: float
    dark_mean_err: float
    dark_current: float
    dark_current_err: float
    saturation: float
    saturation_err: float
    full_well: float
    full_well_err: float
    linearity_error: float
    linearity_error_err: float
    levels: Table = field(repr=False)

    @property
    def saturated(self) -> bool:
        """True when the flats reached saturation (the variance peaked and fell)."""
        return bool(np.isfinite(self.saturation))

    def sensor(self) -> Sensor:
        """The :class:`~startrack.Sensor` these numbers describe."""
        return Sensor(gain=self.gain, offset=self.offset, dark_var=self.dark_var, read_noise=self.read_noise,
                      saturation=self.saturation if self.saturated else None)

    def summary(self) -> str:
        """Human-readable lines: each quantity with its standard uncertainty."""
        lines = [
            f"gain K            {self.gain:.5f} +- {self.gain_err:.5f} DN/e-",
            f"offset s0         {self.offset:.3f} +- {self.offset_err:.3f} DN",
            f"dark variance sd2 {self.dark_var:.3f} +- {self.dark_var_err:.3f} e-^2",
            f"read noise        {self.dark_noise:.3f} +- {self.dark_noise_err:.3f} e- rms "
            f"(temporal dark noise, EMVA 1288 sigma_d)",
            f"dark level        {self.dark_mean:.3f} +- {self.dark_mean_err:.3f} DN",
        ]
        if np.isfinite(self.dark_current):
            lines.append(f"dark current      {self.dark_current:.3f} +- {self.dark_current_err:.3f} e-/s")
        if self.saturated:
            lines.append(f"saturation        {self.saturation:.1f} +- {self.saturation_err:.1f} DN")
            lines.append(f"full well         {self.full_well:.0f} +- {self.full_well_err:.0f} e-")
        else:
            lines.append("saturation        not reached by the brightest flats")
        lines.append(f"linearity error   {self.linearity_error:.3f} +- {self.linearity_error_err:.3f} %")
        return "\n".join(lines)

    def to_toml(self) -> str:
        """The ``[sensor]`` table, preceded by comment lines giving the uncertainties."""
        head = "\n".join("# " + line for line in self.summary().splitlines())
        split = (f"# offset and dark_var assume a Gaussian read noise of {self.read_noise:g} e-: photon transfer "
                 "cannot split the dark noise (see startrack.calibration.ptc)")
        kinds = np.char.lower(np.asarray(self.levels["kind"], str))
        return (f"# photon transfer (EMVA 1288): {int(np.sum(kinds == 'flat'))} flat and "
                f"{int(np.sum(kinds == 'dark'))} dark exposure levels\n{head}\n{split}\n" + self.sensor().to_toml())


def _wls_line(x, y, err):
    """Weighted straight-line fit y = a + b x: (a, b, cov) with the covariance scaled by the reduced chi^2 (>= 1)."""
    w = 1.0 / np.square(err)
    A = np.column_stack([np.ones_like(x), x])
    F = A.T @ (A * w[:, None])
    cov = np.linalg.inv(F)
    coef = cov @ (A.T @ (w * y))
    dof = len(x) - 2
    if dof > 0:
        chi2 = float(np.sum(w * (y - A @ coef) ** 2)) / dof
        cov = cov * max(chi2, 1.0)
    return coef[0], coef[1], cov


def _dark_model(dark, at):
    """Dark mean and variance (value, error) at exposure ``at``, and the mean's slope in DN/s (value, error)."""
    t = np.asarray(dark["exposure_s"], float)
    out = {}
    if np.unique(t).size >= 2:
        for col in ("mean", "var"):
            a, b, cov = _wls_line(t, np.asarray(dark[col], float), np.asarray(dark[col + "_err"], float))
            out[col] = (a + b * at, math.sqrt(cov[0, 0] + 2 * at * cov[0, 1] + at * at * cov[1, 1]))
            out[col + "_fn"] = (a, b, cov)
        slope = (out["mean_fn"][1], math.sqrt(out["mean_fn"][2][1, 1]))
    else:
        for col in ("mean", "var"):
            v = np.asarray(dark[col], float)
            w = 1.0 / np.square(np.asarray(dark[col + "_err"], float))
            m = float(np.sum(w * v) / np.sum(w))
            out[col] = (m, math.sqrt(1.0 / np.sum(w)))
            out[col + "_fn"] = (m, 0.0, np.diag([1.0 / np.sum(w), 0.0]))
        slope = (math.nan, math.nan)
    return out, slope


def _at(fn, t):
    a, b, cov = fn
    return a + b * t, np.sqrt(cov[0, 0] + 2 * t * cov[0, 1] + t * t * cov[1, 1])


def photon_transfer(levels, *, read_noise=0.0, gain_range=0.7, linearity_range=(0.05, 0.95), at_exposure=None,
                    quantization=QUANTIZATION) -> PhotonTransfer:
    """EMVA 1288 photon transfer from per-exposure statistics.

    Parameters
    ----------
    levels : Table
        One row per (kind, exposure): ``kind`` (``"dark"`` or ``"flat"``),
        ``exposure_s`` and the columns of :func:`level_statistics`
        (``mean, var, mean_err, var_err``). :func:`measure_ptc` builds it from files.
    read_noise : float
        Gaussian part of the dark noise in e- (default 0: all dark noise is
        Poisson, as in the small-PSF paper). Photon transfer cannot measure
        this split; it only moves variance between ``dark_var`` and
        ``read_noise`` and shifts ``offset`` with it (module notes).
    gain_range : float
        The gain is fitted on levels whose signal is below this fraction of
        the saturation signal (EMVA 1288: 0.7).
    linearity_range : (float, float)
        Signal range, as fractions of saturation, of the linearity fit.
    at_exposure : float, optional
        Exposure time (s) the dark values are reported for (default: the
        mean dark exposure). Matters only when the dark signal grows with time.
    quantization : float
        Quantisation noise variance in DN^2 (1/12 for rounding to whole DN).

    Returns
    -------
    PhotonTransfer
    """
    levels = Table(levels, copy=True)
    for col in ("kind", "exposure_s", "mean", "var", "mean_err", "var_err"):
        if col not in levels.colnames:
            raise ValueError(f"levels table needs column {col!r}")
    read_noise = as_float(read_noise, "read_noise", nonnegative=True, unit="e-")
    if not 0 < as_float(gain_range, "gain_range") <= 1:
        raise ValueError(f"gain_range must be in (0, 1], got {gain_range}")
    kind = np.char.lower(np.asarray(levels["kind"], str))
    dark = levels[kind == "dark"]
    flat = levels[kind == "flat"]
    if len(dark) == 0:
        raise ValueError("photon transfer needs dark frames (kind 'dark'): none given")
    if len(flat) < MIN_LEVELS:
        raise ValueError(f"too few flat exposure levels: {len(flat)}; photon transfer needs at least {MIN_LEVELS}")
    flat.sort("exposure_s")
    t_dark = np.asarray(dark["exposure_s"], float)
    at = float(np.mean(t_dark)) if at_exposure is None else as_float(at_exposure, "at_exposure", unit="s")
    dk, (dslope, dslope_err) = _dark_model(dark, at)

    t = np.asarray(flat["exposure_s"], float)
    dm, dm_err = _at(dk["mean_fn"], t)
    dv, dv_err = _at(dk["var_fn"], t)
    signal = np.asarray(flat["mean"], float) - dm
    signal_err = np.hypot(np.asarray(flat["mean_err"], float), dm_err)
    noise = np.asarray(flat["var"], float) - dv
    noise_err = np.hypot(np.asarray(flat["var_err"], float), dv_err)

    # Saturation: where the temporal variance peaks, provided it falls again afterwards.
    var = np.asarray(flat["var"], float)
    p = int(np.argmax(var))
    reached = p < len(flat) - 1 and var[-1] < 0.9 * var[p]
    if reached:
        mu = np.asarray(flat["mean"], float)
        sat = float(mu[p])
        sat_err = 0.5 * max(mu[p] - mu[p - 1] if p > 0 else 0.0, mu[p + 1] - mu[p])
        sat_signal = sat - dk["mean"][0]
        in_gain = signal <= gain_range * sat_signal
        in_gain[p:] = False
        lo, hi = linearity_range
        in_lin = (signal >= lo * sat_signal) & (signal <= hi * sat_signal)
        in_lin[p:] = False
    else:
        sat, sat_err = math.nan, math.nan
        in_gain = np.ones(len(flat), bool)
        in_lin = np.ones(len(flat), bool)
    if in_gain.sum() < 3:
        raise ValueError(f"too few flat exposure levels below {100 * gain_range:.0f} % of saturation: "
                         f"{int(in_gain.sum())}; at least 3 are needed for the gain")

    # Gain: weighted least squares through the origin.
    x, y, e = signal[in_gain], noise[in_gain], noise_err[in_gain]
    w = 1.0 / e**2
    sxx = float(np.sum(w * x * x))
    K = float(np.sum(w * x * y) / sxx)
    chi2 = float(np.sum(w * (y - K * x) ** 2)) / max(len(x) - 1, 1)
    K_err = math.sqrt(max(chi2, 1.0) / sxx)
    if not K > 0:
        raise ValueError("the photon transfer slope is not positive: are the 'flat' frames lit and the 'dark' "
                         "frames dark?")

    # Dark noise, offset and their propagated uncertainties (module notes).
    mu_d, mu_d_err = dk["mean"]
    s2_d, s2_d_err = dk["var"]
    total = (s2_d - quantization) / K**2
    total_err = math.hypot(s2_d_err / K**2, 2.0 * total * K_err / K)
    sd2 = total - read_noise**2
    if sd2 < 0:
        raise ValueError(f"read_noise {read_noise} e- exceeds the measured temporal dark noise "
                         f"{math.sqrt(max(total, 0.0)):.3f} e-")
    s0 = mu_d - K * sd2
    s0_err = math.sqrt(mu_d_err**2 + (s2_d_err / K) ** 2 + ((total + read_noise**2) * K_err) ** 2)
    dark_noise = math.sqrt(max(total, 0.0))
    dark_noise_err = total_err / (2.0 * dark_noise) if dark_noise > 0 else math.nan

    if reached:
        full = (sat - mu_d) / K
        full_err = math.hypot(math.hypot(sat_err, mu_d_err) / K, full * K_err / K)
    else:
        full, full_err = math.nan, math.nan

    # Linearity (EMVA 1288): straight line in exposure time through the signal.
    lin_dev = np.full(len(flat), np.nan)
    if in_lin.sum() >= 3:
        A = np.column_stack([np.ones(in_lin.sum()), t[in_lin]])
        coef, *_ = np.linalg.lstsq(A, signal[in_lin], rcond=None)
        pred = coef[0] + coef[1] * t
        with np.errstate(divide="ignore", invalid="ignore"):
            lin_dev = 100.0 * (signal - pred) / pred
        dev = lin_dev[in_lin]
        dev_err = 100.0 * signal_err[in_lin] / np.abs(pred[in_lin])
        lin = 0.5 * float(dev.max() - dev.min())
        lin_err = 0.5 * math.hypot(dev_err[np.argmax(dev)], dev_err[np.argmin(dev)])
    else:
        lin, lin_err = math.nan, math.nan

    flat["signal"] = signal
    flat["signal_err"] = signal_err
    flat["noise"] = noise
    flat["noise_err"] = noise_err
    flat["used_gain"] = in_gain
    flat["used_linearity"] = in_lin
    flat["linearity_dev"] = lin_dev
    dark_rows = dark.copy()
    for col, fill in (("signal", 0.0), ("signal_err", 0.0), ("noise", 0.0), ("noise_err", 0.0),
                      ("used_gain", False), ("used_linearity", False), ("linearity_dev", np.nan)):
        dark_rows[col] = np.full(len(dark_rows), fill)
    table = vstack([dark_rows, flat], metadata_conflicts="silent")
    for col, unit in (("exposure_s", "s"), ("mean", "adu"), ("mean_err", "adu"), ("var", "adu2"),
                      ("var_err", "adu2"), ("signal", "adu"), ("signal_err", "adu"), ("noise", "adu2"),
                      ("noise_err", "adu2"), ("linearity_dev", "%")):
        table[col].unit = unit
    return PhotonTransfer(
        gain=K, gain_err=K_err, offset=float(s0), offset_err=s0_err, dark_var=float(sd2), dark_var_err=total_err,
        dark_noise=dark_noise, dark_noise_err=dark_noise_err, read_noise=read_noise,
        dark_mean=float(mu_d), dark_mean_err=float(mu_d_err),
        dark_current=dslope / K if np.isfinite(dslope) else math.nan,
        dark_current_err=math.hypot(dslope_err / K, dslope * K_err / K**2) if np.isfinite(dslope) else math.nan,
        saturation=sat, saturation_err=sat_err, full_well=full, full_well_err=full_err,
        linearity_error=lin, linearity_error_err=lin_err, levels=table)


def measure_ptc(manifest, *, progress=None, **kwargs) -> PhotonTransfer:
    """Photon transfer from a dataset folder: ``manifest.csv`` with columns ``file,kind,exposure_s``.

    ``kind`` is ``dark`` or ``flat``; every (kind, exposure) group needs at
    least two frames. Frames are read one exposure level at a time, so full
    sensor frames fit in memory. ``progress`` wraps the loop over levels
    (e.g. :func:`startrack.cli.common.progress`); ``kwargs`` go to
    :func:`photon_transfer`.
    """
    t = read_manifest(manifest, {"kind": str, "exposure_s": float})
    src = t.meta["manifest"]
    kinds = np.char.lower(np.asarray(t["kind"], str))
    bad = np.flatnonzero(~np.isin(kinds, ["dark", "flat"]))
    if bad.size:
        raise ValueError(f"{src}, line {bad[0] + 2}: kind must be 'dark' or 'flat', got {t['kind'][bad[0]]!r}")
    if np.any(np.asarray(t["exposure_s"]) < 0):
        raise ValueError(f"{src}: exposure_s must be >= 0")
    keys = sorted(set(zip(kinds, np.asarray(t["exposure_s"], float), strict=True)))
    for kind, exp in keys:
        n = int(np.sum((kinds == kind) & (np.asarray(t["exposure_s"]) == exp)))
        if n < 2:
            raise ValueError(f"{src}: the {kind} exposure {exp:g} s has {n} frame; photon transfer needs at "
                             f"least 2 per exposure (frame pairs)")
    if not any(k == "dark" for k, _ in keys):
        raise ValueError(f"{src}: no dark frames (kind 'dark')")
    n_flat = sum(k == "flat" for k, _ in keys)
    if n_flat < MIN_LEVELS:
        raise ValueError(f"{src}: too few flat exposure levels: {n_flat}; photon transfer needs at least "
                         f"{MIN_LEVELS}")
    rows = []
    shape = None
    it = keys if progress is None else progress(keys)
    for kind, exp in it:
        sel = (kinds == kind) & (np.asarray(t["exposure_s"]) == exp)
        paths = list(t["path"][sel])
        frames = load_frames(paths, shape=shape)
        if shape is None:
            shape = frames.shape[1:]
        rows.append({"kind": kind, "exposure_s": exp, **level_statistics(frames)})
    return photon_transfer(Table(rows=rows), **kwargs)


def plot_ptc(result: PhotonTransfer, path):
    """Photon transfer curve and linearity deviation, side by side (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lv = result.levels
    flat = lv[np.char.lower(np.asarray(lv["kind"], str)) == "flat"]
    used = np.asarray(flat["used_gain"], bool)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
    x = np.asarray(flat["signal"])
    ax[0].errorbar(x[used], flat["noise"][used], flat["noise_err"][used], fmt="o", ms=4, label="fitted")
    ax[0].errorbar(x[~used], flat["noise"][~used], flat["noise_err"][~used], fmt="o", ms=4, mfc="none",
                   label="not fitted")
    xx = np.linspace(0, x.max(), 50)
    ax[0].plot(xx, result.gain * xx, "k-", lw=1, label=f"K = {result.gain:.4f} DN/e-")
    if result.saturated:
        ax[0].axvline(result.saturation - result.dark_mean, color="r", ls=":", label="saturation")
    ax[0].set_xlabel("mean signal mu_y - mu_dark (DN)")
    ax[0].set_ylabel("temporal variance s2_y - s2_dark (DN^2)")
    ax[0].set_title("photon transfer curve")
    ax[0].legend()
    lin = np.asarray(flat["used_linearity"], bool)
    ax[1].plot(flat["exposure_s"], flat["linearity_dev"], "o-", ms=4, color="0.6")
    ax[1].plot(np.asarray(flat["exposure_s"])[lin], np.asarray(flat["linearity_dev"])[lin], "o", ms=5)
    ax[1].axhline(0, color="k", lw=0.8)
    if lin.any():  # zoom on the fitted range: the saturated levels fall far off the scale
        span = 3.0 * np.nanmax(np.abs(np.asarray(flat["linearity_dev"])[lin])) + 0.05
        ax[1].set_ylim(-span, span)
    ax[1].set_xlabel("exposure time (s)")
    ax[1].set_ylabel("deviation from linear (%)")
    ax[1].set_title(f"linearity error {result.linearity_error:.3f} %")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
