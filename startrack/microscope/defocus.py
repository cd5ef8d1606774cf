"""Defocused images of a sub-wavelength particle at one or more focal planes (scalar Fourier optics).

The particle is a point scatterer (or emitter) at lateral offset ``(dx, dy)`` px from the crop centre and at
axial position ``z`` (um); focal plane ``p`` sees it at defocus ``z - p``. Its field in the camera plane,
referred back to the object, is the pupil integral

    E(r) = sum_k  P(k) A(k) exp(2 pi i (k_z - n / lambda)(z - p)) exp(2 pi i k . (r - r0)) dk^2

over the circular pupil ``|k| <= NA / lambda`` (``k`` in cycles/um), with ``k_z = sqrt((n / lambda)^2 - |k|^2)``
the exact (not paraxial) defocus phase less its on-axis carrier ``n z / lambda``, and ``A = cos(theta)^(-1/2)`` the
aplanatic amplitude factor of a collecting objective (the inverse of Richards & Wolf's ``sqrt(cos theta)`` for
focusing). Removing the carrier is what makes the bright-field model a transmission image: with it, the
interference term would cycle every ``lambda / 2n`` like reflection interference.

- dark-field and fluorescence: ``I = |E|^2``, normalised so that the whole (unbounded) plane receives one
  photon at every defocus (Parseval); ``photons`` scales it.
- bright-field: ``I = I0 |1 + s E / E_0|^2`` with ``E_0`` the in-focus peak field and ``s`` the particle's complex
  scattering amplitude. A phase in ``s`` makes the contrast flip through focus, so bright-field tells above from
  below focus even with one plane; a purely absorbing particle (real negative ``s``) does not.

The sum is evaluated as two small complex matrix products per image (a matrix DFT from the sampled pupil to
exactly the output samples, so neither the pupil nor the image is constrained to an FFT grid), at 2x the camera
sampling; the 2x2 sub-samples are averaged into each pixel. numpy's BLAS does the work: about half a
millisecond per 32x32 pair on one core. The products are small, so on a CPU shared with other work a
multi-threaded OpenBLAS can spend far longer waiting for its threads than computing (15x measured at load 4):
set ``OPENBLAS_NUM_THREADS=1`` (or use ``threadpoolctl``) when generating training sets beside other jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..validate import as_float, as_int

__all__ = ["Optics", "MODES", "DEFAULT_PHOTONS", "DEFAULT_BACKGROUND", "DEFAULT_READ_NOISE", "DEFAULT_SCATTERING",
           "render", "simulate_pairs", "random_z"]

#: Image formation models.
MODES = ("darkfield", "fluorescence", "brightfield")

#: Default detected photons per plane (dark-field, fluorescence) or illumination per pixel (bright-field, e-).
DEFAULT_PHOTONS = {"darkfield": 20000.0, "fluorescence": 5000.0, "brightfield": 3000.0}
#: Default background (e-/px): stray light in dark-field, out-of-focus fluorescence; none added in bright-field
#: (the illumination *is* the background there).
DEFAULT_BACKGROUND = {"darkfield": 20.0, "fluorescence": 10.0, "brightfield": 0.0}
#: Default Gaussian read noise (e- RMS), a scientific CMOS camera.
DEFAULT_READ_NOISE = 1.6
#: Default bright-field scattering amplitude: 30 % of the in-focus field, mostly phase (a dielectric particle
#: scatters in quadrature), partly absorbing.
DEFAULT_SCATTERING = 0.3 * np.exp(0.6j * np.pi)

_CHUNK = 256  # pairs per batch: bounds the (n, planes, M, M) complex pupil array to a few tens of MB


@dataclass(frozen=True)
class Optics:
    """Microscope and camera geometry of a dual-plane (or multi-plane) axial measurement.

    Parameters
    ----------
    na : float
        Numerical aperture of the objective.
    n : float
        Refractive index of the immersion and specimen medium (matched, so no spherical aberration).
    wavelength_um : float
        Vacuum wavelength (um).
    pixel_um : float
        Camera pixel size referred to the object plane (um).
    size : int
        Crop width and height (px).
    planes_um : tuple of float
        Focal-plane positions (um); channel ``i`` images the particle at defocus ``z - planes_um[i]``.
    aplanatic : bool
        Apply the aplanatic amplitude factor ``cos(theta)^(-1/2)``; False gives a uniform pupil (Gibson & Lanni's
        scalar model with matched indices).
    pupil_samples : int
        Pupil samples across its diameter. 48 keeps the matrix DFT's period (``lambda / (2 NA)`` x 48, 16.5 um at
        the defaults) far beyond the crop plus the defocus blur.
    """

    na: float = 0.8
    n: float = 1.5
    wavelength_um: float = 0.55
    pixel_um: float = 0.1
    size: int = 32
    planes_um: tuple = (-0.5, 0.5)
    aplanatic: bool = True
    pupil_samples: int = 48

    def __post_init__(self):
        if not 0 < self.na < self.n:
            raise ValueError(f"na must be in (0, n = {self.n}), got {self.na}")
        for name in ("wavelength_um", "pixel_um"):
            as_float(getattr(self, name), name, positive=True, unit="micrometres")
        as_int(self.size, "size", minimum=4)
        planes = tuple(float(p) for p in np.atleast_1d(self.planes_um))
        if not planes or not np.all(np.isfinite(planes)):
            raise ValueError(f"planes_um must be one or more finite focal-plane positions, got {self.planes_um}")
        object.__setattr__(self, "planes_um", planes)

    def with_planes(self, *planes_um: float) -> Optics:
        """The same optics imaged at other focal planes (um), e.g. one plane for a single-plane baseline."""
        return replace(self, planes_um=tuple(planes_um))

    @property
    def n_planes(self) -> int:
        return len(self.planes_um)

    def to_dict(self) -> dict:
        """Plain-type dict (JSON-ready)."""
        return {"na": self.na, "n": self.n, "wavelength_um": self.wavelength_um, "pixel_um": self.pixel_um,
                "size": int(self.size), "planes_um": list(self.planes_um), "aplanatic": bool(self.aplanatic),
                "pupil_samples": int(self.pupil_samples)}

    @classmethod
    def from_dict(cls, d: dict) -> Optics:
        return cls(**{k: (tuple(v) if k == "planes_um" else v) for k, v in d.items()})


def _pupil(optics: Optics):
    """Pupil sample frequencies (cycles/um), amplitude ``P A dk^2`` and ``k_z - n / lambda`` on the disc."""
    kmax = optics.na / optics.wavelength_um
    m = optics.pupil_samples
    dk = 2 * kmax / m
    k = -kmax + (np.arange(m) + 0.5) * dk
    kx, ky = np.meshgrid(k, k)
    k2 = kx ** 2 + ky ** 2
    inside = k2 <= kmax ** 2
    kn = optics.n / optics.wavelength_um
    kz = np.sqrt(np.maximum(kn ** 2 - k2, 0.0))
    amp = inside * dk * dk
    if optics.aplanatic:
        # only on the disc: the square's corners have kz = 0 when NA > n / sqrt(2), and 0 / 0 would be NaN
        amp = np.divide(amp, np.sqrt(kz / kn), out=np.zeros_like(amp), where=inside)
    return k, amp, np.where(inside, kz - kn, 0.0)


def _fields(z, planes, lateral, optics: Optics, pupil_samples):
    """Complex field at the 2x sub-samples of the crop, shape (n, planes, 2 size, 2 size), one chunk.

    ``pupil_samples`` is :func:`_pupil` of ``optics``, computed once per call of :func:`render`.
    """
    k, amp, dkz = pupil_samples
    s = int(optics.size)
    centre = (s - 1) / 2
    # Sub-sample centres (px): the two halves of every pixel, i.e. j -/+ 0.25.
    u = (np.arange(2 * s) + 0.5) / 2 - 0.5 - centre
    two_pi_i = 2j * np.pi
    ex = np.exp(two_pi_i * ((u[None, :] - lateral[:, 0:1]) * optics.pixel_um)[:, :, None] * k[None, None, :])
    ey = np.exp(two_pi_i * ((u[None, :] - lateral[:, 1:2]) * optics.pixel_um)[:, :, None] * k[None, None, :])
    defocus = z[:, None] - np.asarray(planes)[None, :]
    pupil = amp * np.exp(two_pi_i * defocus[:, :, None, None] * dkz)
    n, m = z.size, k.size
    # Both products as single contiguous batched GEMMs (broadcast operands would leave BLAS for a slow loop):
    # E_p[y, x] = sum_{ky, kx} ey[y, ky] pupil_p[ky, kx] ex[x, kx], planes side by side along kx.
    wide = np.ascontiguousarray(np.moveaxis(pupil.astype(np.complex64), 1, 2).reshape(n, m, -1))
    t = (ey.astype(np.complex64) @ wide).reshape(n, -1, m)
    e = t @ np.ascontiguousarray(np.swapaxes(ex.astype(np.complex64), 1, 2))
    return np.moveaxis(e.reshape(n, 2 * s, len(planes), 2 * s), 2, 1)


def _as_z(z_um):
    z = np.atleast_1d(np.asarray(z_um, dtype=float))
    if z.ndim != 1 or not np.all(np.isfinite(z)):
        raise ValueError("z_um must be a finite number or 1-D array of axial positions (um)")
    return z


def _as_lateral(lateral_px, n, rng):
    if lateral_px is None:
        return np.random.default_rng(rng).uniform(-0.5, 0.5, size=(n, 2))
    lat = np.asarray(lateral_px, dtype=float)
    if lat.shape == (2,):
        lat = np.broadcast_to(lat, (n, 2))
    if lat.shape != (n, 2) or not np.all(np.isfinite(lat)):
        raise ValueError(f"lateral_px must be (x, y) or an ({n}, 2) array of finite offsets (px), got shape "
                         f"{np.shape(lateral_px)}")
    return lat


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def render(z_um, optics: Optics = Optics(), *, mode: str = "darkfield", lateral_px=None,
           scattering: complex = DEFAULT_SCATTERING, rng=None) -> np.ndarray:
    """Noise-free defocused images of a particle at each focal plane.

    Parameters
    ----------
    z_um : float or array_like, shape (n,)
        Axial particle positions (um), same frame as ``optics.planes_um``.
    optics : Optics
        Pupil, pixel, crop size and focal planes.
    mode : {'darkfield', 'fluorescence', 'brightfield'}
        Image formation (see the module docstring).
    lateral_px : array_like, shape (2,) or (n, 2), optional
        Particle offset (x, y) from the crop centre ``((size - 1) / 2, (size - 1) / 2)``, px. Default: uniform
        in +-0.5 px (drawn from ``rng``).
    scattering : complex
        Bright-field scattering amplitude ``s`` relative to the in-focus peak field.
    rng : int or numpy.random.Generator, optional
        Seed for the default lateral offsets.

    Returns
    -------
    ndarray, shape (n, n_planes, size, size), float64
        Dark-field/fluorescence: the fraction of the particle's detected photons on each pixel (a plane sums to
        <= 1: the defocused light that falls outside the crop is lost). Bright-field: intensity in units of the
        illumination ``I0`` (1 far from the particle).
    """
    _check_mode(mode)
    z = _as_z(z_um)
    lateral = _as_lateral(lateral_px, z.size, rng)
    s = int(optics.size)
    out = np.empty((z.size, optics.n_planes, s, s))
    sampled = _pupil(optics)
    amp = sampled[1]
    if mode == "brightfield":
        e0 = amp.sum()  # in-focus field at the particle: every pupil sample in phase
    else:
        # Parseval: the integral of |E|^2 over the plane is sum |amp|^2 / dk^2; a pixel's share is its mean
        # |E|^2 times its area.
        dk2 = (2 * optics.na / optics.wavelength_um / optics.pupil_samples) ** 2
        scale = optics.pixel_um ** 2 * dk2 / np.sum(amp ** 2)
    for lo in range(0, z.size, _CHUNK):
        sl = slice(lo, lo + _CHUNK)
        field = _fields(z[sl], optics.planes_um, lateral[sl], optics, sampled)
        if mode == "brightfield":
            sub = np.abs(1 + (scattering / e0) * field) ** 2
        else:
            sub = (field.real ** 2 + field.imag ** 2) * scale
        out[sl] = sub.reshape(-1, optics.n_planes, s, 2, s, 2).mean(axis=(3, 5))
    return out


def simulate_pairs(z_um, optics: Optics = Optics(), *, mode: str = "darkfield", lateral_px=None,
                   photons: float | None = None, background: float | None = None, read_noise: float | None = None,
                   scattering: complex = DEFAULT_SCATTERING, noise: bool = True, rng=None) -> np.ndarray:
    """Camera images (photo-electrons) of a particle at each focal plane, with shot and read noise.

    Parameters
    ----------
    z_um, optics, mode, lateral_px, scattering
        As for :func:`render`.
    photons : float, optional
        Dark-field/fluorescence: detected photons per plane (the defocused light that misses the crop is lost);
        bright-field: illumination ``I0`` (e-/px). Default :data:`DEFAULT_PHOTONS` of the mode.
    background : float, optional
        Uniform background (e-/px), default :data:`DEFAULT_BACKGROUND` of the mode.
    read_noise : float, optional
        Gaussian read noise (e- RMS), default :data:`DEFAULT_READ_NOISE`.
    noise : bool
        False returns the expected image (photons x render + background).
    rng : int or numpy.random.Generator, optional
        Seed for lateral offsets and noise.

    Returns
    -------
    ndarray, shape (n, n_planes, size, size), float32
        Pixel values in photo-electrons.
    """
    _check_mode(mode)
    rng = np.random.default_rng(rng)
    photons = DEFAULT_PHOTONS[mode] if photons is None else float(photons)
    background = DEFAULT_BACKGROUND[mode] if background is None else float(background)
    read_noise = DEFAULT_READ_NOISE if read_noise is None else float(read_noise)
    for name, value in (("photons", photons), ("background", background), ("read_noise", read_noise)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    mean = photons * render(z_um, optics, mode=mode, lateral_px=lateral_px, scattering=scattering, rng=rng)
    mean += background
    if not noise:
        return mean.astype(np.float32)
    img = rng.poisson(mean).astype(np.float32)
    if read_noise > 0:
        img += rng.normal(0.0, read_noise, size=img.shape).astype(np.float32)
    return img


def random_z(n: int, z_range=(-2.0, 2.0), rng=None) -> np.ndarray:
    """``n`` axial positions drawn uniformly from ``z_range`` (um)."""
    lo, hi = map(float, z_range)
    if not hi > lo:
        raise ValueError(f"z_range must be (low, high) with high > low, got {z_range}")
    return np.random.default_rng(rng).uniform(lo, hi, size=int(n))
