"""Star identification: lost-in-space from centroids alone, tracking from a prior attitude, and the attitude.

:class:`StarIdentifier` holds what does not change from frame to frame (the
camera or the blind field-of-view range, the catalog, the pattern database
and the sky index); :meth:`StarIdentifier.identify` turns one frame's star
positions into a :class:`Solution`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from time import perf_counter_ns

import numpy as np

from ...flags import ID_MODES, SOLVED
from ..attitude import ARCSEC, Attitude
from ..camera import Camera
from ..catalog import Catalog, load_catalog, parse_time
from . import kernels as K
from .database import PatternDatabase, field_ladder, load_database

__all__ = ["StarIdentifier", "Solution"]

#: Epoch used for the star positions when a frame has no time (no aberration then: ~20 arcsec systematic).
DEFAULT_EPOCH = 2025.0


@dataclass
class Solution:
    """Result of identifying one frame's stars.

    Attributes
    ----------
    status : str
        ``"solved"`` or ``"no-solution"``.
    reason : str
        Why there is no solution (empty when solved).
    attitude : Attitude or None
        ICRS -> camera rotation with its covariance (QUEST model, CRLB weights).
    focal_length_px : float
        Focal length used (refined when the camera's is approximate or unknown).
    fov_deg : float
        Horizontal field of view at that focal length.
    match : (n,) int array
        Catalog index of each input star, -1 when unmatched (input order).
    hip : (n,) int array
        Hipparcos number of each input star's match, 0 when unmatched.
    residual_arcsec : (n,) array
        Angle between each matched star and its catalog star after the fit (NaN unmatched).
    n_matched : int
    rms_arcsec : float
        RMS residual of the matched stars.
    p_false : float
        Probability that the accepted match is false (Bonferroni-corrected over the candidates tried).
    mode : str
        ``"lost-in-space"`` or ``"tracking"``.
    time_ms : float
        Wall time of :meth:`StarIdentifier.identify` (centroids -> attitude).
    n_candidates, n_patterns : int
        Candidate attitudes verified and image patterns tried.
    """

    status: str
    reason: str = ""
    attitude: Attitude | None = None
    focal_length_px: float = math.nan
    fov_deg: float = math.nan
    match: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    hip: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    residual_arcsec: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_matched: int = 0
    rms_arcsec: float = math.nan
    p_false: float = math.nan
    mode: str = ""
    time_ms: float = math.nan
    n_candidates: int = 0
    n_patterns: int = 0

    @property
    def solved(self) -> bool:
        return self.status == "solved"


class StarIdentifier:
    """Identify stars and solve the attitude for one camera (or one blind field-of-view range).

    Parameters
    ----------
    camera : Camera
        The camera. Its focal length may be approximate: within
        ``focal_tolerance`` it is found and refined from the stars.
    focal_tolerance : float
        Relative uncertainty of the camera's focal length (default 0.05 =
        +-5 %); 0 keeps it fixed.
    fov_range : (float, float), optional
        Blind mode: the horizontal field of view is only known to lie in this
        range (deg); ``camera`` then gives the image size and principal point
        (see :meth:`blind`). The database spans the range in several scales.
    catalog : Catalog, optional
        Default: the bundled catalog to Hp 8, pairs closer than 2.5 px merged.
    mag_limit : float
        Faintest catalog stars used (default 8).
    per_field, spacing, eps : database parameters (see :func:`build_database`).
    n_query : int
        Brightest image stars whose 4-star patterns are searched (default 20).
    n_verify : int
        Brightest image stars a candidate is verified with (default 30).
    match_radius : float, optional
        Verification radius in px (default 0.5 % of the larger image side, at least 3 px).
    p_threshold : float
        Largest accepted probability of a false match (default 1e-6).
    track_radius : float
        Radius (px) within which tracking looks for each star around its
        predicted position (default 20 px).
    cache : bool or path
        Where the pattern database is cached (see :func:`load_database`).
    progress : callable, optional
        Receives messages while a database is built.

    Examples
    --------
    >>> ident = StarIdentifier(Camera.from_toml("camera.toml"))      # doctest: +SKIP
    >>> sol = ident.identify(stars["x"], stars["y"], sigma=stars["x_err"], flux=stars["flux"], time=t)  # doctest: +SKIP
    >>> sol.attitude.ra, sol.attitude.dec, sol.attitude.roll          # doctest: +SKIP
    """

    def __init__(self, camera: Camera, *, focal_tolerance=0.05, fov_range=None, catalog: Catalog | None = None,
                 mag_limit=8.0, per_field=8, spacing=0.35, eps=0.004, n_query=20, n_verify=30, match_radius=None,
                 p_threshold=1e-6, track_radius=20.0, max_candidates=2000, cache=True, progress=None):
        if not isinstance(camera, Camera):
            raise ValueError(f"camera must be a startrack.Camera, got {type(camera).__name__}")
        self.camera = camera
        w, h = camera.width, camera.height
        self.blind = fov_range is not None
        if self.blind:
            lo, hi = _fov_range(fov_range)
            self.f_min = w / 2.0 / math.tan(math.radians(hi) / 2.0)
            self.f_max = w / 2.0 / math.tan(math.radians(lo) / 2.0)
            # sweep the focal length so that no trial is off by more than ~7 %: edge ratios then stay within eps
            n = max(1, int(math.ceil(math.log(self.f_max / self.f_min) / math.log(1.15))))
            self.f_list = self.f_min * (self.f_max / self.f_min) ** ((np.arange(n) + 0.5) / n)
            short = [_short_side(w, h, f) for f in (self.f_max, self.f_min)]
            fields = field_ladder(*short)
            pix_angle = math.atan(1.0 / self.f_max)
        else:
            tol = float(focal_tolerance)
            if not 0 <= tol < 0.5:
                raise ValueError(f"focal_tolerance must be in [0, 0.5), got {focal_tolerance}")
            f0 = camera.focal_length_px
            self.f_min, self.f_max = f0 / (1 + tol), f0 * (1 + tol)
            self.f_list = np.array([f0])
            fields = [_short_side(w, h, f0)]
            pix_angle = math.atan(1.0 / f0)
        self.focal_tolerance = 0.0 if self.blind else float(focal_tolerance)
        self.fit_focal = self.blind or self.focal_tolerance > 0
        if catalog is None:
            catalog = load_catalog(mag_limit, merge_radius=2.5 * pix_angle)
        elif mag_limit < catalog.mag_limit:
            catalog = catalog.brighter(mag_limit)
        self.catalog = catalog
        self.database: PatternDatabase = load_database(catalog, fields, per_field=per_field, spacing=spacing,
                                                       eps=eps, cache=cache, progress=progress)
        self.n_query = int(n_query)
        self.n_verify = int(n_verify)
        self.match_radius = float(match_radius) if match_radius else max(3.0, 0.005 * max(w, h))
        self.log_threshold = math.log(float(p_threshold))
        self.p_threshold = float(p_threshold)
        self.track_radius = float(track_radius)
        self.max_candidates = int(max_candidates)
        cx, cy = camera.principal_point
        self.bounds = np.array([-0.5 - cx, w - 0.5 - cx, -0.5 - cy, h - 0.5 - cy])
        self._limit = min(len(catalog), 65535)
        cell = min(max(math.radians(_short_side(w, h, self.f_max)) / 6, math.radians(0.5)), math.radians(5.0))
        self._grid = K.build_sky_grid(catalog.propagate(DEFAULT_EPOCH), cell)
        self._buffer = np.empty((len(catalog), 3))
        # the kernels' argument bundles; the catalog directions are rewritten in place by catalog_vectors
        self._sky = K.sky_index(self._buffer, self._grid, self._limit)
        self._patterns = self.database.kernel_tables()
        self._settings = K.solver_settings(self.f_list, self.f_min, self.f_max, self.fit_focal, self.n_query,
                                           self.bounds, self.match_radius, self.n_verify, self.log_threshold,
                                           self.max_candidates, self.track_radius)
        self._key = self._last_time = ()
        self._scratch = np.empty(len(catalog), np.int64)  # kernel workspace: one identifier per thread
        self._eye = np.eye(3)
        self._hip = np.ascontiguousarray(catalog.hip, np.int64)

    @classmethod
    def blind(cls, width, height, fov_range, **kw) -> StarIdentifier:
        """An identifier for an uncalibrated camera: only the image size and a field-of-view range (deg)."""
        lo, hi = _fov_range(fov_range)
        cam = Camera.from_fov(math.sqrt(lo * hi), width, height)
        return cls(cam, fov_range=(lo, hi), **kw)

    def __repr__(self):
        mode = (f"blind {math.degrees(2 * math.atan(self.camera.width / 2 / self.f_max)):.3g}-"
                f"{math.degrees(2 * math.atan(self.camera.width / 2 / self.f_min)):.3g} deg") if self.blind \
            else f"f = {self.camera.focal_length_px:.1f} px +-{100 * self.focal_tolerance:g} %"
        return f"<StarIdentifier {self.camera.width}x{self.camera.height}, {mode}, {self.database!r}>"

    # -- catalog directions at the frame time ---------------------------------------------------------
    def catalog_vectors(self, time=None) -> np.ndarray:
        """Catalog directions used for a frame at ``time`` (apparent places; catalog epoch 2025.0 without one)."""
        if time is not None and time is self._last_time:
            return self._buffer
        key = None
        if time is not None:
            t = parse_time(time)
            key = round(float(t.jd1) * 1440 + float(t.jd2) * 1440)  # one computation per minute
        if key != self._key:
            # overwrite one buffer: the kernels then keep finding the catalog in memory they have touched
            self._buffer[:] = self.catalog.propagate(DEFAULT_EPOCH) if key is None else self.catalog.apparent(t)
            self._key = key
        self._last_time = time
        return self._buffer

    # -- identification ------------------------------------------------------------------------------------
    def identify(self, x, y, *, sigma=None, flux=None, time=None, prior: Attitude | None = None, rate=None,
                 dt=None, tracking=True) -> Solution:
        """Identify the stars at pixel positions (x, y) and solve the attitude.

        Parameters
        ----------
        x, y : array-like
            Star positions (px; pixel centres at integers), as measured (distorted).
        sigma : float or array-like, optional
            Per-axis position 1-sigma (px), e.g. the CRLB ``x_err``/``y_err``
            (a (2, n) array or a tuple of the two); default 0.1 px. Weights the
            attitude and sets its covariance.
        flux : array-like, optional
            Star brightness; patterns are formed from the brightest. Without
            it the input order is taken as brightest first.
        time : astropy Time or ISO string, optional
            Frame time: stars are placed at their apparent positions then.
        prior : Attitude or Solution, optional
            Tracking: the previous attitude (a Solution also carries its
            refined focal length); ``rate`` (rad/s, camera frame) and ``dt``
            (s) propagate it. Falls back to lost-in-space when the stars do
            not confirm it.
        tracking : bool
            Use ``prior`` when given (default True).
        """
        t0 = perf_counter_ns()
        x = np.asarray(x, dtype=float).ravel()
        y = np.asarray(y, dtype=float).ravel()
        n_in = len(x)
        if len(y) != n_in:
            raise ValueError(f"x and y must have the same length, got {n_in} and {len(y)}")
        sx, sy = _sigmas(sigma, n_in)
        if flux is not None:
            fl = np.asarray(flux, dtype=float).ravel()
            if len(fl) != n_in:
                raise ValueError(f"flux must have one value per star ({n_in}), got {len(fl)}")
        order = K.usable_by_brightness(x, y, sx, sy, x if flux is None else fl, flux is not None)
        n = len(order)
        if n < 3:
            return self._fail(n_in, t0, f"only {n} usable star(s); at least 3 are needed")
        cam = self.camera
        f0 = cam.focal_length_px
        prior_f = f0
        if isinstance(prior, Solution):
            prior, prior_f = prior.attitude, prior.focal_length_px
        use_prior = prior is not None and tracking
        if not use_prior and n < 4:
            return self._fail(n_in, t0, f"only {n} usable stars; lost-in-space needs at least 4")
        if cam.distortion is None:
            dx, dy, weight = K.pinhole_offsets(x, y, sx, sy, order, *cam.principal_point, f0)
        else:
            xs, ys, sxs, sys_ = x[order], y[order], sx[order], sy[order]
            u, v = cam.normalized(xs, ys)
            dx, dy = u * f0, v * f0
            weight = 1.0 / cam.angular_sigma(xs, ys, sxs, sys_) ** 2
        self.catalog_vectors(time)  # into self._sky
        rot = np.empty((3, 3))
        match = np.empty(n, np.int64)
        resid = np.empty(n)
        prior_m = _propagate(prior.matrix, rate, dt) if use_prior else self._eye
        status, mode, f, logp, ncand, npat, nm, rms, cov = K.identify_frame(
            dx, dy, weight, prior_f if use_prior else f0, use_prior, prior_m, self._patterns, self._sky,
            self._settings, rot, match, resid, self._scratch)
        mode = ID_MODES[mode]
        if status != SOLVED:
            sol = self._fail(n_in, t0, f"no pattern of the {min(n, self.n_query)} brightest stars matched the "
                                       f"catalog ({npat} patterns, {ncand} candidates rejected)")
            sol.mode, sol.n_candidates, sol.n_patterns = mode, int(ncand), int(npat)
            return sol
        if self.fit_focal and cam.distortion is not None and abs(f / f0 - 1) > 1e-9:
            # the offsets were undistorted at the nominal focal length: redo them at the refined one
            u, v = cam.with_focal_length(f).normalized(xs, ys)
            f, cov, nm, rms, _ = K.refine(rot, f, u * f, v * f, weight, n, self._sky, self.bounds, 2.0, 1.0, True, 2,
                                          max(2 * n, 200), match, resid, self._scratch)
        full, hip, res = K.per_input_star(order, match, resid / ARCSEC, n_in, self._hip)
        sol = Solution("solved", "", Attitude(rot, cov), f, math.degrees(2 * math.atan(cam.width / 2.0 / f)),
                       full, hip, res, int(nm), rms / ARCSEC, math.exp(logp), mode, 0.0, int(ncand), int(npat))
        sol.time_ms = (perf_counter_ns() - t0) / 1e6
        return sol

    def _fail(self, n_in, t0, reason):
        return Solution("no-solution", reason, match=np.full(n_in, -1), hip=np.zeros(n_in, np.int64),
                        residual_arcsec=np.full(n_in, np.nan), time_ms=(perf_counter_ns() - t0) / 1e6)


def _propagate(matrix, rate, dt):
    """Prior attitude moved by a constant body rate ``rate`` (rad/s, camera frame) over ``dt`` s."""
    m = np.asarray(matrix, dtype=float)
    if rate is None or dt is None:
        return m
    w = np.asarray(rate, dtype=float) * float(dt)
    ang = float(np.linalg.norm(w))
    if ang == 0:
        return m
    k = w / ang
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    # camera rotating by +w: a fixed star's camera coordinates turn by -w (Rodrigues)
    rot = np.eye(3) - math.sin(ang) * kx + (1 - math.cos(ang)) * kx @ kx
    return rot @ m


def _sigmas(sigma, n):
    """Per-axis sigmas (two arrays of n) from None, a number, n values, a (2, n) array or a pair."""
    if sigma is None:
        s = np.full(n, 0.1)
        return s, s
    if isinstance(sigma, tuple) and len(sigma) == 2:
        return _per_star(sigma[0], n), _per_star(sigma[1], n)
    arr = np.asarray(sigma, dtype=float)
    if arr.shape == (2, n):
        return arr[0], arr[1]
    s = _per_star(arr, n)
    return s, s


def _per_star(value, n):
    arr = np.asarray(value, dtype=float).ravel()
    if arr.size == n:
        return arr
    if arr.size == 1:
        return np.full(n, arr[0])
    raise ValueError(f"sigma must be a number, one value per star ({n}) or a (2, {n}) array; got {arr.size} values")


def _fov_range(fov_range):
    try:
        lo, hi = (float(v) for v in fov_range)
    except (TypeError, ValueError):
        raise ValueError(f"fov_range must be two numbers MIN MAX in degrees, got {fov_range!r}") from None
    if not (0 < lo <= hi < 180):
        raise ValueError(f"fov_range must satisfy 0 < MIN <= MAX < 180 degrees, got {lo} {hi}")
    return lo, hi


def _short_side(width, height, f):
    """Full angle (deg) across the image's shorter side at focal length f (px)."""
    return math.degrees(2 * math.atan(min(width, height) / 2.0 / f))
