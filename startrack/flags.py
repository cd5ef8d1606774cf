"""Every bit flag and status code startrack reports, in one table.

The values are module-level integer constants, so numba folds them into the
kernels that set them (``flags |= SATURATED``) and no bit literal appears
anywhere else; the dictionaries that tables carry in their metadata and
:func:`decode_flags` are built from the same constants.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FLAGS", "PHASOR_FLAGS", "BAD_FIT", "NO_POSITION", "decode_flags", "FIT_STATUS", "ID_MODES"]

# -- a fitted star (startrack.localize, column ``flags``) ----------------------------------------------------------
NOT_CONVERGED = 1  #: iteration limit reached: the estimate is not the MLE
EDGE = 2  #: ROI clipped by the image edge
SATURATED = 4  #: saturated pixels left out of the likelihood
MASKED = 8  #: masked or non-finite pixels left out of the likelihood
NO_FIT = 16  #: position off the image, too few usable pixels or no valid model: NaN results
BELOW_OFFSET = 32  #: pixels implausibly far below the dark offset (wrong offset?)
MOVED = 64  #: the fit left the central pixel by more than half the ROI: unreliable
BAD_START = 128  #: no positive signal for the CG start: started from the given position

#: Bit flags in the ``flags`` column of :func:`startrack.localize` (0 = clean fit).
FLAGS = {"not_converged": NOT_CONVERGED, "edge": EDGE, "saturated": SATURATED, "masked": MASKED, "no_fit": NO_FIT,
         "below_offset": BELOW_OFFSET, "moved": MOVED, "bad_start": BAD_START}
#: A position that is not a maximum-likelihood estimate one can use.
BAD_FIT = NO_FIT | MOVED | NOT_CONVERGED

# -- the fitter's per-star status (kernel output; the ``converged`` column is status == CONVERGED) -----------------
CONVERGED = 1  #: the Newton decrement fell below the tolerance
ITERATION_LIMIT = 2  #: max_iter reached first
BAD_MODEL = 3  #: the model mean is not positive on a used pixel at the start: no fit
#: Names of the fit status codes.
FIT_STATUS = {CONVERGED: "converged", ITERATION_LIMIT: "iteration limit", BAD_MODEL: "model mean not positive"}

# -- a line-signal position (startrack.microscope: ephasor, phasor, atca, track1d) ---------------------------------
WINDOW_CLIPPED = 1  #: the window reached the end of the signal and was narrowed: less precise
PEAK_AT_EDGE = 2  #: the peak is the first or last pixel: the spot may be off the sensor; NaN
NO_SIGNAL = 4  #: constant signal, or nothing above the baseline: NaN
NONFINITE = 8  #: NaN or inf in the signal: NaN

#: Bit flags of a line-signal position (0 = clean).
PHASOR_FLAGS = {"window_clipped": WINDOW_CLIPPED, "peak_at_edge": PEAK_AT_EDGE, "no_signal": NO_SIGNAL,
                "nonfinite": NONFINITE}
#: The line-signal flags that leave no position (NaN).
NO_POSITION = PEAK_AT_EDGE | NO_SIGNAL | NONFINITE

# -- star identification (startrack.sky.starid) -------------------------------------------------------------------
NOT_SOLVED = 0  #: identify kernel status: no attitude
SOLVED = 1  #: identify kernel status: verified attitude
TRACKING = 1  #: solved from the previous frame's attitude
LOST_IN_SPACE = 2  #: solved from star patterns alone
#: Names of the identification modes, as in ``Solution.mode``.
ID_MODES = {TRACKING: "tracking", LOST_IN_SPACE: "lost-in-space"}


def decode_flags(flags, table=FLAGS):
    """The names of the bits set in ``flags``: a list for one value, a list of lists for an array.

    Examples
    --------
    >>> decode_flags(EDGE | SATURATED)
    ['edge', 'saturated']
    >>> decode_flags([0, NO_FIT])
    [[], ['no_fit']]
    """
    arr = np.asarray(flags, dtype=np.int64)
    names = [[name for name, bit in table.items() if int(v) & bit] for v in arr.ravel()]
    return names[0] if arr.ndim == 0 else names
