"""The pattern database: 4-star patterns of the catalog, hashed by their edge ratios, cached on disk.

For every field size (one for a known camera, a geometric ladder for blind
solving) the sky is covered by overlapping circular fields on a Fibonacci
lattice; in each field the ``per_field`` brightest stars give all their
4-star combinations (the patterns a camera looking there will see among its
brightest stars). A pattern is described by the 5 smaller of its 6 edge
angles divided by the largest — invariant to rotation and, to first order,
to the focal length — and filed in a hash table under its ratio cell. This is
the Tetra idea (Brown & Stubis 2017, tetra3), with fields as in cedar-solve
and tetra3rs; the code is startrack's own.

Databases are deterministic and cached in the user cache folder
(:func:`startrack._cache.cache_dir`) under a key made of the catalog's digest and every
build parameter.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..._cache import cache_dir
from ..catalog import Catalog
from . import kernels as K

__all__ = ["PatternDatabase", "build_database", "load_database", "cache_dir", "field_ladder"]

#: Bumped whenever the stored layout or the pattern recipe changes (invalidates caches).
FORMAT = 2
#: Pattern keys pack star indices in 16 bits.
_MAX_PATTERN_STARS = 65535


def field_ladder(fov_min_deg, fov_max_deg, step=1.5):
    """Field sizes (deg) from ``fov_min_deg`` to ``fov_max_deg`` in geometric steps of at most ``step``."""
    lo, hi = float(fov_min_deg), float(fov_max_deg)
    if not (0 < lo <= hi < 180):
        raise ValueError(f"field sizes must satisfy 0 < min <= max < 180 degrees, got {lo}, {hi}")
    if hi / lo < 1.0001:
        return [lo]
    n = int(math.ceil(math.log(hi / lo) / math.log(step))) + 1
    return [float(lo * (hi / lo) ** (k / (n - 1))) for k in range(n)]


@dataclass
class PatternDatabase:
    """Patterns of 4 catalog stars filed by their edge ratios.

    Attributes
    ----------
    stars : (n, 4) uint16
        Catalog indices of each pattern's stars, nearest to the pattern's
        centre first.
    ratios : (n, 5) float32
        Ascending edge ratios (smaller edges over the largest).
    largest : (n,) float32
        Largest edge (rad).
    slot_start : (T + 1,) int32
        Hash table: the patterns of slot ``s`` are rows ``slot_start[s]:slot_start[s+1]``.
    params : dict
        Build parameters (``fields_deg``, ``per_field``, ``spacing``, ``eps``,
        ``epoch``, catalog digest, ...).
    build_seconds : float
        Wall time the build took.
    """

    stars: np.ndarray
    ratios: np.ndarray
    largest: np.ndarray
    slot_start: np.ndarray
    params: dict
    build_seconds: float = 0.0
    path: Path | None = field(default=None, compare=False)
    from_cache: bool = False

    def __len__(self):
        return len(self.stars)

    def __repr__(self):
        f = ", ".join(f"{v:.3g}" for v in self.params["fields_deg"])
        return f"<PatternDatabase {len(self)} patterns, fields [{f}] deg, built in {self.build_seconds:.1f} s>"

    @property
    def eps(self) -> float:
        return float(self.params["eps"])

    @property
    def bins(self) -> float:
        return float(self.params["bins"])

    @property
    def max_pattern(self) -> float:
        """Largest pattern edge the database can hold (rad)."""
        return math.radians(max(self.params["fields_deg"]))

    def kernel_tables(self) -> tuple:
        """The database as the identification kernels take it (:func:`~.kernels.pattern_tables`)."""
        return K.pattern_tables(self.eps, self.bins, self.slot_start, self.stars, self.ratios, self.largest,
                                self.max_pattern)

    def save(self, path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, stars=self.stars, ratios=self.ratios, largest=self.largest, slot_start=self.slot_start,
                     params=np.array(json.dumps(self.params)), build_seconds=np.array(self.build_seconds))
        os.replace(tmp, path)  # atomic: a reader never sees half a file

    @classmethod
    def load(cls, path) -> PatternDatabase:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["stars"], z["ratios"], z["largest"], z["slot_start"], json.loads(str(z["params"])),
                           float(z["build_seconds"]), path, True)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a startrack pattern database ({exc})") from None


def _params(catalog: Catalog, fields_deg, per_field, spacing, eps, epoch):
    return {"format": FORMAT, "catalog": catalog.digest, "catalog_size": len(catalog),
            "mag_limit": catalog.mag_limit, "merge_arcsec": round(math.degrees(catalog.merge_radius) * 3600, 3),
            "fields_deg": [round(float(v), 6) for v in fields_deg], "per_field": int(per_field),
            "spacing": float(spacing), "eps": float(eps), "bins": float(1.0 / (4.0 * eps)), "epoch": float(epoch)}


def build_database(catalog: Catalog, fields_deg, *, per_field=8, spacing=0.35, eps=0.004, epoch=2025.0,
                   progress=None) -> PatternDatabase:
    """Build the pattern database for the given field sizes (no caching; see :func:`load_database`).

    Parameters
    ----------
    catalog : Catalog
        Stars, brightest first (as :func:`~startrack.catalog.load_catalog` gives them).
    fields_deg : sequence of float
        Field sizes (deg): the short side of the images to solve.
    per_field : int
        Brightest stars per field whose 4-star combinations are stored.
    spacing : float
        Distance between neighbouring field centres, in field radii.
    eps : float
        Edge-ratio tolerance the database is hashed for (cells are 4 eps wide).
    epoch : float
        Julian year of the star positions the patterns are measured at.
    progress : callable, optional
        Called with a message per field size.
    """
    t0 = time.perf_counter()
    per_field = int(per_field)
    if not 4 <= per_field <= 16:
        raise ValueError(f"per_field must be between 4 and 16, got {per_field}")
    if not 0 < eps < 0.05:
        raise ValueError(f"eps must be in (0, 0.05), got {eps}")
    fields = [float(v) for v in fields_deg]
    vec = np.ascontiguousarray(catalog.propagate(epoch))
    limit = min(len(catalog), _MAX_PATTERN_STARS)
    keys = []
    for size in fields:
        radius = math.radians(size) / 2.0
        if progress:
            progress(f"patterns for {size:.3g} deg fields")
        grid = K.build_sky_grid(vec[:limit], min(max(radius / 3.0, math.radians(0.5)), math.radians(5.0)))
        n_fields = int(math.ceil(4 * math.pi / (spacing * radius) ** 2))
        centres = K.fibonacci_sphere(n_fields)
        keys.append(K.field_patterns(centres, radius, K.sky_index(vec, grid, limit), per_field))
    keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.uint64)
    n = len(keys)
    stars = np.empty((n, 4), np.int64)
    ratios = np.empty((n, 5), np.float64)
    largest = np.empty(n, np.float64)
    K.describe_patterns(keys, vec, stars, ratios, largest)
    params = _params(catalog, fields, per_field, spacing, eps, epoch)
    size = 1 << max(4, int(math.ceil(math.log2(max(n, 16)))))
    slots = K.pattern_slots(ratios, params["bins"], size - 1)
    order = np.argsort(slots, kind="stable")
    slot_start = np.concatenate([[0], np.cumsum(np.bincount(slots, minlength=size))]).astype(np.int32)
    # compact storage: star indices fit 16 bits, the table 32 bits (a 5-30 deg database is ~115 MB)
    db = PatternDatabase(np.ascontiguousarray(stars[order], np.uint16),
                         np.ascontiguousarray(ratios[order], np.float32),
                         np.ascontiguousarray(largest[order], np.float32), slot_start, params)
    db.build_seconds = time.perf_counter() - t0
    return db


def load_database(catalog: Catalog, fields_deg, *, per_field=8, spacing=0.35, eps=0.004, epoch=2025.0,
                  cache=True, progress=None) -> PatternDatabase:
    """The pattern database for these parameters: from the cache when built before, else built (and cached).

    ``cache`` may be True (the user cache directory), False (build in memory)
    or a directory.
    """
    params = _params(catalog, fields_deg, per_field, spacing, eps, epoch)
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir() if cache is True else (Path(cache) if cache else None)
    path = folder / f"patterns-{key}.npz" if folder else None
    if path is not None and path.is_file():
        try:
            db = PatternDatabase.load(path)
            if db.params == params:
                return db
        except ValueError:
            pass  # a damaged cache file is rebuilt below
    db = build_database(catalog, fields_deg, per_field=per_field, spacing=spacing, eps=eps, epoch=epoch,
                        progress=progress)
    if path is not None:
        try:
            db.save(path)
            db.path = path
        except OSError:
            pass  # a read-only cache only costs a rebuild next time
    return db
