"""Attitude from matched star directions: weighted Wahba solution, covariance, angles, WCS.

The attitude is the rotation matrix ``R`` that takes a direction's ICRS
components to its camera-frame components, ``v_cam = R v_icrs`` (camera x
right, y down, z along the boresight). Its rows are the camera axes in ICRS.

Wahba's problem ``min sum_i w_i |b_i - R r_i|^2`` is solved by the SVD of the
attitude profile matrix ``B = sum_i w_i b_i r_i^T`` (Markley 1988), with weights
``w_i = 1/sigma_i^2`` from each star's Cramér–Rao bound. The covariance of
the small rotation error (rad^2, camera frame) is the QUEST measurement
model's ``P = [sum_i (I - b_i b_i^T) / sigma_i^2]^-1`` (Shuster & Oh 1981).
The SVD runs in a numba kernel because it sits inside the star
identification's hot loops, where scipy's ``align_vectors`` costs ~0.1 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba as nb
import numpy as np

from .catalog import radec_to_vector, vector_to_radec

__all__ = ["Attitude", "solve_attitude", "wahba", "ARCSEC"]

ARCSEC = math.radians(1.0 / 3600.0)


@nb.njit(cache=True)
def wahba(obs, ref, weight, rot):
    """Weighted SVD solution of Wahba's problem into ``rot`` (3x3); returns the covariance (3x3, rad^2).

    ``obs`` (n, 3) camera-frame unit vectors, ``ref`` (n, 3) ICRS unit
    vectors, ``weight`` (n,) = 1/sigma^2 (rad^-2). The covariance is that of
    the small rotation vector (camera frame) under QUEST's measurement model;
    it is NaN when fewer than two distinct directions make it singular.
    """
    n = obs.shape[0]
    B = np.zeros((3, 3))
    F = np.zeros((3, 3))
    for i in range(n):
        w = weight[i]
        for a in range(3):
            for c in range(3):
                B[a, c] += w * obs[i, a] * ref[i, c]
                F[a, c] -= w * obs[i, a] * obs[i, c]
            F[a, a] += w
    U, _, Vt = np.linalg.svd(B)
    d = np.linalg.det(U) * np.linalg.det(Vt)
    for a in range(3):
        for c in range(3):
            rot[a, c] = U[a, 0] * Vt[0, c] + U[a, 1] * Vt[1, c] + d * U[a, 2] * Vt[2, c]
    det = (F[0, 0] * (F[1, 1] * F[2, 2] - F[1, 2] * F[2, 1]) - F[0, 1] * (F[1, 0] * F[2, 2] - F[1, 2] * F[2, 0])
           + F[0, 2] * (F[1, 0] * F[2, 1] - F[1, 1] * F[2, 0]))
    scale = (F[0, 0] + F[1, 1] + F[2, 2]) ** 3
    if not abs(det) > 1e-12 * scale:
        return np.full((3, 3), np.nan)
    return np.linalg.inv(F)


@dataclass(frozen=True)
class Attitude:
    """Orientation of the camera: ICRS -> camera rotation with its covariance.

    Parameters
    ----------
    matrix : (3, 3) array
        ``v_cam = matrix @ v_icrs``.
    covariance : (3, 3) array, optional
        Covariance (rad^2) of the small rotation error about the camera x, y
        (cross-boresight) and z (roll) axes.

    Attributes
    ----------
    ra, dec : float
        Boresight (camera +z) right ascension and declination in degrees.
    roll : float
        Degrees in [0, 360): 0 when celestial north is image-up (-y) and east
        image-left (-x); it is the position angle of north measured from
        image-up towards image-left, the sense of tetra3's and cedar-solve's
        ``Roll``.
    """

    matrix: np.ndarray
    covariance: np.ndarray = field(default_factory=lambda: np.full((3, 3), np.nan))

    @classmethod
    def from_radec_roll(cls, ra, dec, roll, covariance=None) -> Attitude:
        """The attitude whose boresight is at (``ra``, ``dec``) with ``roll`` (all degrees)."""
        a, d, r = (math.radians(float(v)) for v in (ra, dec, roll))
        b = radec_to_vector(a, d)
        east = np.array([-math.sin(a), math.cos(a), 0.0])
        north = np.cross(b, east)
        up = math.cos(r) * north - math.sin(r) * east
        left = math.cos(r) * east + math.sin(r) * north
        m = np.array([-left, -up, b])
        return cls(m, np.full((3, 3), np.nan) if covariance is None else np.asarray(covariance, float))

    @classmethod
    def from_quaternion(cls, quat, covariance=None) -> Attitude:
        """From a scalar-last quaternion (scipy's order) of the ICRS -> camera rotation."""
        from scipy.spatial.transform import Rotation

        m = Rotation.from_quat(np.asarray(quat, float)).as_matrix()
        return cls(m, np.full((3, 3), np.nan) if covariance is None else np.asarray(covariance, float))

    @property
    def boresight(self) -> np.ndarray:
        """Unit vector of the camera +z axis in ICRS."""
        return self.matrix[2]

    @property
    def ra(self) -> float:
        return float(np.degrees(vector_to_radec(self.matrix[2])[0]))

    @property
    def dec(self) -> float:
        return float(np.degrees(vector_to_radec(self.matrix[2])[1]))

    @property
    def roll(self) -> float:
        b = self.matrix[2]
        ra = math.atan2(b[1], b[0])
        east = np.array([-math.sin(ra), math.cos(ra), 0.0])
        north = np.cross(b, east)
        up, left = -self.matrix[1], -self.matrix[0]
        return math.degrees(math.atan2(float(left @ north), float(up @ north))) % 360.0

    @property
    def quaternion(self) -> np.ndarray:
        """Scalar-last quaternion (x, y, z, w) of the ICRS -> camera rotation, w >= 0 (scipy's order)."""
        from scipy.spatial.transform import Rotation

        q = Rotation.from_matrix(self.matrix).as_quat()
        return -q if q[3] < 0 else q

    @property
    def sigma_cross_arcsec(self) -> float:
        """RMS of the two cross-boresight 1-sigma errors (arcsec)."""
        return float(math.sqrt(0.5 * (self.covariance[0, 0] + self.covariance[1, 1])) / ARCSEC)

    @property
    def sigma_roll_arcsec(self) -> float:
        """1-sigma error of the rotation about the boresight (arcsec)."""
        return float(math.sqrt(self.covariance[2, 2]) / ARCSEC)

    def to_camera(self, icrs_vectors) -> np.ndarray:
        """ICRS unit vectors (n, 3) -> camera frame."""
        return np.asarray(icrs_vectors, float) @ self.matrix.T

    def to_icrs(self, camera_vectors) -> np.ndarray:
        """Camera-frame unit vectors (n, 3) -> ICRS."""
        return np.asarray(camera_vectors, float) @ self.matrix

    def error(self, truth: Attitude) -> np.ndarray:
        """Small rotation vector (rad, camera frame) taking ``truth`` to this attitude."""
        d = self.matrix @ truth.matrix.T
        return 0.5 * np.array([d[1, 2] - d[2, 1], d[2, 0] - d[0, 2], d[0, 1] - d[1, 0]])

    def residuals(self, camera_vectors, icrs_vectors) -> np.ndarray:
        """Angle (arcsec) between each observed direction and its catalog star rotated into the camera."""
        pred = self.to_camera(icrs_vectors)
        obs = np.asarray(camera_vectors, float)
        return np.arctan2(np.linalg.norm(np.cross(obs, pred), axis=1), np.sum(obs * pred, axis=1)) / ARCSEC

    def wcs(self, camera, sip_order=4):
        """FITS WCS (astropy) mapping the camera's pixels to ICRS: TAN, with SIP when it has distortion.

        ``CRPIX`` is the principal point (+1 for FITS), ``CRVAL`` the
        boresight; for a pinhole camera the gnomonic projection about the
        boresight *is* the camera's projection, so TAN is exact. Distortion
        becomes SIP polynomials of ``sip_order`` fitted on a pixel grid
        (forward A/B and inverse AP/BP).
        """
        from astropy.wcs import WCS, Sip

        b = self.matrix[2]
        ra = math.atan2(b[1], b[0])
        east = np.array([-math.sin(ra), math.cos(ra), 0.0])
        north = np.cross(b, east)
        f = camera.focal_length_px
        cd = np.degrees(np.array([[self.matrix[0] @ east, self.matrix[1] @ east],
                                  [self.matrix[0] @ north, self.matrix[1] @ north]])) / f
        w = WCS(naxis=2)
        w.wcs.crpix = [camera.principal_point[0] + 1.0, camera.principal_point[1] + 1.0]
        w.wcs.crval = [self.ra, self.dec]
        w.wcs.cd = cd
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.cunit = ["deg", "deg"]
        w.wcs.radesys = "ICRS"
        w.pixel_shape = (camera.width, camera.height)
        if camera.distortion is not None:
            a, bb, ap, bp = _fit_sip(camera, int(sip_order))
            w.sip = Sip(a, bb, ap, bp, w.wcs.crpix)
            w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        w.wcs.set()
        return w


def _fit_sip(camera, order):
    """SIP coefficients (A, B, AP, BP) of the camera's distortion by least squares on a 41x41 pixel grid."""
    cx, cy = camera.principal_point
    xs, ys = np.meshgrid(np.linspace(-0.5, camera.width - 0.5, 41), np.linspace(-0.5, camera.height - 0.5, 41))
    xs, ys = xs.ravel(), ys.ravel()
    u, v = camera.normalized(xs, ys)
    f = camera.focal_length_px
    du, dv = xs - cx, ys - cy  # distorted pixel offsets
    iu, iv = f * u, f * v  # ideal (undistorted) pixel offsets
    terms = [(p, q) for p in range(order + 1) for q in range(order + 1 - p) if p + q >= 2]

    def design(x, y):
        s = max(camera.width, camera.height)  # scale for conditioning
        return np.column_stack([(x / s) ** p * (y / s) ** q for p, q in terms]), s

    out = []
    for (x, y, tx, ty) in ((du, dv, iu - du, iv - dv), (iu, iv, du - iu, dv - iv)):
        m, s = design(x, y)
        ca = np.linalg.lstsq(m, tx, rcond=None)[0]
        cb = np.linalg.lstsq(m, ty, rcond=None)[0]
        A = np.zeros((order + 1, order + 1))
        B = np.zeros((order + 1, order + 1))
        for (p, q), va, vb in zip(terms, ca, cb, strict=True):
            A[p, q] = va / s ** (p + q)
            B[p, q] = vb / s ** (p + q)
        out += [A, B]
    return out[0], out[1], out[2], out[3]


def solve_attitude(camera_vectors, catalog_vectors, sigma=None) -> Attitude:
    """Weighted Wahba solution for matched directions, with its covariance.

    Parameters
    ----------
    camera_vectors : (n, 3) array
        Observed unit vectors in the camera frame (from :class:`~startrack.Camera`).
    catalog_vectors : (n, 3) array
        The matched stars' unit vectors in ICRS (apparent at the frame time).
    sigma : float or (n,) array, optional
        Angular 1-sigma error of each observed direction (rad), e.g.
        :meth:`Camera.angular_sigma` of the CRLB; weights are ``1/sigma^2``.
        Without it all weights are 1 and the covariance is in units of the
        (unknown) per-star variance.

    Returns
    -------
    Attitude
    """
    obs = np.ascontiguousarray(camera_vectors, dtype=float)
    ref = np.ascontiguousarray(catalog_vectors, dtype=float)
    if obs.ndim != 2 or obs.shape[1] != 3 or obs.shape != ref.shape:
        raise ValueError(f"camera_vectors and catalog_vectors must both be (n, 3), got {obs.shape} and {ref.shape}")
    if len(obs) < 2:
        raise ValueError(f"an attitude needs at least 2 matched stars, got {len(obs)}")
    if sigma is None:
        w = np.ones(len(obs))
    else:
        s = np.broadcast_to(np.asarray(sigma, dtype=float), (len(obs),))
        if not np.all(np.isfinite(s) & (s > 0)):
            raise ValueError("sigma must be positive and finite for every star")
        w = 1.0 / s**2
    rot = np.empty((3, 3))
    cov = wahba(obs, ref, np.ascontiguousarray(w), rot)
    return Attitude(rot, cov)
