"""Lab calibrations of a star sensor: photon transfer, turntable per-pixel ePSF, turntable intrinsics.

Each calibration reads a dataset folder (frames plus ``manifest.csv``,
:mod:`.dataset`) or a table, and :mod:`.synthetic` writes realistic datasets
in the same formats. The command line wraps them as ``startrack calib
ptc|turntable-epsf|intrinsics`` and ``startrack simulate ptc|turntable|intrinsics``.

- :mod:`.ptc` -- EMVA 1288 photon transfer: gain, offset, dark variance, read
  noise, saturation, linearity -> :class:`startrack.Sensor`.
- :mod:`.turntable` -- per-pixel ePSF from a turntable scan
  (:class:`startrack.PixelEPSF`) and its evaluation against the precision limit.
- :mod:`.intrinsics` -- focal length, principal point, distortion and mounting
  from spot centroids over a turntable grid -> :class:`startrack.sky.camera.Camera`.
"""

from .intrinsics import Intrinsics, fit_intrinsics
from .ptc import PhotonTransfer, measure_ptc, photon_transfer
from .turntable import TurntableCalibration, calibrate_turntable, evaluate_turntable, shared_epsf

__all__ = ["photon_transfer", "measure_ptc", "PhotonTransfer", "calibrate_turntable", "evaluate_turntable",
           "shared_epsf", "TurntableCalibration", "fit_intrinsics", "Intrinsics"]
