"""Camera model: pixel positions <-> unit vectors in the camera frame.

A pinhole camera with focal length ``f`` (px), principal point ``(cx, cy)``
(px) and, optionally, Brown radial/tangential distortion in OpenCV's order
``(k1, k2, p1, p2, k3)``; OpenCV does the (un)distortion. The camera frame has
x to the right of the image, y down the image and z out of the lens along the
optical axis, so a star at pixel ``(x, y)`` lies along ``(u, v, 1)`` with
``u = (x - cx)/f`` and ``v = (y - cy)/f`` (before distortion). Pixel centres
are at integer coordinates (the project's convention, and OpenCV's), so the
centre of a W-pixel-wide image is at ``x = (W - 1)/2``.

The camera is described by the ``[camera]`` table of a camera TOML file::

    [camera]
    focal_length_mm = 25.0
    pixel_pitch_um = 5.3
    width = 1024
    height = 1024
    principal_point = [511.5, 511.5]     # optional, px; default the image centre
    distortion = [k1, k2, p1, p2, k3]    # optional, OpenCV order
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..validate import as_float, as_int, toml_table

__all__ = ["Camera"]

# undistortPoints iterates a fixed-point map; the default 5 iterations leave
# ~1e-3 px errors at the corners of a strongly distorted lens.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-15)

_KEYS = {"focal_length_mm", "pixel_pitch_um", "focal_length_px", "width", "height", "principal_point",
         "distortion"}


def _as_xy(x, y):
    x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return x, y


@dataclass(frozen=True)
class Camera:
    """Pinhole camera with optional Brown distortion (OpenCV's model).

    Parameters
    ----------
    width, height : int
        Image size in pixels.
    focal_length_px : float
        Focal length in pixels (focal length / pixel pitch).
    principal_point : (float, float), optional
        Where the optical axis meets the image, (x, y) in px. Default the
        image centre ``((width - 1)/2, (height - 1)/2)``.
    distortion : sequence of 5 float, optional
        ``(k1, k2, p1, p2, k3)`` in OpenCV's order, on normalised coordinates.
        ``None`` (default) is an ideal pinhole.
    pixel_pitch_um : float, optional
        Pixel pitch in micrometres; only used to report the focal length in mm.

    Examples
    --------
    >>> cam = Camera.from_dict({"focal_length_mm": 25, "pixel_pitch_um": 5.3, "width": 1024, "height": 1024})
    >>> round(cam.focal_length_px, 2), round(cam.fov_deg[0], 3)
    (4716.98, 12.39)
    >>> v = cam.pixel_to_vector(511.5, 511.5)
    >>> v.round(12).tolist()
    [[0.0, 0.0, 1.0]]
    """

    width: int
    height: int
    focal_length_px: float
    principal_point: tuple | None = None
    distortion: tuple | None = None
    pixel_pitch_um: float | None = None

    def __post_init__(self):
        for name in ("width", "height"):
            object.__setattr__(self, name, as_int(getattr(self, name), name, minimum=1))
        object.__setattr__(self, "focal_length_px",
                           as_float(self.focal_length_px, "focal_length_px", positive=True))
        pp = self.principal_point
        if pp is None:
            pp = ((self.width - 1) / 2.0, (self.height - 1) / 2.0)
        try:
            pp = tuple(float(v) for v in pp)
        except (TypeError, ValueError):
            raise ValueError(f"principal_point must be [x, y] in pixels, got {self.principal_point!r}") from None
        if len(pp) != 2 or not all(math.isfinite(v) for v in pp):
            raise ValueError(f"principal_point must be [x, y] in pixels, got {self.principal_point!r}")
        object.__setattr__(self, "principal_point", pp)
        if self.distortion is not None:
            try:
                d = tuple(float(v) for v in self.distortion)
            except (TypeError, ValueError):
                raise ValueError(f"distortion must be [k1, k2, p1, p2, k3], got {self.distortion!r}") from None
            if len(d) != 5 or not all(math.isfinite(v) for v in d):
                raise ValueError(f"distortion must be 5 finite numbers [k1, k2, p1, p2, k3], got {self.distortion!r}")
            object.__setattr__(self, "distortion", None if not any(d) else d)
        if self.pixel_pitch_um is not None:
            object.__setattr__(self, "pixel_pitch_um", as_float(self.pixel_pitch_um, "pixel_pitch_um", positive=True))

    # -- construction ------------------------------------------------------
    @classmethod
    def from_toml(cls, path) -> Camera:
        """Load the ``[camera]`` table of a camera TOML file."""
        return cls.from_dict(toml_table(path, "camera", "focal_length_mm, pixel_pitch_um, width, height"),
                             source=str(path))

    @classmethod
    def from_dict(cls, table: dict, source: str = "camera table") -> Camera:
        """Build from a ``[camera]`` table: ``focal_length_mm`` and ``pixel_pitch_um`` (or
        ``focal_length_px``), ``width``, ``height``, optional ``principal_point`` and ``distortion``."""
        unknown = set(table) - _KEYS
        if unknown:
            raise ValueError(f"{source}: unknown [camera] key(s) {sorted(unknown)}; expected {sorted(_KEYS)}")
        for key in ("width", "height"):
            if key not in table:
                raise ValueError(f"{source}: [camera] needs '{key}' (pixels)")
        pitch = table.get("pixel_pitch_um")
        if "focal_length_px" in table:
            f_px = table["focal_length_px"]
        elif "focal_length_mm" in table and pitch is not None:
            f_px = (1000.0 * as_float(table["focal_length_mm"], "focal_length_mm", positive=True)
                    / as_float(pitch, "pixel_pitch_um", positive=True))
        else:
            raise ValueError(f"{source}: [camera] needs 'focal_length_mm' and 'pixel_pitch_um' (or 'focal_length_px')")
        try:
            return cls(width=table["width"], height=table["height"], focal_length_px=f_px,
                       principal_point=table.get("principal_point"), distortion=table.get("distortion"),
                       pixel_pitch_um=pitch)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def from_fov(cls, fov_deg, width, height, **kw) -> Camera:
        """An ideal camera whose full horizontal field of view (edge to edge of the image) is ``fov_deg``."""
        fov = as_float(fov_deg, "fov_deg", positive=True)
        if fov >= 180:
            raise ValueError(f"fov_deg must be below 180 degrees, got {fov}")
        return cls(width=width, height=height, focal_length_px=width / 2.0 / math.tan(math.radians(fov) / 2.0), **kw)

    def with_focal_length(self, focal_length_px) -> Camera:
        """The same camera with another focal length (px)."""
        return dataclasses.replace(self, focal_length_px=focal_length_px)

    def to_toml(self) -> str:
        """The ``[camera]`` table as TOML text."""
        lines = ["[camera]"]
        if self.pixel_pitch_um is not None:
            lines += [f"focal_length_mm = {self.focal_length_mm!r}", f"pixel_pitch_um = {self.pixel_pitch_um!r}"]
        else:
            lines.append(f"focal_length_px = {self.focal_length_px!r}")
        lines += [f"width = {self.width}", f"height = {self.height}",
                  f"principal_point = [{self.principal_point[0]!r}, {self.principal_point[1]!r}]"]
        if self.distortion is not None:
            lines.append("distortion = [" + ", ".join(repr(v) for v in self.distortion) + "]")
        return "\n".join(lines) + "\n"

    # -- derived quantities --------------------------------------------------
    @property
    def focal_length_mm(self) -> float | None:
        """Focal length in mm (None without a pixel pitch)."""
        if self.pixel_pitch_um is None:
            return None
        return self.focal_length_px * self.pixel_pitch_um / 1000.0

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix ``[[f, 0, cx], [0, f, cy], [0, 0, 1]]`` (OpenCV's ``cameraMatrix``)."""
        cx, cy = self.principal_point
        f = self.focal_length_px
        return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])

    @property
    def dist_coeffs(self) -> np.ndarray:
        """Distortion coefficients as OpenCV takes them (zeros for an ideal pinhole)."""
        return np.zeros(5) if self.distortion is None else np.array(self.distortion, dtype=float)

    @property
    def fov_deg(self) -> tuple:
        """Full field of view (horizontal, vertical, diagonal) in degrees, edge to edge of the image."""
        w, h = self.width, self.height
        edges = np.array([[-0.5, (h - 1) / 2], [w - 0.5, (h - 1) / 2], [(w - 1) / 2, -0.5], [(w - 1) / 2, h - 0.5],
                          [-0.5, -0.5], [w - 0.5, h - 0.5], [w - 0.5, -0.5], [-0.5, h - 0.5]])
        v = self.pixel_to_vector(edges[:, 0], edges[:, 1])
        ang = [math.degrees(math.acos(min(1.0, float(v[a] @ v[a + 1])))) for a in (0, 2, 4, 6)]
        return ang[0], ang[1], max(ang[2], ang[3])

    @property
    def pixel_scale_arcsec(self) -> float:
        """Angle subtended by one pixel at the principal point (arcsec)."""
        return math.degrees(1.0 / self.focal_length_px) * 3600.0

    # -- projections ---------------------------------------------------------
    def normalized(self, x, y):
        """Undistorted normalised coordinates ``(u, v)`` (tangent of the angle off axis) of pixels ``(x, y)``."""
        x, y = _as_xy(x, y)
        cx, cy = self.principal_point
        if self.distortion is None:
            return (x - cx) / self.focal_length_px, (y - cy) / self.focal_length_px
        pts = np.column_stack([x.ravel(), y.ravel()]).reshape(-1, 1, 2)
        uv = cv2.undistortPoints(pts, self.matrix, self.dist_coeffs, criteria=_UNDISTORT_CRITERIA).reshape(-1, 2)
        return uv[:, 0].reshape(x.shape), uv[:, 1].reshape(x.shape)

    def pixel_to_vector(self, x, y) -> np.ndarray:
        """Unit vectors (n, 3) in the camera frame towards pixels ``(x, y)`` (px, any shape, flattened)."""
        u, v = self.normalized(np.ravel(x), np.ravel(y))
        w = np.column_stack([u, v, np.ones_like(u)])
        return w / np.linalg.norm(w, axis=1, keepdims=True)

    def vector_to_pixel(self, vectors):
        """Pixel positions ``(x, y)`` of camera-frame directions (n, 3); NaN behind the camera (z <= 0)."""
        vec = np.asarray(vectors, dtype=float).reshape(-1, 3)
        z = vec[:, 2]
        front = z > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(front, vec[:, 0] / z, np.nan)
            v = np.where(front, vec[:, 1] / z, np.nan)
        return self.project_normalized(u, v)

    def project_normalized(self, u, v):
        """Pixels ``(x, y)`` of undistorted normalised coordinates ``(u, v)`` (distortion applied)."""
        u, v = _as_xy(u, v)
        cx, cy = self.principal_point
        f = self.focal_length_px
        if self.distortion is None:
            return cx + f * u, cy + f * v
        ok = np.isfinite(u) & np.isfinite(v)
        x = np.full(u.shape, np.nan)
        y = np.full(u.shape, np.nan)
        if ok.any():
            pts = np.column_stack([u[ok], v[ok], np.ones(int(ok.sum()))])
            xy, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), self.matrix, self.dist_coeffs)
            x[ok], y[ok] = xy[:, 0, 0], xy[:, 0, 1]
        return x, y

    def in_image(self, x, y, margin=0.0):
        """True where ``(x, y)`` lies on the image at least ``margin`` px inside its edges."""
        x, y = _as_xy(x, y)
        with np.errstate(invalid="ignore"):
            return ((x >= -0.5 + margin) & (x <= self.width - 0.5 - margin)
                    & (y >= -0.5 + margin) & (y <= self.height - 0.5 - margin))

    # -- uncertainty -----------------------------------------------------------
    def jacobian(self, x, y) -> np.ndarray:
        """Derivative of the unit vector with respect to the pixel position, shape (n, 3, 2) (1/px).

        Column 0 is d(vector)/dx, column 1 d(vector)/dy. Both lie in the plane
        perpendicular to the vector; with distortion the chain rule runs
        through the inverse of the 2x2 derivative of the distortion, which
        OpenCV's ``projectPoints`` gives as its Jacobian with respect to the
        translation.
        """
        u, v = self.normalized(np.ravel(x), np.ravel(y))
        n = u.size
        norm = np.sqrt(u * u + v * v + 1.0)
        vec = np.stack([u, v, np.ones(n)], axis=1) / norm[:, None]
        # (I - v v^T) / |w| restricted to its first two columns: d(unit vector) / d(u, v)
        jac = -vec[:, :, None] * vec[:, None, :2]
        jac[:, 0, 0] += 1.0
        jac[:, 1, 1] += 1.0
        jac /= norm[:, None, None]
        if self.distortion is None:
            return jac / self.focal_length_px
        pts = np.column_stack([u, v, np.ones(n)])
        _, dproj = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), self.matrix, self.dist_coeffs)
        # d pixel / d (point + t) at point (u, v, 1): its first two columns are d pixel / d (u, v).
        return jac @ np.linalg.inv(dproj[:, 3:5].reshape(n, 2, 2))

    def vector_covariance(self, x, y, x_err, y_err) -> np.ndarray:
        """Covariance (n, 3, 3) of each star's unit vector from its pixel sigmas (px; e.g. the CRLB)."""
        x, y = _as_xy(x, y)
        sx, sy = np.broadcast_arrays(np.ravel(np.asarray(x_err, float)), np.ravel(np.asarray(y_err, float)))
        jac = self.jacobian(x, y)
        cov_pix = np.zeros((jac.shape[0], 2, 2))
        cov_pix[:, 0, 0] = np.broadcast_to(sx, (jac.shape[0],)) ** 2
        cov_pix[:, 1, 1] = np.broadcast_to(sy, (jac.shape[0],)) ** 2
        return jac @ cov_pix @ np.transpose(jac, (0, 2, 1))

    def angular_sigma(self, x, y, x_err, y_err) -> np.ndarray:
        """Per-axis angular sigma (rad) of each star's direction: ``sqrt(trace(cov) / 2)``.

        This is the isotropic sigma of QUEST's measurement model (the error of
        a unit vector spreads over the two directions perpendicular to it).
        """
        jac = self.jacobian(x, y)
        col = np.einsum("nik,nik->nk", jac, jac)  # squared length of d(vector)/dx and d(vector)/dy
        sx = np.ravel(np.asarray(x_err, dtype=float))
        sy = np.ravel(np.asarray(y_err, dtype=float))
        return np.sqrt(0.5 * (sx * sx * col[:, 0] + sy * sy * col[:, 1]))
