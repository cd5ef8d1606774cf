"""EMVA 1288 sensor model: gain, offset, dark variance, read noise, saturation.

A raw pixel value ``P`` (DN) is ``s0 + K * (e_light + e_dark + e_read)`` with
``e_light ~ Poisson(signal + background)``, ``e_dark ~ Poisson(dark_var)`` and
``e_read ~ Normal(0, read_noise^2)``. The *fluctuating electronic signal*
``(P - s0) / K`` is then Poisson with mean ``signal + background + dark_var``
(plus the read-noise variance, folded in with the shifted-Poisson
approximation used for sCMOS cameras).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .validate import as_float, toml_table

__all__ = ["Sensor", "as_sensor"]


@dataclass(frozen=True)
class Sensor:
    """Pixel response of a linear camera (EMVA 1288).

    Parameters
    ----------
    gain : float
        System gain K in DN per photo-electron (DN/e-).
    offset : float
        Dark offset s0 in DN: the value a pixel reads with no light and no
        thermally generated electrons.
    dark_var : float
        Variance sd2 of the Poisson part of the dark signal, in e-^2 (equal to
        its mean in e-, so it also raises the pixel's expected signal).
    read_noise : float, optional
        Standard deviation of Gaussian read noise in e-. Default 0.
    saturation : float, optional
        Pixel value in DN at and above which a pixel is saturated and carries
        no usable information. ``None`` means no saturation.

    Examples
    --------
    >>> s = Sensor(gain=0.2, offset=37.0, dark_var=25.0)
    >>> float(s.to_electrons(137.0))
    500.0
    """

    gain: float
    offset: float = 0.0
    dark_var: float = 0.0
    read_noise: float = 0.0
    saturation: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "gain", as_float(self.gain, "gain", positive=True))
        offset = as_float(self.offset, "offset", unit="DN")
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "dark_var", as_float(self.dark_var, "dark_var", nonnegative=True))
        object.__setattr__(self, "read_noise", as_float(self.read_noise, "read_noise", nonnegative=True))
        if self.saturation is not None:
            sat = as_float(self.saturation, "saturation", positive=True)
            if sat <= offset:
                raise ValueError(f"saturation ({sat} DN) must exceed the offset ({offset} DN)")
            object.__setattr__(self, "saturation", sat)

    # -- conversions -----------------------------------------------------
    @property
    def noise_floor(self) -> float:
        """Variance in e-^2 a dark pixel adds to the Poisson mean: ``dark_var + read_noise^2``."""
        return self.dark_var + self.read_noise**2

    def to_electrons(self, dn):
        """Raw pixel values (DN) -> fluctuating electronic signal ``(P - s0)/K`` in e-."""
        return (np.asarray(dn, dtype=float) - self.offset) / self.gain

    def to_dn(self, electrons):
        """Electrons (light + dark) -> raw pixel value ``s0 + K e`` in DN (not rounded)."""
        return self.offset + self.gain * np.asarray(electrons, dtype=float)

    def poisson_data(self, dn):
        """Pixel values (DN) -> the shifted-Poisson datum ``(P - s0)/K + read_noise^2`` (e-).

        Its model mean is :meth:`poisson_mean`; this is what the likelihood uses.
        """
        return self.to_electrons(dn) + self.read_noise**2

    def poisson_mean(self, signal, background=0.0):
        """Expected shifted-Poisson datum (e-) for ``signal`` e- of light plus ``background`` e-/pixel."""
        return np.asarray(signal, dtype=float) + background + self.noise_floor

    def mean_dn(self, signal, background=0.0):
        """Expected pixel value in DN for ``signal`` e- of starlight and ``background`` e- of sky."""
        return self.offset + self.gain * (np.asarray(signal, dtype=float) + background + self.dark_var)

    def variance_dn(self, signal, background=0.0, quantization=True):
        """Expected pixel variance in DN^2 (shot + dark + read noise, and 1/12 DN^2 quantisation)."""
        var_e = np.asarray(signal, dtype=float) + background + self.noise_floor
        return self.gain**2 * var_e + (1.0 / 12.0 if quantization else 0.0)

    def saturated(self, dn):
        """Boolean mask of pixels at or above saturation (all False when unset)."""
        dn = np.asarray(dn)
        if self.saturation is None:
            return np.zeros(dn.shape, dtype=bool)
        return dn >= self.saturation

    # -- I/O ---------------------------------------------------------------
    @classmethod
    def from_toml(cls, path) -> Sensor:
        """Load the ``[sensor]`` table of a camera TOML file.

        Keys: ``gain`` (DN/e-, required), ``offset`` (DN), ``dark_var`` (e-^2),
        ``read_noise`` (e-), ``saturation`` (DN).
        """
        return cls.from_dict(toml_table(path, "sensor", "gain, offset, dark_var"), source=str(path))

    @classmethod
    def from_dict(cls, table: dict, source: str = "sensor table") -> Sensor:
        known = {"gain", "offset", "dark_var", "read_noise", "saturation"}
        unknown = set(table) - known
        if unknown:
            raise ValueError(f"{source}: unknown [sensor] key(s) {sorted(unknown)}; expected {sorted(known)}")
        if "gain" not in table:
            raise ValueError(f"{source}: [sensor] needs 'gain' (DN/e-)")
        return cls(**table)

    def to_toml(self) -> str:
        """The ``[sensor]`` table as TOML text."""
        lines = ["[sensor]"]
        for key, value in asdict(self).items():
            if value is not None:
                lines.append(f"{key} = {float(value)!r}")
        return "\n".join(lines) + "\n"


def as_sensor(sensor, name="sensor") -> Sensor:
    """``sensor`` if it is a :class:`Sensor`; None means a frame in photo-electrons (gain 1, no offset or dark
    noise)."""
    if sensor is None:
        return Sensor(gain=1.0)
    if not isinstance(sensor, Sensor):
        raise ValueError(f"{name} must be a startrack.Sensor, got {type(sensor).__name__}")
    return sensor
