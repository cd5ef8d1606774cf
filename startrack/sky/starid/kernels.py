"""Numba kernels of star identification: sky grid, pattern geometry, hash probes, verification, matching.

Everything a solve touches per frame runs here, in compiled loops over
small arrays; the Python layer (:mod:`startrack.starid.solver`) only prepares
inputs and wraps outputs. Conventions: image positions are *undistorted pixel
offsets from the principal point* (px), so a direction is
``normalise(dx / f, dy / f, 1)`` for a focal length ``f`` (px); catalog
directions are ICRS unit vectors sorted brightest first, so a star's index is
its brightness rank.

Kernels that need many inputs take them bundled in three tuples, built by
:func:`sky_index`, :func:`pattern_tables` and :func:`solver_settings` and
unpacked by name at the top of each kernel: the catalog and its sky grid,
the pattern database, and the identifier's settings. They are plain tuples
on purpose: numba types a plain tuple argument in its C dispatcher, a
namedtuple through Python, which costs a tracking solve measurably.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ...flags import LOST_IN_SPACE, NOT_SOLVED, SOLVED, TRACKING
from ..attitude import wahba

#: Brightest image stars that converge the refined attitude before every star is matched (see :func:`refine`).
REFINE_BRIGHT = 96
#: Median of a Rayleigh(1) variable, sqrt(2 ln 2): the median 2-D residual in units of its per-axis sigma.
_RAYLEIGH_MEDIAN = math.sqrt(2.0 * math.log(2.0))
#: Largest residual spread (matched residuals over their CRLB, 1 for pure noise) a tracking solution may have.
TRACK_SPREAD = 10.0

# -- the argument bundles ------------------------------------------------------------------------


def sky_index(vectors, grid, limit):
    """The catalog bundle ``(vectors, band_first, cell_start, items, limit)``.

    ``vectors``: catalog unit vectors (n, 3), brightest first; ``grid``: the
    :func:`build_sky_grid` of (at least) its first ``limit`` stars, the ones
    the kernels use.
    """
    band_first, cell_start, items = grid
    return (vectors, band_first, cell_start, items, int(limit))


def pattern_tables(eps, bins, slot_start, stars, ratios, largest, max_pattern):
    """The pattern-database bundle: ratio tolerance ``eps``, hash ``bins`` per unit ratio, the hash table
    ``slot_start``, each pattern's catalog ``stars``, edge ``ratios`` and ``largest`` edge (rad), and the
    largest edge of any pattern ``max_pattern`` (rad)."""
    return (float(eps), float(bins), slot_start, stars, ratios, largest, float(max_pattern))


def solver_settings(f_list, f_min, f_max, fit_focal, n_query, bounds, match_radius, n_verify, log_threshold,
                    max_candidates, track_radius):
    """The identifier's settings bundle (see :func:`lost_in_space` and :func:`identify_frame`): trial focal
    lengths ``f_list`` within [``f_min``, ``f_max``] (px) and whether to fit it; the ``n_query`` brightest
    stars searched; the image ``bounds`` (x0, x1, y0, y1 offsets from the principal point, px); verification
    with ``n_verify`` stars within ``match_radius`` px, accepted below ``exp(log_threshold)`` after at most
    ``max_candidates``; tracking within ``track_radius`` px."""
    return (np.ascontiguousarray(f_list, np.float64), float(f_min), float(f_max), bool(fit_focal), int(n_query),
            np.ascontiguousarray(bounds, np.float64), float(match_radius), int(n_verify), float(log_threshold),
            int(max_candidates), float(track_radius))


# -- sky grid: declination bands split into right-ascension cells ------------------------------


def build_sky_grid(vectors, cell):
    """Index unit vectors on the sphere in ~``cell``-radian cells (declination bands x RA cells).

    Returns ``(band_first, cell_start, items)``: the first cell of each band
    (``nbands + 1`` entries), CSR offsets of each cell and the vector indices
    of each cell in ascending order (so in brightness order for a sorted catalog).
    """
    nbands = max(1, int(math.ceil(math.pi / cell)))
    h = math.pi / nbands
    lo = -0.5 * math.pi + h * np.arange(nbands)
    widest = np.where((lo < 0) & (lo + h > 0), 0.0, np.minimum(np.abs(lo), np.abs(lo + h)))
    ncell = np.maximum(1, np.floor(2 * math.pi * np.cos(widest) / h)).astype(np.int64)
    band_first = np.concatenate([[0], np.cumsum(ncell)]).astype(np.int64)
    cell_id = _cell_of(np.ascontiguousarray(vectors, np.float64), nbands, band_first)
    order = np.argsort(cell_id, kind="stable").astype(np.int64)
    counts = np.bincount(cell_id, minlength=int(band_first[-1]))
    cell_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return band_first, cell_start, order


@nb.njit(cache=True)
def _cell_of(vectors, nbands, band_first):
    n = vectors.shape[0]
    out = np.empty(n, np.int64)
    h = math.pi / nbands
    for i in range(n):
        dec = math.asin(min(1.0, max(-1.0, vectors[i, 2])))
        ra = math.atan2(vectors[i, 1], vectors[i, 0])
        if ra < 0:
            ra += 2 * math.pi
        k = min(nbands - 1, int((dec + 0.5 * math.pi) / h))
        nc = band_first[k + 1] - band_first[k]
        j = min(nc - 1, int(ra / (2 * math.pi) * nc))
        out[i] = band_first[k] + j
    return out


@nb.njit(cache=True)
def cone_query(cx, cy, cz, radius, sky, limit, out):
    """Indices (< ``limit``) of the catalog ``sky`` within ``radius`` rad of (cx, cy, cz) into ``out``; their count."""
    vectors, band_first, cell_start, items, _ = sky
    nbands = band_first.shape[0] - 1
    h = math.pi / nbands
    dec = math.asin(min(1.0, max(-1.0, cz)))
    ra = math.atan2(cy, cx)
    if ra < 0:
        ra += 2 * math.pi
    cosr = math.cos(radius)
    k0 = max(0, int((dec - radius + 0.5 * math.pi) / h))
    k1 = min(nbands - 1, int((dec + radius + 0.5 * math.pi) / h))
    full = abs(dec) + radius >= 0.5 * math.pi
    half = math.pi
    if not full:
        s = math.sin(radius) / math.cos(dec)
        half = math.asin(s) if s < 1.0 else math.pi
    m = 0
    cap = out.shape[0]
    for k in range(k0, k1 + 1):
        nc = band_first[k + 1] - band_first[k]
        if half >= math.pi:
            j0 = 0
            j1 = nc - 1
        else:
            j0 = int(math.floor((ra - half) / (2 * math.pi) * nc))
            j1 = int(math.floor((ra + half) / (2 * math.pi) * nc))
            if j1 - j0 + 1 >= nc:
                j0 = 0
                j1 = nc - 1
        for jj in range(j0, j1 + 1):
            j = jj % nc
            c = band_first[k] + j
            for t in range(cell_start[c], cell_start[c + 1]):
                idx = items[t]
                if idx >= limit:
                    break  # items are ascending within a cell
                if vectors[idx, 0] * cx + vectors[idx, 1] * cy + vectors[idx, 2] * cz >= cosr:
                    if m < cap:
                        out[m] = idx
                    m += 1
    return min(m, cap)


# -- pattern geometry ------------------------------------------------------------------------------

_PAIRS = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]], dtype=np.int64)


@nb.njit(cache=True)
def _angle(a, b):
    """Angle (rad) between two unit vectors, accurate for small angles."""
    cx = a[1] * b[2] - a[2] * b[1]
    cy = a[2] * b[0] - a[0] * b[2]
    cz = a[0] * b[1] - a[1] * b[0]
    return math.atan2(math.sqrt(cx * cx + cy * cy + cz * cz), a[0] * b[0] + a[1] * b[1] + a[2] * b[2])


@nb.njit(cache=True)
def pattern_geometry(vec, ratios, order):
    """Edge ratios of a 4-star pattern and its canonical star order.

    ``vec`` (4, 3) unit vectors. Writes the 5 smaller edge angles divided by
    the largest, ascending, into ``ratios`` and the stars sorted by their
    angular distance from the pattern's mean direction into ``order``;
    returns the largest edge (rad).
    """
    edges = np.empty(6)
    for e in range(6):
        edges[e] = _angle(vec[_PAIRS[e, 0]], vec[_PAIRS[e, 1]])
    edges.sort()
    big = edges[5]
    for e in range(5):
        ratios[e] = edges[e] / big
    c = np.zeros(3)
    for i in range(4):
        for a in range(3):
            c[a] += vec[i, a]
    nrm = math.sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2])
    dist = np.empty(4)
    for i in range(4):
        dist[i] = -(vec[i, 0] * c[0] + vec[i, 1] * c[1] + vec[i, 2] * c[2]) / nrm  # -cos: ascending = nearest
    srt = np.argsort(dist)
    for i in range(4):
        order[i] = srt[i]
    return big


@nb.njit(cache=True)
def bin_key(ratios, bins):
    """Integer key of the ratio cell holding ``ratios`` (``bins`` cells per unit ratio)."""
    key = 0
    for e in range(5):
        key = key * 1024 + min(1023, int(ratios[e] * bins))
    return key


@nb.njit(cache=True)
def hash_slot(key, mask):
    """Slot of an integer key in a table of ``mask + 1`` (a power of two) slots (Fibonacci hashing)."""
    h = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    return np.int64((h >> np.uint64(24)) & np.uint64(mask))


@nb.njit(cache=True)
def pattern_slots(ratios, bins, mask):
    """Hash slot of each pattern's ratio cell."""
    n = ratios.shape[0]
    out = np.empty(n, np.int64)
    for p in range(n):
        out[p] = hash_slot(bin_key(ratios[p], bins), mask)
    return out


# -- database construction -------------------------------------------------------------------------


def fibonacci_sphere(n):
    """``n`` nearly uniform unit vectors (the Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = math.pi * (3.0 - math.sqrt(5.0)) * i
    r = np.sqrt(1.0 - z * z)
    return np.column_stack([r * np.cos(phi), r * np.sin(phi), z])


@nb.njit(cache=True)
def field_patterns(centres, radius, sky, per_field):
    """Packed keys of every 4-star combination of the ``per_field`` brightest stars within ``radius`` of each centre.

    A key packs the 4 ascending star indices in 16 bits each, so equal
    patterns from overlapping fields have equal keys (deduplicated by the caller).
    """
    vectors, limit = sky[0], sky[4]
    nf = centres.shape[0]
    per = per_field * (per_field - 1) * (per_field - 2) * (per_field - 3) // 24
    out = np.empty(nf * per, np.uint64)
    found = np.empty(vectors.shape[0], np.int64)
    best = np.empty(per_field, np.int64)
    m = 0
    for f in range(nf):
        cnt = cone_query(centres[f, 0], centres[f, 1], centres[f, 2], radius, sky, limit, found)
        if cnt < 4:
            continue
        sel = np.sort(found[:cnt])
        k = min(per_field, cnt)
        for i in range(k):
            best[i] = sel[i]
        for d in range(3, k):
            for c in range(2, d):
                for b in range(1, c):
                    for a in range(b):
                        out[m] = ((np.uint64(best[a]) << np.uint64(48)) | (np.uint64(best[b]) << np.uint64(32))
                                  | (np.uint64(best[c]) << np.uint64(16)) | np.uint64(best[d]))
                        m += 1
    return out[:m]


@nb.njit(cache=True, parallel=True)
def describe_patterns(keys, vectors, stars, ratios, largest):
    """Canonical star order, edge ratios and largest edge of each packed pattern key."""
    n = keys.shape[0]
    for p in nb.prange(n):
        vec = np.empty((4, 3))
        idx = np.empty(4, np.int64)
        k = keys[p]
        for i in range(4):
            idx[3 - i] = np.int64((k >> np.uint64(16 * i)) & np.uint64(0xFFFF))
        for i in range(4):
            for a in range(3):
                vec[i, a] = vectors[idx[i], a]
        r = np.empty(5)
        order = np.empty(4, np.int64)
        largest[p] = pattern_geometry(vec, r, order)
        for e in range(5):
            ratios[p, e] = r[e]
        for i in range(4):
            stars[p, i] = idx[order[i]]


# -- matching and verification -------------------------------------------------------------------


@nb.njit(cache=True)
def predict(rot, f, sky, bounds, margin, max_out, px, py, pidx, scratch):
    """Catalog stars of ``sky`` that fall on the image for attitude ``rot`` and focal length ``f``.

    The image spans offsets ``bounds`` = (x0, x1, y0, y1) (px from the
    principal point), widened by ``margin`` px. Writes the brightest
    ``max_out`` into ``px, py`` (offsets) and ``pidx`` (catalog indices);
    returns their number. ``scratch`` is workspace of one int per catalog star.
    """
    cat_vec = sky[0]
    m = _brightest_on_image(rot, f, sky, bounds, margin, max_out, scratch)
    for t in range(m):
        i = scratch[t]
        px[t], py[t] = _project(rot, f, cat_vec, i)
        pidx[t] = i
    return m


@nb.njit(cache=True)
def _brightest_on_image(rot, f, sky, bounds, margin, max_out, scratch):
    """Indices of the brightest ``max_out`` catalog stars on the widened image, into ``scratch``."""
    limit = sky[4]
    ex = max(abs(bounds[0]), abs(bounds[1])) + margin
    ey = max(abs(bounds[2]), abs(bounds[3])) + margin
    # A catalog sorted by brightness holds the brightest max_out on the image among its first L stars as soon as
    # at least max_out of those are on it; try an L that gives ~3 max_out on an average patch of sky first
    # (the cone query stops at L in every cell), the whole catalog only when that falls short.
    omega = 4.0 * ex * ey / (f * f)
    trial = int(3.0 * max_out * 4.0 * math.pi / omega)
    m = 0
    if trial < limit:
        m = _on_image(rot, f, sky, trial, bounds, margin, ex, ey, scratch)
    if m < max_out:
        m = _on_image(rot, f, sky, limit, bounds, margin, ex, ey, scratch)
    if m > max_out:  # keep the brightest: the smallest catalog indices (in any order)
        sel = np.partition(scratch[:m], max_out - 1)
        for t in range(max_out):
            scratch[t] = sel[t]
        m = max_out
    return m


@nb.njit(cache=True)
def _project(rot, f, cat_vec, i):
    """Pixel offsets (f v_x / v_z, f v_y / v_z) of catalog star ``i`` for attitude ``rot``; NaN behind the camera."""
    vz = rot[2, 0] * cat_vec[i, 0] + rot[2, 1] * cat_vec[i, 1] + rot[2, 2] * cat_vec[i, 2]
    if vz <= 0:
        return np.nan, np.nan
    return (f * (rot[0, 0] * cat_vec[i, 0] + rot[0, 1] * cat_vec[i, 1] + rot[0, 2] * cat_vec[i, 2]) / vz,
            f * (rot[1, 0] * cat_vec[i, 0] + rot[1, 1] * cat_vec[i, 1] + rot[1, 2] * cat_vec[i, 2]) / vz)


@nb.njit(cache=True)
def _reproject(rot, f, cat_vec, cand, ncand, bounds, px, py, pidx):
    """Offsets of the candidate catalog stars ``cand[:ncand]`` that fall on the image now; their count."""
    m = 0
    for t in range(ncand):
        i = cand[t]
        x, y = _project(rot, f, cat_vec, i)
        if bounds[0] <= x <= bounds[1] and bounds[2] <= y <= bounds[3]:  # False for NaN
            px[m] = x
            py[m] = y
            pidx[m] = i
            m += 1
    return m


@nb.njit(cache=True)
def _on_image(rot, f, sky, limit, bounds, margin, ex, ey, scratch):
    """Catalog indices (< ``limit``) that project onto the widened image, compacted into ``scratch``; their count."""
    cat_vec = sky[0]
    half_x0, half_x1, half_y0, half_y1 = bounds[0], bounds[1], bounds[2], bounds[3]
    bx, by, bz = rot[2, 0], rot[2, 1], rot[2, 2]
    radius = math.atan(math.sqrt(ex * ex + ey * ey) / f) + 2e-4
    cnt = cone_query(bx, by, bz, radius, sky, limit, scratch)
    m = 0
    for t in range(cnt):
        i = scratch[t]
        x, y = _project(rot, f, cat_vec, i)
        if not (half_x0 - margin <= x <= half_x1 + margin and half_y0 - margin <= y <= half_y1 + margin):
            continue
        scratch[m] = i  # compact in place: m <= t
        m += 1
    return m


@nb.njit(cache=True)
def match_nearest(ax, ay, na, bx, by, nb_, radius, match, dist):
    """For each of the first ``na`` points a, the nearest of the first ``nb_`` points b within ``radius``.

    One-to-one: when two a's claim the same b the nearer keeps it. ``match``
    receives the b index (-1 for none), ``dist`` the distance; returns the
    number matched. Points b are bucketed on a grid of cells at least ``radius`` wide (about one point each).
    """
    if na == 0 or nb_ == 0:
        for i in range(na):
            match[i] = -1
        return 0
    x0 = bx[0]
    y0 = by[0]
    x1 = bx[0]
    y1 = by[0]
    for j in range(nb_):
        x0 = min(x0, bx[j])
        x1 = max(x1, bx[j])
        y0 = min(y0, by[j])
        y1 = max(y1, by[j])
    # about one point per cell: smaller cells cost more to build than the searches they save
    cell = max(radius, math.sqrt((x1 - x0) * (y1 - y0) / nb_), max(x1 - x0, y1 - y0) / 256.0, 1e-9)
    nx = int((x1 - x0) / cell) + 1
    ny = int((y1 - y0) / cell) + 1
    start = np.zeros(nx * ny + 1, np.int64)
    cid = np.empty(nb_, np.int64)
    for j in range(nb_):
        c = int((bx[j] - x0) / cell) + nx * int((by[j] - y0) / cell)
        cid[j] = c
        start[c + 1] += 1
    for c in range(nx * ny):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    members = np.empty(nb_, np.int64)
    for j in range(nb_):
        members[fill[cid[j]]] = j
        fill[cid[j]] += 1
    owner = np.full(nb_, -1, np.int64)
    r2 = radius * radius
    for i in range(na):
        match[i] = -1
        # only the cells the search disc touches: one, mostly, as cells are wider than the radius
        gx0 = int(math.floor((ax[i] - radius - x0) / cell))
        gx1 = int(math.floor((ax[i] + radius - x0) / cell))
        gy0 = int(math.floor((ay[i] - radius - y0) / cell))
        gy1 = int(math.floor((ay[i] + radius - y0) / cell))
        best = r2
        for yy in range(max(gy0, 0), min(gy1, ny - 1) + 1):
            for xx in range(max(gx0, 0), min(gx1, nx - 1) + 1):
                c = xx + nx * yy
                for t in range(start[c], start[c + 1]):
                    j = members[t]
                    d2 = (ax[i] - bx[j]) ** 2 + (ay[i] - by[j]) ** 2
                    if d2 <= best:
                        best = d2
                        match[i] = j
        if match[i] >= 0:
            dist[i] = math.sqrt(best)
            j = match[i]
            if owner[j] >= 0:
                other = owner[j]
                if dist[other] <= dist[i]:
                    match[i] = -1
                    continue
                match[other] = -1
            owner[j] = i
    m = 0
    for i in range(na):
        if match[i] >= 0:
            m += 1
    return m


@nb.njit(cache=True)
def log_binom_sf(k, n, p):
    """log P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 0.0
    if k > n or p <= 0.0:
        return -np.inf
    if p >= 1.0:
        return 0.0
    lp = math.log(p)
    lq = math.log1p(-p)
    top = -np.inf
    terms = np.empty(n - k + 1)
    for j in range(k, n + 1):
        t = math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lp + (n - j) * lq
        terms[j - k] = t
        top = max(top, t)
    s = 0.0
    for t in terms:
        s += math.exp(t - top)
    return top + math.log(s)


@nb.njit(cache=True)
def _direction(dx, dy, f, out, i):
    """Write the unit vector of pixel offset (dx, dy) at focal length ``f`` into ``out[i]``."""
    u = dx / f
    v = dy / f
    s = 1.0 / math.sqrt(u * u + v * v + 1.0)
    out[i, 0] = u * s
    out[i, 1] = v * s
    out[i, 2] = s


@nb.njit(cache=True)
def to_vectors(dx, dy, n, f, out):
    """Directions (n, 3) of pixel offsets at focal length ``f``."""
    for i in range(n):
        _direction(dx[i], dy[i], f, out, i)


@nb.njit(cache=True)
def _fit_focal(rot, f, mx, my, cat, w):
    """Gauss-Newton on (small rotation, focal length) for pixel offsets ``mx, my`` of stars ``cat``.

    The predicted offset is ``f (v_x / v_z, v_y / v_z)`` with ``v = rot @ c``;
    a rotation alone cannot absorb a scale error, but with an asymmetric star
    field it absorbs part of it, which is why the two are fitted together.
    Updates ``rot`` in place; returns the focal length.
    """
    n = mx.shape[0]
    A = np.empty((4, 4))
    g = np.empty(4)
    J = np.empty((2, 4))
    for _ in range(4):
        A[:, :] = 0.0
        g[:] = 0.0
        for i in range(n):
            vx = rot[0, 0] * cat[i, 0] + rot[0, 1] * cat[i, 1] + rot[0, 2] * cat[i, 2]
            vy = rot[1, 0] * cat[i, 0] + rot[1, 1] * cat[i, 1] + rot[1, 2] * cat[i, 2]
            vz = rot[2, 0] * cat[i, 0] + rot[2, 1] * cat[i, 1] + rot[2, 2] * cat[i, 2]
            tu = vx / vz
            tv = vy / vz
            ru = mx[i] - f * tu
            rv = my[i] - f * tv
            # d v / d theta = [v x] for rot -> (I - [theta x]) rot; then d t / d v
            # row u: f (dv_x - tu dv_z) / vz ; row v: f (dv_y - tv dv_z) / vz
            # [v x] columns: d/dtheta_x = (0, vz, -vy), d/dtheta_y = (-vz, 0, vx), d/dtheta_z = (vy, -vx, 0)
            J[0, 0] = f * (0.0 - tu * (-vy)) / vz
            J[0, 1] = f * (-vz - tu * vx) / vz
            J[0, 2] = f * (vy - 0.0) / vz
            J[1, 0] = f * (vz - tv * (-vy)) / vz
            J[1, 1] = f * (0.0 - tv * vx) / vz
            J[1, 2] = f * (-vx - 0.0) / vz
            J[0, 3] = tu
            J[1, 3] = tv
            for a in range(4):
                g[a] += w[i] * (J[0, a] * ru + J[1, a] * rv)
                for b in range(a, 4):
                    A[a, b] += w[i] * (J[0, a] * J[0, b] + J[1, a] * J[1, b])
        for a in range(4):
            for b in range(a):
                A[a, b] = A[b, a]
        step = np.linalg.solve(A, g)
        ang = math.sqrt(step[0] ** 2 + step[1] ** 2 + step[2] ** 2)
        if ang > 0:
            kx, ky, kz = step[0] / ang, step[1] / ang, step[2] / ang
            sa, ca = math.sin(ang), 1.0 - math.cos(ang)
            # (I - [theta x]) to first order, exactly orthogonal: Rodrigues with angle -|theta|
            E = np.empty((3, 3))
            E[0, 0] = 1 - ca * (ky * ky + kz * kz)
            E[0, 1] = sa * kz + ca * kx * ky
            E[0, 2] = -sa * ky + ca * kx * kz
            E[1, 0] = -sa * kz + ca * kx * ky
            E[1, 1] = 1 - ca * (kx * kx + kz * kz)
            E[1, 2] = sa * kx + ca * ky * kz
            E[2, 0] = sa * ky + ca * kx * kz
            E[2, 1] = -sa * kx + ca * ky * kz
            E[2, 2] = 1 - ca * (kx * kx + ky * ky)
            R2 = E @ rot
            for a in range(3):
                for b in range(3):
                    rot[a, b] = R2[a, b]
        f += step[3]
        # Gauss-Newton converges quadratically from the matched solution: after a step of 1e-6 (rad, or relative
        # in f) what is left is ~1e-12, far below any attitude's precision, so no further iteration is needed
        if abs(step[3]) < 1e-6 * f and ang < 1e-6:
            break
    return f


@nb.njit(cache=True)
def _gather(local, pidx, obs, cat_vec, weight, dx, dy, keep, o, c, w, mx, my):
    """Copy the matched (and kept) stars' directions, catalog vectors, weights and offsets; returns their count."""
    m = 0
    for i in range(local.shape[0]):
        if local[i] >= 0 and keep[i]:
            j = pidx[local[i]]
            for a in range(3):
                o[m, a] = obs[i, a]
                c[m, a] = cat_vec[j, a]
            w[m] = weight[i]
            mx[m] = dx[i]
            my[m] = dy[i]
            m += 1
    return m


@nb.njit(cache=True)
def _residuals(rot, obs, local, pidx, cat_vec, keep, out):
    """Angle (rad) between each kept matched star and its catalog star rotated into the camera (0 otherwise)."""
    p = np.empty(3)
    for i in range(local.shape[0]):
        out[i] = 0.0
        if local[i] >= 0 and keep[i]:
            j = pidx[local[i]]
            for a in range(3):
                p[a] = rot[a, 0] * cat_vec[j, 0] + rot[a, 1] * cat_vec[j, 1] + rot[a, 2] * cat_vec[j, 2]
            out[i] = _angle(obs[i], p)


@nb.njit(cache=True)
def refine(rot, f, dx, dy, weight, n_img, sky, bounds, radius, min_radius, fit_focal, iterations, max_pred, match,
           resid, scratch, n_bright=0, focal_passes=True):
    """Match every image star to the predicted catalog, then re-solve: weighted Wahba (and focal length).

    Matching passes: predict the catalog stars on the image, match each image
    star to the nearest within the radius, solve Wahba (and, if
    ``fit_focal``, the focal length with it, :func:`_fit_focal`) with the
    weights capped at their median, so that no single bright star can hold
    a not-yet-right solution in place. Once the number of matches stops
    growing the radius shrinks to 5 robust sigmas (1.4826 x the median
    distance), not below ``min_radius`` px, until it settles. The final solution uses the full
    weights ``weight`` (1/rad^2); stars beyond 5 sigma (their CRLB, scaled up
    by the robust spread of all residuals when the model fits worse than the
    bound) are dropped and the solution repeated: a blend or a false spot next
    to a catalog star must not pull the attitude. The covariance is scaled by
    the reduced chi-square when above 1.

    ``n_bright`` > 0 limits the matching passes to the brightest ``n_bright``
    image stars (the input order) and twice as many predicted catalog stars;
    every star is then matched once more at the settled radius before the
    final solution. ``focal_passes=False`` keeps the focal length fixed
    while matching and fits it (when ``fit_focal``) in the final solution only.

    ``rot`` is updated in place; ``match`` receives each image star's catalog
    index (-1 unmatched), ``resid`` its residual angle (rad). ``scratch``: one
    int per catalog star of workspace. Returns ``(f, covariance, n_matched,
    rms_rad, n_predicted)``.
    """
    cat_vec = sky[0]
    px = np.empty(max_pred)
    py = np.empty(max_pred)
    pidx = np.empty(max_pred, np.int64)
    local = np.empty(n_img, np.int64)
    dist = np.empty(n_img)
    obs = np.empty((n_img, 3))
    o = np.empty((n_img, 3))
    c = np.empty((n_img, 3))
    w = np.empty(n_img)
    tmp = np.empty(n_img)
    mx = np.empty(n_img)
    my = np.empty(n_img)
    keep = np.ones(n_img, np.bool_)
    cov = np.full((3, 3), np.nan)
    nm = 0
    nm_prev = -1
    npred = 0
    r = radius
    # the passes that converge the attitude use the brightest stars only (they carry most of the weight and the
    # matching cost grows with the star count); one pass with every star follows before the final solution
    n_use = min(n_img, n_bright) if n_bright > 0 else n_img
    pred_use = min(max_pred, max(2 * n_use, 200))
    local[n_use:] = -1
    # the catalog query runs once: later passes re-project these candidates (the attitude moves by less than
    # the margin between passes)
    ncand = _brightest_on_image(rot, f, sky, bounds, 2.0 * r, pred_use, scratch)
    cand = scratch[:ncand].copy()
    for _ in range(iterations):
        npred = _reproject(rot, f, cat_vec, cand, ncand, bounds, px, py, pidx)
        match_nearest(dx, dy, n_use, px, py, npred, r, local, dist)
        to_vectors(dx, dy, n_use, f, obs)
        nm = _gather(local, pidx, obs, cat_vec, weight, dx, dy, keep, o, c, w, mx, my)
        if nm < 2:
            nm = 0
            break
        cap = np.median(w[:nm])
        for i in range(nm):
            w[i] = min(w[i], cap)
        wahba(o[:nm], c[:nm], w[:nm], rot)
        if fit_focal and focal_passes and nm >= 3:
            f = _fit_focal(rot, f, mx[:nm], my[:nm], c[:nm], w[:nm])
            to_vectors(dx, dy, n_use, f, obs)
        if nm <= nm_prev:
            _residuals(rot, obs, local, pidx, cat_vec, keep, tmp)
            m = 0
            for i in range(n_img):
                if local[i] >= 0 and keep[i]:
                    tmp[m] = tmp[i] * f
                    m += 1
            r_new = max(min_radius, min(r, 5.0 * 1.4826 * np.median(tmp[:m])))
            if r_new >= 0.9 * r:
                break  # the radius has settled: another pass would find the same matches
            r = r_new
        nm_prev = nm
    if nm >= 2 and n_use < n_img:
        npred = predict(rot, f, sky, bounds, 0.0, max_pred, px, py, pidx, scratch)
        match_nearest(dx, dy, n_img, px, py, npred, r, local, dist)
        to_vectors(dx, dy, n_img, f, obs)
    settled = False
    if nm >= 2:
        # final: full weights, 5-sigma rejection, once more
        for rep in range(2):
            nm = _gather(local, pidx, obs, cat_vec, weight, dx, dy, keep, o, c, w, mx, my)
            if nm < 2:
                break
            if fit_focal and nm >= 3:
                f = _fit_focal(rot, f, mx[:nm], my[:nm], c[:nm], w[:nm])
                to_vectors(dx, dy, n_img, f, obs)
                nm = _gather(local, pidx, obs, cat_vec, weight, dx, dy, keep, o, c, w, mx, my)
            cov = wahba(o[:nm], c[:nm], w[:nm], rot)
            if rep == 1:
                break
            _residuals(rot, obs, local, pidx, cat_vec, keep, resid)
            m = 0
            for i in range(n_img):
                if local[i] >= 0 and keep[i]:
                    tmp[m] = resid[i] * math.sqrt(weight[i])
                    m += 1
            scale = max(1.0, np.median(tmp[:m]) / _RAYLEIGH_MEDIAN)
            dropped = False
            for i in range(n_img):
                if local[i] >= 0 and keep[i] and resid[i] * math.sqrt(weight[i]) > 5.0 * scale:
                    keep[i] = False
                    dropped = True
            if not dropped:
                settled = True  # the same stars would give the same solution again: resid is final
                break
    ss = 0.0
    chi2 = 0.0
    if nm >= 2 and not settled:
        _residuals(rot, obs, local, pidx, cat_vec, keep, resid)
    for i in range(n_img):
        match[i] = -1
        if nm >= 2 and local[i] >= 0 and keep[i]:
            match[i] = pidx[local[i]]
            ss += resid[i] * resid[i]
            chi2 += resid[i] * resid[i] * weight[i]
        else:
            resid[i] = np.nan
    if nm < 2:
        nm = 0
    dof = 2 * nm - 3 - (1 if fit_focal else 0)
    if dof > 0 and chi2 > dof:
        for a in range(3):
            for b in range(3):
                cov[a, b] *= chi2 / dof
    return f, cov, nm, math.sqrt(ss / nm) if nm else np.nan, npred


# -- lost in space -----------------------------------------------------------------------------------


@nb.njit(cache=True)
def lost_in_space(dx, dy, n_img, patterns, sky, settings, max_pred, skip, rot_out, scratch):
    """Search the pattern database for the brightest image stars and verify each candidate attitude.

    Image patterns are every 4 of the ``n_query`` brightest stars, taken
    breadth first (all patterns of the brightest 4, then those adding the
    5th, ...), at each focal length of ``f_list``. A database pattern whose 5
    edge ratios agree within ``eps`` and whose implied focal length lies in
    [f_min, f_max] gives a candidate attitude (Wahba on the 4 pairs), which
    is verified against the catalog: of the ``n_verify`` brightest image stars
    beyond the pattern, ``k`` fall within ``match_radius`` px of one of the
    ``max_pred`` brightest predicted stars. Its false-match probability is
    ``P(Binomial(n, p) >= k)`` with ``p`` the chance that a random point lands
    that close to a predicted star; the candidate is accepted when that
    probability times the number of candidates tried so far (a Bonferroni
    correction) is below ``exp(log_threshold)``.

    The first ``skip`` candidates that pass are passed over (the caller
    rejected them after refinement). Returns ``(status, f, log_p,
    n_candidates, n_patterns)``: status SOLVED accepted (attitude in ``rot_out``),
    0 nothing accepted. ``scratch``: one int per catalog star of workspace.
    """
    eps, bins, slot_start, pat_stars, pat_ratios, pat_largest, max_pattern = patterns
    cat_vec = sky[0]
    f_list, f_min, f_max, _, n_query, bounds, match_radius, n_verify, log_threshold, max_candidates, _ = settings
    nq = min(n_query, n_img)
    vec = np.empty((n_img, 3))
    quad = np.empty((4, 3))
    qcat = np.empty((4, 3))
    qimg = np.empty((4, 3))
    ratios = np.empty(5)
    order = np.empty(4, np.int64)
    lo = np.empty(5, np.int64)
    hi = np.empty(5, np.int64)
    cur = np.empty(5, np.int64)
    ids = np.empty(4, np.int64)
    px = np.empty(max_pred)
    py = np.empty(max_pred)
    pidx = np.empty(max_pred, np.int64)
    mt = np.empty(n_img, np.int64)
    md = np.empty(n_img)
    w4 = np.ones(4)
    rot = np.empty((3, 3))
    mask = slot_start.shape[0] - 2
    area = (bounds[1] - bounds[0]) * (bounds[3] - bounds[2])
    ncand = 0
    npat = 0
    nv = min(n_verify, n_img)
    vx = np.empty(nv)
    vy = np.empty(nv)
    for fi in range(f_list.shape[0]):
        f = f_list[fi]
        to_vectors(dx, dy, n_img, f, vec)
        for d in range(3, nq):
            for c in range(2, d):
                for b in range(1, c):
                    for a in range(b):
                        ids[0] = a
                        ids[1] = b
                        ids[2] = c
                        ids[3] = d
                        for i in range(4):
                            for t in range(3):
                                quad[i, t] = vec[ids[i], t]
                        big = pattern_geometry(quad, ratios, order)
                        if big * f / f_max > max_pattern * 1.02:
                            continue
                        npat += 1
                        for e in range(5):
                            lo[e] = max(0, int((ratios[e] - eps) * bins))
                            hi[e] = min(1023, int((ratios[e] + eps) * bins))
                            cur[e] = lo[e]
                        while True:
                            key = 0
                            for e in range(5):
                                key = key * 1024 + cur[e]
                            s = hash_slot(key, mask)
                            for p in range(slot_start[s], slot_start[s + 1]):
                                ok = True
                                for e in range(5):
                                    if abs(pat_ratios[p, e] - ratios[e]) > eps:
                                        ok = False
                                        break
                                if not ok:
                                    continue
                                fc = f * big / pat_largest[p]
                                if fc < f_min or fc > f_max:
                                    continue
                                # candidate: rebuild the 4 directions at the implied focal length
                                for i in range(4):
                                    j = ids[order[i]]
                                    _direction(dx[j], dy[j], fc, qimg, i)
                                    st = pat_stars[p, i]
                                    for t in range(3):
                                        qcat[i, t] = cat_vec[st, t]
                                wahba(qimg, qcat, w4, rot)
                                # the four pairs must agree after rotation (wrong correspondences do not)
                                worst = 0.0
                                for i in range(4):
                                    dd = 0.0
                                    for t in range(3):
                                        pr = rot[t, 0] * qcat[i, 0] + rot[t, 1] * qcat[i, 1] + rot[t, 2] * qcat[i, 2]
                                        dd += (pr - qimg[i, t]) ** 2
                                    worst = max(worst, dd)
                                if math.sqrt(worst) * fc > match_radius:
                                    continue
                                ncand += 1
                                npr = predict(rot, fc, sky, bounds, 0.0, max_pred, px, py, pidx, scratch)
                                # verification stars: the brightest beyond the pattern's own four
                                m = 0
                                for i in range(nv):
                                    if i == ids[0] or i == ids[1] or i == ids[2] or i == ids[3]:
                                        continue
                                    vx[m] = dx[i]
                                    vy[m] = dy[i]
                                    m += 1
                                k = match_nearest(vx, vy, m, px, py, npr, match_radius, mt, md)
                                p1 = min(1.0, npr * math.pi * match_radius * match_radius / area)
                                lp = log_binom_sf(k, m, p1)
                                if lp + math.log(ncand) < log_threshold and skip > 0:
                                    skip -= 1  # accepted before and rejected after refinement
                                elif lp + math.log(ncand) < log_threshold:
                                    for a2 in range(3):
                                        for b2 in range(3):
                                            rot_out[a2, b2] = rot[a2, b2]
                                    return SOLVED, fc, lp + math.log(ncand), ncand, npat
                                if ncand >= max_candidates:
                                    return NOT_SOLVED, f, 0.0, ncand, npat
                            # next probe cell
                            e = 4
                            while e >= 0:
                                cur[e] += 1
                                if cur[e] <= hi[e]:
                                    break
                                cur[e] = lo[e]
                                e -= 1
                            if e < 0:
                                break
    return NOT_SOLVED, f_list[0], 0.0, ncand, npat


@nb.njit(cache=True)
def _residual_spread(resid, weight, n):
    """Median matched residual in units of its sigma, over that of pure noise (1 for residuals at the CRLB)."""
    tmp = np.empty(n)
    m = 0
    for i in range(n):
        if not math.isnan(resid[i]):
            tmp[m] = resid[i] * math.sqrt(weight[i])
            m += 1
    return np.median(tmp[:m]) / _RAYLEIGH_MEDIAN if m else np.inf


# -- one frame ----------------------------------------------------------------------------------------


@nb.njit(cache=True)
def usable_by_brightness(x, y, sx, sy, flux, use_flux):
    """Indices of the stars with finite positions and positive sigmas, brightest first.

    Stars without a finite ``flux`` come last; without ``use_flux`` the input
    order is kept (taken as brightest first).
    """
    n = x.shape[0]
    idx = np.empty(n, np.int64)
    key = np.empty(n)
    m = 0
    for i in range(n):
        if math.isfinite(x[i] + y[i] + sx[i] + sy[i]) and sx[i] > 0 and sy[i] > 0:
            idx[m] = i
            key[m] = (-flux[i] if math.isfinite(flux[i]) else np.inf) if use_flux else 0.0
            m += 1
    return idx[:m][np.argsort(key[:m], kind="mergesort")]


@nb.njit(cache=True)
def per_input_star(order, match, resid, n_in, cat_hip):
    """Catalog index (-1), HIP number (0) and residual (NaN) of each input star, from the ordered results."""
    full = np.full(n_in, -1, np.int64)
    hip = np.zeros(n_in, np.int64)
    res = np.full(n_in, np.nan)
    for t in range(order.shape[0]):
        i = order[t]
        full[i] = match[t]
        res[i] = resid[t]
        if match[t] >= 0:
            hip[i] = cat_hip[match[t]]
    return full, hip, res


@nb.njit(cache=True)
def pinhole_offsets(x, y, sx, sy, order, cx, cy, f):
    """Offsets from the principal point (cx, cy) of stars ``order`` and their 1/sigma^2 (rad^-2), ideal pinhole.

    The columns of d(unit vector)/d(x, y) have squared lengths
    ``(1 - v_k^2) / (|w| f)^2`` (v the unit vector, w = (u, v, 1)).
    Returns ``(dx, dy, weight)``.
    """
    n = order.shape[0]
    dx = np.empty(n)
    dy = np.empty(n)
    out = np.empty(n)
    for t in range(n):
        i = order[t]
        dx[t] = x[i] - cx
        dy[t] = y[i] - cy
        u = dx[t] / f
        v = dy[t] / f
        n2 = u * u + v * v + 1.0
        vx2 = u * u / n2
        vy2 = v * v / n2
        var = 0.5 * (sx[i] * sx[i] * (1.0 - vx2) + sy[i] * sy[i] * (1.0 - vy2)) / (n2 * f * f)
        out[t] = 1.0 / var
    return dx, dy, out


@nb.njit(cache=True)
def identify_frame(dx, dy, weight, f0, use_prior, prior, patterns, sky, settings, rot, match, resid, scratch):
    """Tracking (when ``use_prior``) then lost-in-space, then the refined weighted attitude, for one frame.

    ``dx, dy``: undistorted offsets (px) of the stars, brightest first;
    ``weight``: 1/sigma^2 (rad^-2); ``f0`` the focal length to start from
    (px). ``patterns``, ``sky``, ``settings``: the bundles of
    :func:`pattern_tables`, :func:`sky_index`, :func:`solver_settings`.
    Tracking predicts the catalog with ``prior`` (a 3x3 rotation) and
    matches within the settings' ``track_radius`` px; it is accepted when
    ``P(Binomial(n, p) >= matched)`` is below ``exp(log_threshold)``.
    Otherwise :func:`lost_in_space` runs and its attitude is refined with all
    stars. Returns ``(status, mode, f, log_p, n_candidates, n_patterns,
    n_matched, rms_rad, covariance)`` with the status and mode of :mod:`startrack.flags`
    (``SOLVED``/``NOT_SOLVED``, ``TRACKING``/``LOST_IN_SPACE``).
    """
    _, _, _, fit_focal, _, bounds, match_radius, n_verify, log_threshold, _, track_radius = settings
    n = dx.shape[0]
    area = (bounds[1] - bounds[0]) * (bounds[3] - bounds[2])
    max_pred = max(2 * n, 200)
    if use_prior:
        for a in range(3):
            for c in range(3):
                rot[a, c] = prior[a, c]
        # one refinement from the prior: the brightest stars converge the attitude at the prior's focal length
        # (fitting it to a partial match within the wide tracking radius can lock in a wrong scale), every star
        # is then matched at the settled radius and the focal length refined with all of them; a wrong prior
        # matches no better than chance, fails the test below, and lost-in-space takes over
        f, cov, nm, rms, npred = refine(rot, f0, dx, dy, weight, n, sky, bounds, track_radius, 1.0, fit_focal, 6,
                                        max_pred, match, resid, scratch, REFINE_BRIGHT, False)
        # a prior off by about the tracking radius can settle on a half-right attitude (the field centre matched,
        # the edges not): its residuals are pixels where a true match's are the centroid noise, so they must stay
        # within TRACK_SPREAD times their CRLB (else lost-in-space decides)
        if nm >= 3 and _residual_spread(resid, weight, n) <= TRACK_SPREAD:
            # the prior is a single hypothesis: no multiple-test correction; the matches are counted as
            # if all had been found within the tracking radius (conservative)
            p1 = min(1.0, npred * math.pi * track_radius * track_radius / area)
            logp = log_binom_sf(nm, n, p1)
            if logp < log_threshold:
                return SOLVED, TRACKING, f, logp, 0, 0, nm, rms, cov
    for skip in range(4):
        status, f, logp, ncand, npat = lost_in_space(dx, dy, n, patterns, sky, settings, 2 * n_verify, skip, rot,
                                                     scratch)
        if status != SOLVED:
            break
        f, cov, nm, rms, npred = refine(rot, f, dx, dy, weight, n, sky, bounds, match_radius, 1.0, fit_focal, 6,
                                        max_pred, match, resid, scratch, REFINE_BRIGHT)
        # the refined solution must explain the stars better than chance at its own precision (a candidate
        # with a wrong scale matches a few stars near its pattern and fails here)
        r_eff = max(1.0, 3.0 * rms * f)
        p1 = min(1.0, npred * math.pi * r_eff * r_eff / area)
        if nm >= 3 and log_binom_sf(nm, n, p1) + math.log(ncand) < log_threshold:
            return SOLVED, LOST_IN_SPACE, f, logp, ncand, npat, nm, rms, cov
    return NOT_SOLVED, LOST_IN_SPACE, f, 0.0, ncand, npat, 0, np.nan, np.full((3, 3), np.nan)
