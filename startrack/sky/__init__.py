"""The star tracker on the startrack core: positions -> star identification -> attitude.

- :mod:`~startrack.sky.camera` — :class:`Camera`, the pinhole + distortion model: pixel <-> unit vector.
- :mod:`~startrack.sky.catalog` — the bundled Hipparcos 2 catalog at apparent places.
- :mod:`~startrack.sky.starid` — **where stars are identified**: pattern database, lost-in-space, tracking, blind.
- :mod:`~startrack.sky.attitude` — :class:`Attitude`: weighted Wahba solution, QUEST covariance, WCS.
- :mod:`~startrack.sky.pipeline` — a frame (or a sequence) from pixels to attitude.
- :mod:`~startrack.sky.simulate` — what a camera sees of the catalog: simulated night-sky frames.

Names load on first use, so ``import startrack`` does not pay for the catalog and astropy's coordinates.
"""

import importlib as _importlib

_LAZY = {"Camera": "camera", "Attitude": "attitude", "Catalog": "catalog", "load_catalog": "catalog",
         "StarIdentifier": "starid", "Solution": "starid", "solve_frame": "pipeline", "solve_frames": "pipeline",
         "FrameResult": "pipeline"}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'startrack.sky' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
