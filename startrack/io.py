"""Reading frames and writing tables.

Frames: FITS (astropy), TIFF (tifffile when installed, else OpenCV), PNG and
JPEG (OpenCV; colour is converted to luminance) and NPY. Arrays of any
dimension (stacks, line-sensor readouts): NPY and multi-page TIFF. Tables:
ECSV by default, FITS, CSV or Parquet by extension.
"""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

__all__ = ["read_frame", "read_frames", "read_array", "write_array", "read_signals", "write_table", "read_table",
           "sample_path", "FRAME_SUFFIXES"]

FRAME_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fz", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suf in (".fits.gz", ".fits.fz"):
        if name.endswith(suf):
            return suf
    return path.suffix.lower()


def read_frame(path):
    """Read one frame as a 2-D float64 array plus its metadata.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    data : 2-D ndarray (float64)
        Pixel values as stored (DN). Colour images become luminance
        (ITU-R BT.601 weights, as OpenCV's grey conversion).
    meta : dict
        ``path``, ``dtype`` (as stored), ``bit_depth`` and, for FITS, the
        ``header`` (with ``DATE-OBS`` when present).

    Raises
    ------
    FileNotFoundError, ValueError
        With a one-line message naming the file when it is missing, corrupt,
        empty or not a single 2-D frame.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suf = _suffix(path)
    meta = {"path": str(path)}
    try:
        if suf in (".fits", ".fit", ".fts", ".fits.gz", ".fz", ".fits.fz"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a corrupt header becomes the one-line error below
                with fits.open(path, memmap=False) as hdul:
                    hdu = next((h for h in hdul if h.data is not None and getattr(h.data, "ndim", 0) >= 2), None)
                    if hdu is None:
                        raise ValueError("no image data in any HDU")
                    data = np.asarray(hdu.data)
                    meta["header"] = hdu.header.copy()
        elif suf == ".npy":
            data = np.load(path, allow_pickle=False)
        elif suf in (".tif", ".tiff"):
            data = _read_tiff(path)
        elif suf in (".png", ".jpg", ".jpeg"):
            data = _read_cv2(path)
        else:
            raise ValueError(f"unknown frame format {suf!r}; use one of {', '.join(FRAME_SUFFIXES)}")
    except (ValueError, OSError, EOFError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: cannot read frame ({msg})") from None
    meta["dtype"] = str(data.dtype)
    if data.ndim == 3 and data.shape[-1] in (3, 4) and suf in (".npy", ".tif", ".tiff"):
        data = _luminance(data[..., :3], bgr=False)
    if data.ndim != 2:
        raise ValueError(f"{path}: expected one 2-D frame, got an array of shape {data.shape}")
    if data.size == 0:
        raise ValueError(f"{path}: the frame is empty")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ValueError(f"{path}: pixel type {data.dtype} is not a real number")
    meta["bit_depth"] = int(np.dtype(data.dtype).itemsize * 8) if np.issubdtype(data.dtype, np.integer) else None
    return np.ascontiguousarray(data, dtype=np.float64), meta


def _luminance(rgb, bgr):
    w = np.array([0.114, 0.587, 0.299]) if bgr else np.array([0.299, 0.587, 0.114])
    return rgb.astype(np.float64) @ w


def _read_cv2(path):
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if data is None:
        raise ValueError("not a readable image")
    if data.ndim == 3:
        data = _luminance(data[..., :3], bgr=True)
    return data


def _read_tiff(path, pages=False):
    """A TIFF's first image (a frame), or with ``pages`` all its pages stacked."""
    try:
        import tifffile
    except ImportError:
        if not pages:
            return _read_cv2(path)
        import cv2

        ok, images = cv2.imreadmulti(str(path), flags=cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
        if not ok:
            raise ValueError("not a readable TIFF") from None
        return np.stack(images)
    data = tifffile.imread(path)
    if not pages and data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    return data


def read_array(path, *, mmap=False, what="array"):
    """An array of any dimension from an NPY file or a (multi-page) TIFF, as stored.

    Parameters
    ----------
    path : str or Path
    mmap : bool
        Memory-map an NPY file instead of reading it (for files larger than memory).
    what : str
        What the array is, for the error messages ("stack", "signals" ...).

    Raises
    ------
    FileNotFoundError, ValueError
        With a one-line message naming the file when it is missing, of
        another format, corrupt or not numeric.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suf = _suffix(path)
    if suf not in (".npy", ".tif", ".tiff"):
        raise ValueError(f"{path}: unknown {what} format {suf!r}; use .npy or .tif")
    try:
        if suf == ".npy":
            data = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        else:
            data = _read_tiff(path, pages=True)
    except (ValueError, OSError, EOFError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: cannot read {what} ({msg})") from None
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ValueError(f"{path}: the {what} is not an array of real numbers (dtype {data.dtype})")
    return data


def write_array(path, data):
    """Write an array as ``.npy`` or ``.tif`` (tifffile), creating the folder."""
    path = Path(path)
    suf = path.suffix.lower()
    if suf not in (".npy", ".tif", ".tiff"):
        raise ValueError(f"{path}: unknown array format {path.suffix!r}; use .npy or .tif")
    if suf != ".npy":
        try:
            import tifffile
        except ImportError:
            raise ValueError("writing a TIFF needs tifffile: pip install tifffile (or use .npy)") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    if suf == ".npy":
        np.save(path, data)
    else:
        tifffile.imwrite(path, data)


def read_signals(path):
    """Line-sensor readouts as a 2-D array, one readout per row.

    An NPY file is memory-mapped (readouts of a long run may not fit in
    memory) and read as stored; a 1-D array is one readout. Any frame
    format of :func:`read_frame` (FITS, TIFF, PNG ...) is an image whose
    rows are readouts.
    """
    path = Path(path)
    if _suffix(path) != ".npy":
        return read_frame(path)[0]
    data = read_array(path, mmap=True, what="signals")
    if data.ndim not in (1, 2):
        raise ValueError(f"{path}: expected one readout per row (2-D) or one readout (1-D), got shape {data.shape}")
    return data.reshape(1, -1) if data.ndim == 1 else data


def read_frames(paths):
    """Yield ``(path, data, meta)`` per frame, or ``(path, None, {"error": reason})`` when unreadable."""
    for p in paths:
        try:
            data, meta = read_frame(p)
            yield p, data, meta
        except (FileNotFoundError, ValueError) as exc:
            yield p, None, {"error": str(exc)}


def write_table(table: Table, path, overwrite=True):
    """Write a Table by extension: ``.ecsv`` (default), ``.fits``, ``.csv``, ``.parquet``."""
    path = Path(path)
    suf = path.suffix.lower()
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    if suf in (".ecsv", ""):
        table.write(path if suf else path.with_suffix(".ecsv"), format="ascii.ecsv", overwrite=overwrite)
    elif suf in (".fits", ".fit"):
        out = table.copy(copy_data=False)
        out.meta = {k: v for k, v in table.meta.items() if isinstance(v, (int, float, str, bool))}
        with warnings.catch_warnings():  # e-/px units are not FITS-standard; they stay in TUNITn as text
            warnings.simplefilter("ignore")
            out.write(path, format="fits", overwrite=overwrite)
    elif suf == ".csv":
        table.write(path, format="ascii.csv", overwrite=overwrite)
    elif suf == ".parquet":
        try:
            table.write(path, format="parquet", overwrite=overwrite)
        except ImportError:
            raise ValueError("writing Parquet needs pyarrow: pip install pyarrow") from None
    else:
        raise ValueError(f"unknown table format {suf!r}; use .ecsv, .fits, .csv or .parquet")


def read_table(path) -> Table:
    """Read a table written by :func:`write_table` (or any astropy-readable table)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suf = path.suffix.lower()
    fmt = {".ecsv": "ascii.ecsv", ".csv": "ascii.csv", ".fits": "fits", ".parquet": "parquet"}.get(suf)
    try:
        return Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as exc:  # astropy raises many types for a malformed table
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: cannot read table ({msg})") from None


def sample_path(name: str) -> Path:
    """Path of a file shipped in ``startrack/data`` (the sample frame, its truth and camera, the axial models).

    Examples
    --------
    >>> sample_path("sample_camera.toml").name
    'sample_camera.toml'
    """
    path = Path(str(resources.files("startrack") / "data" / name))
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such file in startrack/data")
    return path
