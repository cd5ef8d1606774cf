"""Camera intrinsics from a turntable: focal length, principal point, distortion and mounting alignment.

A collimator's star is imaged at a grid of turntable angles; its direction
in the camera frame is ``d = M T(az, el)^T s``, with ``s`` the collimator
direction, ``T = R_y(az) R_x(el)`` the turntable's orientation (azimuth outer
axis, elevation inner) and ``M`` the fixed rotation from the turntable
platform to the camera (the mounting, three angles). The camera
(:class:`startrack.sky.camera.Camera`: pinhole, OpenCV's Brown distortion
``k1 k2 p1 p2 k3``) projects ``d`` to a pixel. :func:`fit_intrinsics` finds
focal length, principal point, the chosen distortion terms and ``M`` by
least squares (scipy) on the measured spot centroids, with the covariance
of every parameter and the residual map.

What the data can and cannot pin down: a tilt of the mounting moves every
spot by about ``f * angle``, like a shift of the principal point; only the
perspective (``tan``) and radial-distortion terms, which grow as the square
of the field angle, tell the two apart. So the principal point is the least
certain number here: over a +-5.5 deg grid of N points its standard
uncertainty is about ``660 sigma / sqrt(N)`` for centroid noise sigma (0.32 px
for 0.01 px on 21 x 21 points; measured in benchmarks/bench_calib.py), while
the focal length is good to ~5e-6 relative. The covariance reported says
how well each parameter is determined.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from ..sky.camera import Camera

__all__ = ["turntable_directions", "fit_intrinsics", "Intrinsics", "DISTORTION_TERMS", "plot_intrinsics"]

#: OpenCV's distortion coefficients, in its order.
DISTORTION_TERMS = ("k1", "k2", "p1", "p2", "k3")


def turntable_directions(azimuth_deg, elevation_deg):
    """Direction of the collimator in the turntable platform frame for each (azimuth, elevation), (n, 3).

    The platform's orientation is ``R_y(az) R_x(el)`` (azimuth about the
    vertical outer axis, elevation about the inner horizontal axis) and the
    collimator points along the base frame's z axis at zero angles.
    """
    a = np.radians(np.asarray(azimuth_deg, float)).ravel()
    e = np.radians(np.asarray(elevation_deg, float)).ravel()
    return Rotation.from_euler("YX", np.column_stack([a, e])).inv().apply([0.0, 0.0, 1.0])


@dataclass
class Intrinsics:
    """Result of :func:`fit_intrinsics`.

    Attributes
    ----------
    camera : Camera
        Focal length, principal point, distortion (and the pixel pitch given).
    mounting : scipy.spatial.transform.Rotation
        Turntable platform -> camera rotation.
    params : dict
        Fitted parameter values: ``focal_length_px``, ``cx``, ``cy``, the free
        distortion terms and the mounting rotation vector ``mount_x, mount_y,
        mount_z`` (degrees).
    errors : dict
        Standard uncertainties of ``params`` from the covariance (scaled by the
        reduced chi-square when centroid errors were given).
    covariance : ndarray
        Covariance of the fitted parameters, in the order of ``params``.
    residuals : Table
        Per point: ``azimuth_deg, elevation_deg, x, y`` (measured), ``x_fit,
        y_fit`` and ``dx, dy`` (measured - fitted, px).
    rms : float
        Residual RMS per axis, px.
    """

    camera: Camera
    mounting: Rotation
    params: dict
    errors: dict
    covariance: np.ndarray = field(repr=False)
    residuals: Table = field(repr=False)
    rms: float = 0.0

    @property
    def focal_length_mm(self):
        return self.camera.focal_length_mm

    def summary(self) -> str:
        p, e = self.params, self.errors
        lines = [f"focal length      {p['focal_length_px']:.4f} +- {e['focal_length_px']:.4f} px"]
        if self.camera.pixel_pitch_um is not None:
            s = self.camera.pixel_pitch_um / 1000.0
            lines[0] += f"  ({p['focal_length_px'] * s:.6f} +- {e['focal_length_px'] * s:.6f} mm)"
        lines.append(f"principal point   ({p['cx']:.4f} +- {e['cx']:.4f}, {p['cy']:.4f} +- {e['cy']:.4f}) px")
        for k in DISTORTION_TERMS:
            if k in p:
                lines.append(f"{k:<17} {p[k]:.6g} +- {e[k]:.2g}")
        lines.append("mounting          rotation vector (" + ", ".join(
            f"{p[k]:.5f} +- {e[k]:.5f}" for k in ("mount_x", "mount_y", "mount_z")) + ") deg")
        lines.append(f"residuals         {self.rms:.4f} px rms per axis over {len(self.residuals)} points")
        return "\n".join(lines)

    def to_toml(self) -> str:
        """The ``[camera]`` table, preceded by comment lines with the uncertainties and the mounting."""
        head = "\n".join("# " + line for line in self.summary().splitlines())
        return "# turntable intrinsics (startrack calib intrinsics)\n" + head + "\n" + self.camera.to_toml()


def fit_intrinsics(azimuth_deg, elevation_deg, x, y, nominal: Camera, *, x_err=None, y_err=None,
                   distortion=("k1", "k2", "p1", "p2")) -> Intrinsics:
    """Least-squares camera intrinsics and mounting from spot centroids over turntable angles.

    Parameters
    ----------
    azimuth_deg, elevation_deg : array
        Turntable angles of each spot (degrees).
    x, y : array
        Measured spot centroids (px), e.g. :func:`startrack.localize` on the
        mean frame of each turntable position.
    nominal : Camera
        Starting point: the design focal length, image size and pixel pitch
        (principal point default the image centre, no distortion).
    x_err, y_err : array, optional
        Centroid standard errors (px), e.g. the CRLB: weights, and the
        covariance is then scaled by the reduced chi-square.
    distortion : sequence of str
        Distortion terms to fit, a subset of ``("k1", "k2", "p1", "p2", "k3")``;
        the others are held at the nominal camera's values (0 by default).
        ``k3`` is left out by default: over a field of ~10 deg its r^6 term is
        below the centroid noise and only correlates with ``k1``, ``k2`` and
        the focal length (OpenCV's advice for narrow fields).

    Returns
    -------
    Intrinsics
    """
    az = np.asarray(azimuth_deg, float).ravel()
    el = np.asarray(elevation_deg, float).ravel()
    xy = np.column_stack([np.asarray(x, float).ravel(), np.asarray(y, float).ravel()])
    n = len(az)
    if not (el.size == n and len(xy) == n):
        raise ValueError(f"azimuth_deg, elevation_deg, x and y need the same length, got {n}, {el.size}, {len(xy)}")
    ok = np.all(np.isfinite(xy), axis=1) & np.isfinite(az) & np.isfinite(el)
    terms = tuple(distortion)
    bad = [t for t in terms if t not in DISTORTION_TERMS]
    if bad:
        raise ValueError(f"distortion terms must be among {DISTORTION_TERMS}, got {bad}")
    free_d = [DISTORTION_TERMS.index(t) for t in terms]
    n_par = 3 + len(free_d) + 3
    if ok.sum() * 2 < n_par + 4:
        raise ValueError(f"too few spot centroids: {int(ok.sum())}; fitting {n_par} parameters needs at least "
                         f"{(n_par + 5) // 2}")
    if np.ptp(az[ok]) <= 0 or np.ptp(el[ok]) <= 0:
        raise ValueError("the turntable angles must vary in both azimuth and elevation (a 2-D grid)")
    az, el, xy = az[ok], el[ok], xy[ok]
    sx = np.ones(len(xy)) if x_err is None else np.asarray(x_err, float).ravel()[ok]
    sy = np.ones(len(xy)) if y_err is None else np.asarray(y_err, float).ravel()[ok]
    if np.any(~(sx > 0)) or np.any(~(sy > 0)):
        raise ValueError("x_err and y_err must be positive")
    p = turntable_directions(az, el)

    # Start: the mounting that best maps the platform directions onto the nominal camera's rays.
    rays = nominal.pixel_to_vector(xy[:, 0], xy[:, 1])
    mount0, _ = Rotation.align_vectors(rays, p)
    base_d = nominal.dist_coeffs.copy()
    theta0 = np.r_[nominal.focal_length_px, nominal.principal_point, base_d[free_d], mount0.as_rotvec()]

    def camera_of(theta):
        d = base_d.copy()
        d[free_d] = theta[3:3 + len(free_d)]
        return Camera(width=nominal.width, height=nominal.height, focal_length_px=theta[0],
                      principal_point=(theta[1], theta[2]), distortion=tuple(d),
                      pixel_pitch_um=nominal.pixel_pitch_um)

    def project(theta):
        cam = camera_of(theta)
        mount = Rotation.from_rotvec(theta[-3:])
        return np.column_stack(cam.vector_to_pixel(mount.apply(p)))

    def resid(theta):
        r = project(theta) - xy
        return np.concatenate([r[:, 0] / sx, r[:, 1] / sy])

    # Distortion coefficients are O(0.1) while f is O(1e3): scale the steps accordingly.
    scale = np.r_[1.0, 1.0, 1.0, np.full(len(free_d), 1e-3), np.full(3, 1e-4)]
    sol = least_squares(resid, theta0, x_scale=scale, method="lm", xtol=1e-15, ftol=1e-15, max_nfev=2000)
    theta = sol.x
    J = sol.jac
    dof = max(2 * len(xy) - len(theta), 1)
    chi2 = float(np.sum(sol.fun**2)) / dof
    try:
        cov = np.linalg.inv(J.T @ J) * chi2
    except np.linalg.LinAlgError:
        cov = np.full((len(theta), len(theta)), np.nan)
    names = ["focal_length_px", "cx", "cy", *terms, "mount_x", "mount_y", "mount_z"]
    values = theta.copy()
    errs = np.sqrt(np.abs(np.diag(cov)))
    values[-3:] = np.degrees(values[-3:])
    errs[-3:] = np.degrees(errs[-3:])
    fitted = project(theta)
    d = xy - fitted
    res = Table({"azimuth_deg": az, "elevation_deg": el, "x": xy[:, 0], "y": xy[:, 1], "x_fit": fitted[:, 0],
                 "y_fit": fitted[:, 1], "dx": d[:, 0], "dy": d[:, 1]})
    for col in ("x", "y", "x_fit", "y_fit", "dx", "dy"):
        res[col].unit = "pix"
    rms = float(np.sqrt(np.mean(d**2)))
    res.meta.update(rms=rms, chi2_reduced=chi2, converged=bool(sol.success), n_points=len(xy))
    return Intrinsics(camera=camera_of(theta), mounting=Rotation.from_rotvec(theta[-3:]),
                      params=dict(zip(names, map(float, values), strict=True)),
                      errors=dict(zip(names, map(float, errs), strict=True)),
                      covariance=cov, residuals=res, rms=rms)


def plot_intrinsics(result: Intrinsics, path):
    """Residual map: measured - fitted centroid as arrows over the image (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = result.residuals
    cam = result.camera
    fig, ax = plt.subplots(1, 2, figsize=(12, 5.2), gridspec_kw={"width_ratios": [1.25, 1]})
    d = np.hypot(r["dx"], r["dy"])
    scale = 0.1 * max(cam.width, cam.height) / max(float(np.percentile(d, 95)), 1e-9)
    q = ax[0].quiver(r["x"], r["y"], np.asarray(r["dx"]) * scale, np.asarray(r["dy"]) * scale, d, angles="xy",
                     scale_units="xy", scale=1, cmap="viridis")
    fig.colorbar(q, ax=ax[0], label="|residual| (px)")
    ax[0].plot(*cam.principal_point, "r+", ms=12)
    ax[0].set_xlim(-0.5, cam.width - 0.5)
    ax[0].set_ylim(cam.height - 0.5, -0.5)
    ax[0].set_aspect("equal")
    ax[0].set_title(f"residual map (arrows x{scale:.0f}); + principal point")
    ax[1].hist(np.r_[r["dx"], r["dy"]], bins=40, color="0.5")
    ax[1].set_xlabel("residual (px)")
    ax[1].set_title(f"{result.rms:.4f} px rms per axis")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
