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

from . import crlb, design, epsf, evaluate, simulate
from .camera import Camera
from .detect import centroid, detect
from .epsf import EPSF, build_epsf
from .localize import FLAGS, localize
from .pixel_epsf import PixelEPSF
from .psf import GaussianMixturePSF, GaussianPSF, PSFModel, parse_psf
from .sensor import Sensor

__version__ = "0.1.0"

__all__ = ["Sensor", "Camera", "GaussianPSF", "GaussianMixturePSF", "EPSF", "PixelEPSF", "PSFModel", "parse_psf",
           "detect", "centroid", "localize", "build_epsf", "FLAGS", "crlb", "design", "epsf", "simulate",
           "evaluate", "__version__"]
