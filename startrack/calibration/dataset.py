"""Calibration datasets on disk: a folder of frames described by ``manifest.csv``.

Every calibration script reads the same layout, and :mod:`startrack.calibration.synthetic`
writes it: a CSV manifest with a ``file`` column (paths relative to the manifest's
folder; FITS, TIFF, PNG or NPY frames) and script-specific columns, e.g.
``file,kind,exposure_s`` for photon transfer or
``file,azimuth_deg,elevation_deg,repeat`` for a turntable scan. Each user
mistake (missing manifest, column, frame file or number; frames of different
sizes) is a one-line ``ValueError``/``FileNotFoundError`` naming the file and row.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..io import read_frame
from ..validate import one_of

__all__ = ["MANIFEST", "read_manifest", "load_frames", "write_frames"]

#: File name of the manifest inside a dataset folder.
MANIFEST = "manifest.csv"


def _manifest_path(path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    return path


def read_manifest(path, columns, *, optional=None, check_files=True) -> Table:
    """Read and validate a calibration manifest.

    Parameters
    ----------
    path : str or Path
        The CSV file, or a folder holding ``manifest.csv``.
    columns : dict
        Required columns and their type (``str``, ``float`` or ``int``); the
        ``file`` column is always required.
    optional : dict, optional
        Optional columns, their type and default value: ``{name: (type, default)}``.
    check_files : bool
        Check that every frame file exists.

    Returns
    -------
    Table
        One row per manifest line with the typed columns and ``path`` (the
        frame's path, resolved against the manifest's folder).
    """
    path = _manifest_path(path)
    optional = optional or {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        need = ["file", *[c for c in columns if c != "file"]]
        missing = [c for c in need if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; the manifest needs "
                             f"{','.join(need)}")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    rows = [r for r in rows if any(r.values())]
    if not rows:
        raise ValueError(f"{path}: the manifest lists no frames")
    types = {"file": str, **columns, **{k: t for k, (t, _) in optional.items()}}
    out = {name: [] for name in types}
    out["path"] = []
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        for name, typ in types.items():
            raw = row.get(name, "")
            if raw == "" and name in optional:
                out[name].append(optional[name][1])
                continue
            if raw == "":
                raise ValueError(f"{path}, line {n}: empty {name}")
            try:
                value = typ(float(raw)) if typ is int else typ(raw)
            except ValueError:
                raise ValueError(f"{path}, line {n}: {name} {raw!r} is not a number") from None
            if typ is not str and not np.isfinite(value):
                raise ValueError(f"{path}, line {n}: {name} {raw!r} is not finite")
            out[name].append(value)
        frame = Path(row["file"])
        frame = frame if frame.is_absolute() else path.parent / frame
        if check_files and not frame.is_file():
            raise FileNotFoundError(f"{path}, line {n}: frame file {row['file']} not found")
        out["path"].append(str(frame))
    t = Table(out)
    t.meta["manifest"] = str(path)
    return t


def load_frames(paths, *, shape=None, region=None, dtype=np.float64):
    """Read frames into one ``(n, ny, nx)`` stack, all of the same size.

    Parameters
    ----------
    paths : sequence of str or Path
    shape : (ny, nx), optional
        Size every frame must have (default: the first frame's).
    region : (col0, row0, ncols, nrows), optional
        Keep only this window of each frame (px).

    Raises
    ------
    ValueError
        Naming the first frame whose size differs.
    """
    paths = list(paths)
    first = None
    out = None
    for k, p in enumerate(paths):
        data, _ = read_frame(p)
        if first is None:
            first = (p, data.shape if shape is None else tuple(shape))
        if data.shape != first[1]:
            raise ValueError(f"{p}: frame is {data.shape[1]}x{data.shape[0]} px (width x height) but "
                             f"{first[0]} is {first[1][1]}x{first[1][0]} px")
        if region is not None:
            c0, r0, nc, nr = region
            data = data[r0:r0 + nr, c0:c0 + nc]
        if out is None:
            out = np.empty((len(paths),) + data.shape, dtype=dtype)
        out[k] = data
    if out is None:
        raise ValueError("no frames to read")
    return out


def write_frames(folder, frames, table, *, fmt="fits", prefix="frame"):
    """Write frames and their manifest: the dataset layout the calibration scripts read.

    Parameters
    ----------
    folder : str or Path
        Created when missing.
    frames : (n, ny, nx) array
        Raw frames in DN; written as 16-bit unsigned integers.
    table : Table or dict of columns
        One row per frame: the manifest's columns other than ``file``.
    fmt : {"fits", "tiff"}

    Returns
    -------
    Path
        The manifest written.
    """
    one_of(fmt, "fmt", ("fits", "tiff"))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames)
    table = Table(table)
    if len(table) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(table)} manifest rows")
    data = np.clip(np.round(frames), 0, 65535).astype(np.uint16)
    width = max(4, len(str(len(frames) - 1)))
    names = []
    if fmt == "fits":
        from astropy.io import fits

        for k, img in enumerate(data):
            names.append(f"{prefix}_{k:0{width}d}.fits")
            fits.PrimaryHDU(img).writeto(folder / names[-1], overwrite=True)
    else:
        import tifffile

        for k, img in enumerate(data):
            names.append(f"{prefix}_{k:0{width}d}.tif")
            tifffile.imwrite(folder / names[-1], img)
    cols = list(table.colnames)
    manifest = folder / MANIFEST
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", *cols])
        for name, row in zip(names, table, strict=True):
            w.writerow([name, *[_fmt(row[c]) for c in cols]])
    return manifest


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode()
    return str(v)
