"""Summaries and figures of the core's results: an ePSF, a sensor design.

The figures need matplotlib (the ``plot`` extra); it is imported inside the
functions, on the Agg back-end, so that the rest of startrack runs without it.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from .design import REGIONS, Design
from .psf import EPSF, GaussianPSF

__all__ = ["epsf_summary", "epsf_profiles", "plot_epsf", "plot_design", "plot_radius"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def epsf_summary(epsf: EPSF) -> dict:
    """An ePSF's shape and build record as ``{label: formatted value}``.

    Grid, flux (sum / oversampling^2, 1 for a normalised ePSF), centroid,
    the pixel fraction of a centred star, the equivalent Gaussian radius and,
    from :func:`startrack.build_epsf`'s record, the star images used, builds,
    residual chi^2 per sample and the fraction of samples clipped.
    """
    os_ = epsf.oversampling
    g = epsf.data
    q = g.shape[0]
    u = (np.arange(q) - (q - 1) / 2) / os_
    s = g.sum()
    return {
        "grid": f"{g.shape[1]} x {g.shape[0]} nodes, {1 / os_:g} px apart",
        "flux (sum / oversampling^2)": f"{s / os_ ** 2:.4f}",
        "centroid (px)": f"({(g.sum(axis=0) * u).sum() / s:+.4f}, {(g.sum(axis=1) * u).sum() / s:+.4f})",
        "peak pixel fraction (star centred)": f"{float(epsf.evaluate(0.0, 0.0)):.4f}",
        "equivalent Gaussian radius (px)": f"{epsf.equivalent_radius():.4f}",
        "star images used": str(epsf.meta.get("n_stars", "?")),
        "builds / converged": f"{epsf.meta.get('iterations', '?')} / {epsf.meta.get('converged', '?')}",
        "residual chi2 per sample (1 = Poisson)": f"{epsf.meta.get('chi2', float('nan')):.3f}",
        "samples clipped": f"{100 * epsf.meta.get('clipped', float('nan')):.1f} %",
    }


def epsf_profiles(epsf: EPSF) -> Table:
    """Cuts through an ePSF's centre: ``offset`` (px, 8 samples per grid node), ``epsf_x``, ``epsf_y``
    (fraction of the flux in a pixel at that offset from the star)."""
    half = (epsf.data.shape[0] - 1) / (2 * epsf.oversampling)
    d = np.linspace(-half, half, 8 * epsf.data.shape[0] + 1)
    return Table({"offset": d, "epsf_x": epsf.evaluate(d, 0.0), "epsf_y": epsf.evaluate(0.0, d)})


def plot_epsf(epsf: EPSF, path):
    """The ePSF grid (log scale), its profiles beside the equivalent Gaussian, and its summary, to ``path``."""
    plt = _pyplot()
    info = epsf_summary(epsf)
    prof = epsf_profiles(epsf)
    d = np.asarray(prof["offset"])
    half = (epsf.data.shape[0] - 1) / (2 * epsf.oversampling)
    fig, ax = plt.subplots(1, 3, figsize=(14, 4.4))
    ext = [-half - 0.5 / epsf.oversampling, half + 0.5 / epsf.oversampling] * 2
    im = ax[0].imshow(np.log10(np.maximum(epsf.data / epsf.data.max(), 1e-5)), origin="lower", extent=ext,
                      cmap="magma")
    fig.colorbar(im, ax=ax[0], label="log10(ePSF / peak)")
    ax[0].set_xlabel("dx = pixel centre - star (px)")
    ax[0].set_ylabel("dy (px)")
    ax[0].set_title("ePSF grid")
    ref = GaussianPSF(epsf.equivalent_radius())
    ax[1].plot(d, prof["epsf_x"], label="ePSF along x")
    ax[1].plot(d, prof["epsf_y"], label="ePSF along y")
    ax[1].plot(d, ref.render(-d, np.zeros_like(d), np.zeros(d.size, int), np.zeros(d.size, int), (1, 1))[0][:, 0, 0],
               "k:", label=f"Gaussian r = {ref.sigma_x:.3f} px")
    ax[1].set_xlabel("offset (px)")
    ax[1].set_ylabel("fraction of the flux in the pixel")
    ax[1].legend()
    ax[1].set_title("profiles through the centre")
    ax[2].axis("off")
    ax[2].text(0.0, 1.0, "\n".join(f"{k}: {v}" for k, v in info.items()), va="top", family="monospace",
               fontsize=8.5, transform=ax[2].transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_design(design: Design, path):
    """PL_x and PL_y over the pixel, the low/medium/high-error regions and PL against radius, to ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(1, 4, figsize=(19, 4.4))
    n = int(round(np.sqrt(len(design.pmap))))
    ext = [-0.5, 0.5, -0.5, 0.5]
    for a, col in zip(ax[:2], ("pl_x", "pl_y"), strict=True):
        img = np.asarray(design.pmap[col]).reshape(n, n)
        im = a.imshow(np.log10(img), origin="lower", extent=ext, cmap="viridis")
        fig.colorbar(im, ax=a, label=f"log10 {col} (px)")
        a.set_title(f"{col.upper().replace('_', ' ')} over the pixel")
        a.set_xlabel("x from the pixel centre (px)")
        a.set_ylabel("y (px)")
    level = np.array([REGIONS.index(r) for r in design.pmap["region"]]).reshape(n, n)
    cmap = plt.get_cmap("RdYlGn_r", 3)
    ax[2].imshow(level, origin="lower", extent=ext, cmap=cmap, vmin=-0.5, vmax=2.5)
    for k, row in enumerate(design.regions):
        ax[2].plot([], [], "s", color=cmap(k), label=f"{row['region']} {100 * row['area_fraction']:.0f} %, "
                                                    f"{row['pl_mean']:.4f} px")
    ax[2].legend(loc="upper right", fontsize=8)
    ax[2].set_title("regions of low / medium / high error")
    ax[2].set_xlabel("x from the pixel centre (px)")
    plot_radius(ax[3], [design.curve], mark=design.radius, diffraction=design.diffraction)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_radius(ax, curves, mark=None, diffraction=None):
    """Draw RMS and best PL against radius with the closed-form optimum (the small-PSF paper's Fig. 3a) on ``ax``.

    ``curves`` are :func:`startrack.design.pl_versus_radius` tables (one per
    noise level); ``mark`` draws a radius (px), ``diffraction`` a
    :class:`~startrack.design.Design`'s ``diffraction`` shades the radii
    below DL/3.
    """
    for c, ls in zip(curves, ("-", "--", ":", "-."), strict=False):  # up to four noise levels
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
