"""Star identification: which catalog star is each detected star, and the camera's attitude.

- :class:`StarIdentifier` — lost-in-space from centroids alone (4-star
  patterns hashed by edge ratios, each candidate verified with a computed
  probability of a false match), tracking from a prior attitude, the focal
  length refined when only approximately known, and a blind mode for a
  field-of-view range; it returns a :class:`Solution` with the weighted
  attitude and its covariance.
- :func:`load_database` / :func:`build_database` — the pattern database,
  cached on disk.
- :mod:`startrack.starid.sky` — simulated night-sky frames from the catalog.
"""

from .database import PatternDatabase, build_database, cache_dir, field_ladder, load_database
from .solver import Solution, StarIdentifier

__all__ = ["StarIdentifier", "Solution", "PatternDatabase", "build_database", "load_database", "cache_dir",
           "field_ladder"]
