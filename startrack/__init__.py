"""startrack: star positions at the Cramér–Rao bound and attitude from small-PSF star sensors.

The pipeline runs left to right: :func:`detect` -> centre of gravity ->
:func:`localize` (Poisson MLE on a PSF model) -> star identification ->
attitude. :mod:`startrack.crlb` gives the precision limits the fits reach.
"""

import os as _os

# numba's OpenMP threads otherwise spin for milliseconds after every parallel
# kernel: with many short batches (one frame, a few hundred stars) that burns
# an order of magnitude more CPU than the work and starves other processes.
# Must be set before the OpenMP runtime loads; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_os.environ.setdefault("KMP_BLOCKTIME", "0")

__version__ = "0.1.0"

from . import _cache  # before any kernel is defined: it sets where they are cached

_cache.configure_numba(__version__)

import importlib as _importlib

from . import _aliases

_aliases.install()

from . import crlb, evaluate, simulate
from .detect import centroid, detect
from .flags import FLAGS, decode_flags
from .localize import localize
from .measure import measure_stars
from .psf import EPSF, GaussianMixturePSF, GaussianPSF, PixelEPSF, PSFModel, parse_psf
from .sensor import Sensor
from .sky.camera import Camera

# Loaded on first use: they pull in scipy.ndimage, .interpolate and .optimize, a third of
# a second that every `startrack localize` run would otherwise pay before its first fit.
_LAZY = {"build_epsf": "epsf", "epsf": None, "design": None}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'startrack' has no attribute {name!r}")
    module = _importlib.import_module(f".{_LAZY[name] or name}", __name__)
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__all__ = ["Sensor", "Camera", "GaussianPSF", "GaussianMixturePSF", "EPSF", "PixelEPSF", "PSFModel", "parse_psf",
           "detect", "centroid", "localize", "measure_stars", "build_epsf", "FLAGS", "decode_flags", "crlb", "design",
           "epsf", "simulate", "evaluate", "__version__"]
