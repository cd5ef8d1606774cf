"""Argument rules, one per kind of argument, shared by every public function.

Each rule takes the value and the parameter's name, returns the value in the
form the code uses (a contiguous float64 frame, an ``int``, a pair of
sigmas...) and otherwise raises a one-line ``ValueError`` that names the
parameter and says what it needs. One rule per kind means one meaning: an
integer argument accepts Python and numpy integers and integral floats
(``roi=7.0`` is 7) everywhere, and rejects booleans and fractions everywhere.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["as_image", "as_frame", "as_stack", "as_stamps", "as_positions", "as_mask", "roi_shape", "as_int",
           "as_float", "as_sigma_pair", "one_of", "load_toml", "toml_table"]


def _numeric_array(value, name):
    arr = np.asarray(value)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real-valued, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    return arr


def as_image(image, name="image") -> np.ndarray:
    """One 2-D frame as contiguous float64 (no copy when it already is)."""
    arr = _numeric_array(image, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (one frame), got {arr.ndim}-D with shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def as_frame(image, name="image") -> np.ndarray:
    """One 2-D frame in its own real dtype (uint8, uint16, float32 ...), contiguous, no copy when it already is."""
    arr = _numeric_array(image, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (one frame), got {arr.ndim}-D with shape {arr.shape}")
    return np.ascontiguousarray(arr)


def as_stack(stack, name="stack", *, min_size=1) -> np.ndarray:
    """One 2-D cut-out or an (n, ny, nx) stack of them as contiguous float64 (n, ny, nx)."""
    arr = _numeric_array(stack, name)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be one cut-out (ny, nx) or a stack (n, ny, nx), got shape {arr.shape}")
    arr = arr.reshape((-1,) + arr.shape[-2:])
    if min(arr.shape[1:]) < min_size:
        raise ValueError(f"{name} cut-outs must be at least {min_size}x{min_size} px, got {arr.shape[1:]}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def as_stamps(image, n, origins=None, name="image") -> tuple[np.ndarray, np.ndarray, bool]:
    """A frame, or a stack of one cut-out ("stamp") per star placed in a frame by its ``origins``.

    A 2-D frame is returned as a stack of one (a view) at origin (0, 0), and
    takes no ``origins``. An (n, ny, nx) stack needs one star per stamp
    (``n`` stars); ``origins`` (n, 2) integers give the frame (column, row)
    of each stamp's pixel [0, 0] (default all zeros: stamp coordinates).
    Returns the (m, ny, nx) float64 stack, the (m, 2) int64 origins and
    whether ``image`` was a stack.
    """
    arr = _numeric_array(image, name)
    if arr.ndim == 2:
        if origins is not None:
            raise ValueError(f"origins place the stamps of a stack (n, ny, nx); {name} is one frame {arr.shape}")
        return np.ascontiguousarray(arr, dtype=np.float64)[None], np.zeros((1, 2), np.int64), False
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 2-D frame or a stack of stamps (n, ny, nx), got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"{name} must be a 2-D frame or a stack of one stamp per position: {len(arr)} stamps "
                         f"for {n} positions")
    if origins is None:
        org = np.zeros((n, 2), np.int64)
    else:
        org = np.asarray(origins)
        if org.ndim == 1 and org.size == 2 and n == 1:
            org = org[None]
        if org.shape != (n, 2) or org.dtype == bool or not np.issubdtype(org.dtype, np.number):
            raise ValueError(f"origins must be an ({n}, 2) array of integer (column, row), one per stamp, "
                             f"got shape {org.shape} of {org.dtype}")
        if not np.all(np.isfinite(org)) or np.any(org != np.floor(org)):
            raise ValueError("origins must be integers (the frame column and row of each stamp's pixel [0, 0])")
        org = org.astype(np.int64)
    return np.ascontiguousarray(arr, dtype=np.float64), np.ascontiguousarray(org), True


def as_positions(positions, name="positions") -> np.ndarray:
    """(n, 2) float array of (x, y) from an array or a Table with x_cg/y_cg (or x/y) columns."""
    colnames = getattr(positions, "colnames", None)
    if colnames is not None:
        for cx, cy in (("x_cg", "y_cg"), ("x", "y"), ("xcentroid", "ycentroid")):
            if cx in colnames and cy in colnames:
                xy = np.column_stack([np.asarray(positions[cx], float), np.asarray(positions[cy], float)])
                break
        else:
            raise ValueError(f"{name} table needs columns x_cg, y_cg (or x, y); it has {colnames}")
    else:
        try:
            xy = np.asarray(positions, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an (n, 2) array of (x, y) numbers") from None
        if xy.ndim == 1 and xy.size == 2:
            xy = xy[None, :]
        if xy.size == 0:
            xy = xy.reshape(0, 2)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"{name} must be an (n, 2) array of (x, y), got shape {xy.shape}")
    return np.ascontiguousarray(xy.reshape(-1, 2))


def as_mask(mask, shape, name="mask") -> np.ndarray | None:
    """A boolean mask of the frame's ``shape`` (True = ignore the pixel), or None."""
    if mask is None:
        return None
    arr = np.asarray(mask, dtype=bool)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} shape {arr.shape} does not match the image shape {tuple(shape)}")
    return arr


def as_int(value, name, *, minimum=None, maximum=None, odd=False) -> int:
    """An integer (integral floats accepted, booleans not) within ``[minimum, maximum]``, odd if asked."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if not math.isfinite(number) or number != math.floor(number):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    out = int(number)
    if (minimum is not None and out < minimum) or (maximum is not None and out > maximum) or (odd and out % 2 == 0):
        bounds = (f" from {minimum} to {maximum}" if minimum is not None and maximum is not None
                  else f" >= {minimum}" if minimum is not None else f" <= {maximum}" if maximum is not None else "")
        raise ValueError(f"{name} must be {'an odd' if odd else 'an'} integer{bounds}, got {value!r}")
    return out


def as_float(value, name, *, positive=False, nonnegative=False, unit="") -> float:
    """A finite real number (positive or non-negative if asked); ``unit`` only words the message."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    what = "a positive" if positive else "a non-negative" if nonnegative else "a finite"
    if not math.isfinite(out) or (positive and out <= 0) or (nonnegative and out < 0):
        raise ValueError(f"{name} must be {what} number{' of ' + unit if unit else ''}, got {value!r}")
    return out


def as_sigma_pair(sigma, name="sigma") -> tuple[float, float]:
    """``(sigma_x, sigma_y)`` in pixels from one positive number or a pair of them."""
    try:
        s = [float(v) for v in np.atleast_1d(np.asarray(sigma, dtype=float)).ravel()]
    except (TypeError, ValueError):
        s = []
    if isinstance(sigma, (bool, np.bool_)) or len(s) not in (1, 2) or not all(math.isfinite(v) and v > 0 for v in s):
        raise ValueError(f"{name} must be a positive number of pixels or a pair (sigma_x, sigma_y), got {sigma!r}")
    return (s[0], s[-1])


def roi_shape(roi, name="roi") -> tuple[int, int]:
    """``(ny, nx)`` of a window given as one width >= 2 (square) or as a pair (rows, columns) of positive integers."""
    if isinstance(roi, (tuple, list, np.ndarray)) and np.ndim(roi) == 1:
        if len(roi) != 2:
            raise ValueError(f"{name} must be a width >= 2 or a pair (ny, nx) of positive integers, got {roi!r}")
        ny, nx = (as_int(v, name, minimum=1) for v in roi)
        if ny * nx < 2:
            raise ValueError(f"{name} must hold at least 2 pixels, got {roi!r}")
        return ny, nx
    width = as_int(roi, name, minimum=2)
    return width, width


def one_of(value, name, options):
    """``value`` if it is one of ``options``, else a message listing them."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(repr(o) for o in options)}; got {value!r}")
    return value


def load_toml(path, what="camera file") -> dict:
    """A TOML file as a dict; a missing file is ``FileNotFoundError``, a syntax error a one-line ``ValueError``."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a {what}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None


def toml_table(path, table, keys="") -> dict:
    """The ``[table]`` of a TOML file; its absence is a one-line ``ValueError`` naming the expected ``keys``."""
    data = load_toml(path)
    if table not in data:
        raise ValueError(f"{path}: no [{table}] table" + (f" ({keys})" if keys else ""))
    return data[table]
