"""Microscope mode: particle tracking and localisation on the startrack core.

Line-sensor drift tracking (:func:`ephasor`, :func:`track1d`), fast 2-D
estimators (:func:`phasor_2d`, :func:`fluoro_bancroft`) and the fits they are
measured against: :func:`gauss_lsq` (least squares, scipy) and the core's
Poisson MLE at the Cramér–Rao bound (:func:`gauss_mle`, :func:`mle_1d`).
Axial position from two defocused focal planes: :class:`AxialLocalizer` (a
small CNN through ONNX, trained by :func:`train_axial` on the defocus
simulator or by :func:`train_from_stack` on a calibration z-stack) and the
model-based :class:`LibraryMatcher`.
"""

from .axial import AxialLocalizer, LibraryMatcher, train_from_stack
from .axial import train as train_axial
from .bancroft import fluoro_bancroft
from .gaussfit import gauss_lsq, gauss_mle
from .phasor import OPTIMAL_WINDOW, PHASOR_FLAGS, atca, ephasor, phasor, phasor_2d
from .spots import localize_spots, simulate_rois
from .track import crlb_1d, mle_1d, simulate_signals, step_precision, track1d

__all__ = ["ephasor", "phasor", "atca", "phasor_2d", "fluoro_bancroft", "gauss_lsq", "gauss_mle", "mle_1d",
           "crlb_1d", "track1d", "step_precision", "simulate_signals", "simulate_rois", "localize_spots",
           "PHASOR_FLAGS", "OPTIMAL_WINDOW", "AxialLocalizer", "LibraryMatcher", "train_axial", "train_from_stack"]
