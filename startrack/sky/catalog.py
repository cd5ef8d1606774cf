"""The bundled star catalog (Hipparcos 2, Hp <= 8) and apparent star directions at a frame's time.

:func:`load_catalog` reads ``startrack/data/hip2_hp8.fits.gz`` (built by
``catalogs/build_catalog.py`` from ESA/CDS I/311, van Leeuwen 2007; positions
ICRS at epoch J1991.25). :meth:`Catalog.propagate` moves the stars along their
proper motion to a given time; :meth:`Catalog.apparent` gives the directions a
camera near the Earth sees at that time: proper motion, annual parallax,
gravitational light deflection and annual aberration (up to ~20.5 arcsec),
through astropy's ICRS -> GCRS transformation. Diurnal and orbital
aberration of the observer are left out (<= 0.3 and ~5 arcsec; the latter
belongs to a spacecraft's own velocity, which startrack does not know).

Nothing is downloaded at run time: astropy's IERS tables come from the
bundled ``astropy-iers-data`` (see :func:`offline_astropy`).
"""

from __future__ import annotations

import hashlib
import math
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.time import Time
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = ["Catalog", "load_catalog", "offline_astropy", "radec_to_vector", "vector_to_radec", "parse_time",
           "CATALOG_FILE"]

CATALOG_FILE = "hip2_hp8.fits.gz"
#: Epoch of the Hipparcos 2 positions (Julian year 1991.25, TCB as in the catalogue).
EPOCH = Time(1991.25, format="jyear", scale="tcb")
_MAS = math.radians(1.0 / 3.6e6)
# Frames closer in time than this share one apparent-place computation: aberration
# changes by < 3e-4 arcsec per minute.
_APPARENT_REUSE_S = 60.0


def offline_astropy():
    """Forbid astropy from downloading Earth-orientation tables (use the bundled ones, however old)."""
    from astropy.utils import iers

    iers.conf.auto_download = False
    iers.conf.auto_max_age = None


def radec_to_vector(ra, dec):
    """Unit vectors (n, 3) from right ascension and declination in radians."""
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def vector_to_radec(vec):
    """Right ascension in [0, 2 pi) and declination (radians) of vectors (..., 3)."""
    vec = np.asarray(vec, dtype=float)
    ra = np.mod(np.arctan2(vec[..., 1], vec[..., 0]), 2 * np.pi)
    dec = np.arctan2(vec[..., 2], np.hypot(vec[..., 0], vec[..., 1]))
    return ra, dec


def parse_time(value) -> Time:
    """An astropy Time from a Time, an ISO/ISOT string (UTC) or a Julian year number."""
    if isinstance(value, Time):
        return value
    try:
        if isinstance(value, (int, float, np.floating)):
            return Time(float(value), format="jyear")
        return Time(str(value).strip(), scale="utc")
    except ValueError:
        raise ValueError(f"time must be an ISO date like 2026-11-25T22:00:00, got {value!r}") from None


class Catalog:
    """Stars of the bundled catalog: positions, motions and photometry.

    Attributes
    ----------
    table : astropy.table.Table
        ``hip, ra, dec`` (deg, ICRS at epoch J1991.25), ``pmra`` (mas/yr,
        mu_alpha cos dec), ``pmdec`` (mas/yr), ``plx`` (mas), ``hp`` (mag),
        ``b_v``, ``v_i`` (mag), ``n_comp`` (components), ``sol_type``
        (Hipparcos 2 solution type), ``n_merged`` (catalog stars merged into
        this entry; 1 for a single star), brightest first.
    mag_limit : float
    merge_radius : float
        Radius (rad) within which stars were merged (0 = none).
    """

    def __init__(self, table: Table, mag_limit: float, merge_radius: float = 0.0, source: str = CATALOG_FILE):
        self.table = table
        self.mag_limit = float(mag_limit)
        self.merge_radius = float(merge_radius)
        self.source = source
        self._apparent_cache = []  # [(time, vectors)], newest last

    def __len__(self):
        return len(self.table)

    def __repr__(self):
        return (f"<Catalog {len(self)} stars, Hp <= {self.mag_limit:g}, merged within "
                f"{math.degrees(self.merge_radius) * 3600:.1f} arcsec>")

    @cached_property
    def hip(self) -> np.ndarray:
        return np.asarray(self.table["hip"], dtype=np.int64)

    @cached_property
    def mag(self) -> np.ndarray:
        """Hipparcos magnitude Hp of each entry."""
        return np.asarray(self.table["hp"], dtype=float)

    @cached_property
    def vectors(self) -> np.ndarray:
        """Unit vectors (n, 3) at the catalog epoch, ICRS."""
        return radec_to_vector(np.radians(np.asarray(self.table["ra"], float)),
                               np.radians(np.asarray(self.table["dec"], float)))

    @cached_property
    def _tangent_motion(self) -> np.ndarray:
        """Proper motion as a tangent vector (n, 3) in rad/yr."""
        ra = np.radians(np.asarray(self.table["ra"], float))
        dec = np.radians(np.asarray(self.table["dec"], float))
        east = np.stack([-np.sin(ra), np.cos(ra), np.zeros_like(ra)], axis=-1)
        north = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)], axis=-1)
        pmra = np.asarray(self.table["pmra"], float)[:, None] * _MAS
        pmdec = np.asarray(self.table["pmdec"], float)[:, None] * _MAS
        return pmra * east + pmdec * north

    @cached_property
    def digest(self) -> str:
        """Short hash of the star directions and magnitudes: keys caches built from this catalog."""
        h = hashlib.sha1()
        h.update(np.ascontiguousarray(self.hip).tobytes())
        h.update(np.round(self.vectors, 9).tobytes())
        h.update(np.round(self.mag, 3).tobytes())
        return h.hexdigest()[:12]

    # -- positions at a time ---------------------------------------------------
    def propagate(self, time) -> np.ndarray:
        """Unit vectors (n, 3), ICRS, moved along the proper motion to ``time`` (barycentric, no aberration).

        With no radial velocity in Hipparcos 2 a star moves on a straight
        line in space, so its direction is ``normalise(r0 + mu (t - t0))``
        (mu the tangent proper-motion vector, rad/yr): exact for RV = 0.
        """
        dt = (parse_time(time).tdb.jd - EPOCH.tdb.jd) / 365.25
        v = self.vectors + self._tangent_motion * dt
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def apparent(self, time) -> np.ndarray:
        """Apparent directions (n, 3) seen from the geocentre at ``time``: GCRS unit vectors.

        Proper motion, parallax, light deflection and annual aberration
        (astropy ICRS -> GCRS). Results are reused for frames within a minute
        of a previous call (the change is below 0.001 arcsec).
        """
        from astropy import units as u
        from astropy.coordinates import GCRS, CartesianRepresentation, SkyCoord

        t = parse_time(time)
        for when, vec in self._apparent_cache:
            if abs((t - when).to_value("s")) < _APPARENT_REUSE_S:
                return vec
        offline_astropy()
        v = self.propagate(t)
        # Entries without a usable parallax are put at 1 Mpc: no parallax, same aberration.
        plx = np.asarray(self.table["plx"], float)
        dist_pc = np.where(plx > 0.5, 1000.0 / np.maximum(plx, 1e-3), 1e6)
        rep = CartesianRepresentation((v * dist_pc[:, None]).T * u.pc)
        g = SkyCoord(rep, frame="icrs").transform_to(GCRS(obstime=t))
        out = g.cartesian.xyz.value.T
        out = np.ascontiguousarray(out / np.linalg.norm(out, axis=1, keepdims=True))
        self._apparent_cache = (self._apparent_cache + [(t, out)])[-4:]
        return out

    def forget_apparent(self):
        """Drop the apparent places kept for reuse: the next frames get theirs computed at their own times.

        Reuse within a minute makes a frame's places depend on which frames came before it; a job that
        must give the same result for a block of frames whatever ran before it calls this first.
        """
        self._apparent_cache = []

    # -- selections ---------------------------------------------------------------
    def select(self, keep) -> Catalog:
        """A new catalog with the rows ``keep`` (bool mask or indices)."""
        return Catalog(self.table[keep], self.mag_limit, self.merge_radius, self.source)

    def brighter(self, mag_limit) -> Catalog:
        """The stars with Hp <= ``mag_limit``."""
        cat = self.select(self.mag <= mag_limit)
        cat.mag_limit = min(self.mag_limit, float(mag_limit))
        return cat

    def merge(self, radius) -> Catalog:
        """Merge stars closer than ``radius`` (rad) into one entry, as an unresolving sensor sees them.

        Groups are linked pairs (friends of friends). An entry takes the
        flux-weighted mean direction of its group, the summed flux as its
        magnitude, and the HIP number, motion and parallax of its brightest
        member; ``n_merged`` counts the members. Magnitudes are Hp.
        """
        radius = float(radius)
        if not radius > 0:
            return self
        n = len(self)
        chord = 2.0 * math.sin(radius / 2.0)
        pairs = cKDTree(self.vectors).query_pairs(chord, output_type="ndarray")
        if len(pairs) == 0:
            cat = Catalog(self.table.copy(), self.mag_limit, radius, self.source)
            return cat
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        _, label = connected_components(graph, directed=False)
        flux = 10.0 ** (-0.4 * self.mag)
        # rows are sorted brightest first, so the first row of each label is its brightest member
        _, first = np.unique(label, return_index=True)
        first = np.sort(first)
        tot = np.bincount(label, weights=flux)
        wvec = np.stack([np.bincount(label, weights=flux * self.vectors[:, k]) for k in range(3)], axis=1)
        count = np.bincount(label)
        lab = label[first]
        vec = wvec[lab] / np.linalg.norm(wvec[lab], axis=1, keepdims=True)
        out = self.table[first]
        ra, dec = vector_to_radec(vec)
        merged = count[lab] > 1
        out["ra"] = np.where(merged, np.degrees(ra), out["ra"])
        out["dec"] = np.where(merged, np.degrees(dec), out["dec"])
        out["hp"] = (-2.5 * np.log10(tot[lab])).astype(np.float32)
        out["n_merged"] = count[lab].astype(np.int16)
        order = np.lexsort((np.asarray(out["hip"]), np.asarray(out["hp"])))
        return Catalog(out[order], self.mag_limit, radius, self.source)


def load_catalog(mag_limit=8.0, *, path=None, merge_radius=0.0) -> Catalog:
    """Load the bundled Hipparcos 2 catalog.

    Parameters
    ----------
    mag_limit : float
        Faintest Hipparcos magnitude Hp kept (the bundled file stops at 8).
    path : str or Path, optional
        Another catalog file in the same format (default the bundled one).
    merge_radius : float
        Merge stars closer than this (rad; see :meth:`Catalog.merge`).
        The magnitude limit applies after merging.

    Returns
    -------
    Catalog
    """
    try:
        mag_limit = float(mag_limit)
    except (TypeError, ValueError):
        raise ValueError(f"mag_limit must be a number, got {mag_limit!r}") from None
    if not math.isfinite(mag_limit):
        raise ValueError(f"mag_limit must be finite, got {mag_limit}")
    if path is None:
        path = Path(str(resources.files("startrack") / "data" / CATALOG_FILE))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"star catalog not found: {path} (rebuild with catalogs/build_catalog.py)")
    table = Table.read(path, hdu=1)
    table.meta.pop("EXTNAME", None)
    file_limit = float(table.meta.get("MAGLIM", np.max(table["hp"])))
    if "n_merged" not in table.colnames:
        table["n_merged"] = np.ones(len(table), np.int16)
    # merging can brighten a pair over the limit, so merge a little deeper than asked
    pre = table[np.asarray(table["hp"]) <= mag_limit + (0.75 if merge_radius > 0 else 0.0)]
    cat = Catalog(pre, min(mag_limit, file_limit), 0.0, path.name)
    if merge_radius > 0:
        cat = cat.merge(merge_radius)
    cat = cat.brighter(mag_limit)
    cat.mag_limit = min(mag_limit, file_limit)
    return cat
