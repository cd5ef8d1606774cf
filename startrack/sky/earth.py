"""A camera fixed to the ground: the Earth's rotation, the site and the mounting.

A ground-fixed camera's attitude is ``A(t) = M @ R(t)``: ``R(t)`` turns
apparent (GCRS) directions into the Earth-fixed ITRS frame at time ``t``
(precession, nutation, Earth rotation angle, polar motion: astropy's
GCRS -> ITRS transformation, offline) and ``M`` is the constant rotation
from ITRS to the camera, set by where the camera stands and how it is
mounted. :func:`earth_rotation` gives ``R(t)``; :class:`Site` and
:meth:`Site.mounting` give ``M`` for a camera pointed at an altitude and
azimuth.

Earth orientation comes from the tables bundled with ``astropy-iers-data``
(:func:`startrack.sky.catalog.offline_astropy`): past their end UT1 is
predicted, good to a fraction of a second over a night. Such an offset is a
constant rotation about the Earth's axis, which the mounting ``M`` absorbs
when it is fitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..validate import as_float, load_toml
from .catalog import offline_astropy, parse_time

__all__ = ["earth_rotation", "Site"]


def earth_rotation(times) -> np.ndarray:
    """Rotation matrices ``R`` (n, 3, 3) with ``v_itrs = R @ v_gcrs`` at each time.

    Parameters
    ----------
    times : astropy Time (scalar or array), or a sequence of ISO strings

    Returns
    -------
    (n, 3, 3) array
        One orthonormal matrix per time (n = 1 for a scalar time).
    """
    from astropy import units as u
    from astropy.coordinates import GCRS, ITRS, CartesianRepresentation
    from astropy.time import Time

    offline_astropy()
    t = times if isinstance(times, Time) else Time([parse_time(v) for v in np.atleast_1d(times)])
    t = t.reshape(-1) if t.shape else t.reshape(1)
    cols = []
    for axis in np.eye(3):
        rep = CartesianRepresentation(np.repeat(axis[:, None], len(t), axis=1) * u.one)
        cols.append(GCRS(rep, obstime=t).transform_to(ITRS(obstime=t)).cartesian.xyz.value.T)
    return np.stack(cols, axis=-1)


@dataclass(frozen=True)
class Site:
    """Where a ground-fixed camera stands (geodetic, WGS84).

    Parameters
    ----------
    latitude_deg, longitude_deg : float
        Geodetic latitude (north positive) and longitude (east positive), degrees.
    height_m : float
        Height above the ellipsoid (m); directions do not depend on it.

    Examples
    --------
    >>> site = Site(47.0, 8.0)
    >>> m = site.mounting()                        # a camera looking at the zenith, north image-up
    >>> bool(np.allclose(m[2], site.up))
    True
    """

    latitude_deg: float
    longitude_deg: float
    height_m: float = 0.0

    def __post_init__(self):
        lat = as_float(self.latitude_deg, "latitude_deg", unit="deg")
        if not -90.0 <= lat <= 90.0:
            raise ValueError(f"latitude_deg must be in [-90, 90], got {lat}")
        object.__setattr__(self, "latitude_deg", lat)
        object.__setattr__(self, "longitude_deg", as_float(self.longitude_deg, "longitude_deg", unit="deg"))
        object.__setattr__(self, "height_m", as_float(self.height_m, "height_m", unit="m"))

    @classmethod
    def from_dict(cls, table: dict, source: str = "site table") -> Site:
        """From a ``[site]`` table: ``latitude_deg``, ``longitude_deg``, optional ``height_m``."""
        unknown = set(table) - {"latitude_deg", "longitude_deg", "height_m"}
        if unknown:
            raise ValueError(f"{source}: unknown [site] key(s) {sorted(unknown)}; expected latitude_deg, "
                             "longitude_deg, height_m")
        for key in ("latitude_deg", "longitude_deg"):
            if key not in table:
                raise ValueError(f"{source}: [site] needs '{key}' (degrees)")
        return cls(table["latitude_deg"], table["longitude_deg"], table.get("height_m", 0.0))

    @classmethod
    def from_toml(cls, path) -> Site | None:
        """The ``[site]`` table of a camera TOML file, or None when it has none."""
        data = load_toml(path)
        return cls.from_dict(data["site"], source=str(path)) if "site" in data else None

    def to_toml(self) -> str:
        return (f"[site]\nlatitude_deg = {self.latitude_deg!r}\nlongitude_deg = {self.longitude_deg!r}\n"
                f"height_m = {self.height_m!r}\n")

    @property
    def up(self) -> np.ndarray:
        """Local vertical (ellipsoid normal) in ITRS."""
        lat, lon = math.radians(self.latitude_deg), math.radians(self.longitude_deg)
        return np.array([math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)])

    @property
    def north(self) -> np.ndarray:
        """Local horizontal towards north in ITRS."""
        lat, lon = math.radians(self.latitude_deg), math.radians(self.longitude_deg)
        return np.array([-math.sin(lat) * math.cos(lon), -math.sin(lat) * math.sin(lon), math.cos(lat)])

    @property
    def east(self) -> np.ndarray:
        lon = math.radians(self.longitude_deg)
        return np.array([-math.sin(lon), math.cos(lon), 0.0])

    def mounting(self, altitude_deg=90.0, azimuth_deg=0.0, roll_deg=0.0) -> np.ndarray:
        """ITRS -> camera rotation ``M`` (3, 3) of a camera pointed at (altitude, azimuth).

        Azimuth is from north towards east. The reference direction is
        north for a camera at the zenith and the zenith side of the sky
        otherwise; ``roll_deg`` is its position angle in the image, from
        image-up (camera -y) towards image-left (the sense of
        :attr:`startrack.sky.attitude.Attitude.roll`, whose reference is celestial north).
        """
        alt, az, roll = (math.radians(as_float(v, name, unit="deg")) for v, name in
                         ((altitude_deg, "altitude_deg"), (azimuth_deg, "azimuth_deg"), (roll_deg, "roll_deg")))
        horizontal = math.cos(az) * self.north + math.sin(az) * self.east
        b = math.cos(alt) * horizontal + math.sin(alt) * self.up
        ref = self.north if abs(math.cos(alt)) < 1e-9 else self.up
        ref0 = ref - (ref @ b) * b
        ref0 /= np.linalg.norm(ref0)
        left0 = np.cross(ref0, b)  # seen from inside the sphere, with ref0 up, this points left
        up = math.cos(roll) * ref0 - math.sin(roll) * left0
        left = math.cos(roll) * left0 + math.sin(roll) * ref0
        return np.array([-left, -up, b])
