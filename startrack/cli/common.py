"""Helpers shared by the sub-commands: camera files, frames, progress, output."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from astropy.table import vstack

from ..io import read_frame, write_table
from ..sensor import Sensor
from ..validate import load_toml


def progress(iterable, total=None, desc=None, quiet=False):
    """A progress bar on stderr for long loops (silent when ``quiet`` or not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=quiet or not sys.stderr.isatty(), unit="frame")


#: What ``--out`` writes when it is a table.
TABLE = "table (.ecsv, .fits, .csv or .parquet)"


def command(sub, name, help, description, *, out=None, what=TABLE, metavar="FILE", quiet=True):
    """A sub-command's parser: ``description`` keeps its line breaks (the examples); with ``out`` an
    ``--out/-o`` option defaulting to it (``what`` it writes, shown in its help), with ``quiet`` a
    ``--quiet/-q`` option that silences the progress bar and the summary."""
    p = sub.add_parser(name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if out is not None:
        p.add_argument("--out", "-o", default=out, metavar=metavar, help=f"output {what} (default {out})")
    if quiet:
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    return p


def command_group(sub, name, help, description, adders, metavar="SUBCOMMAND"):
    """A command whose own sub-commands are added by ``adders``; run bare, it prints its help (exit 2)."""
    p = command(sub, name, help, description, quiet=False)
    subsub = p.add_subparsers(dest=f"{name}_command", metavar=metavar)
    for add in adders:
        add(subsub)
    p.set_defaults(func=lambda args: p.print_help() or 2)
    return p


def fit_options(p, what="PSF model of the MLE"):
    """The ``--psf`` and ``--threshold`` options of the commands that detect and fit stars."""
    p.add_argument("--psf", default="gaussian:0.5", metavar="MODEL",
                   help=f"{what}: gaussian:SIGMA, gaussian:SX,SY (px), epsf:FILE or pixel-epsf:FILE "
                        "(default gaussian:0.5)")
    p.add_argument("--threshold", type=float, default=5.0, help="detection threshold in sigma (default 5)")


def load_sensor(camera) -> Sensor | None:
    """The ``[sensor]`` table of a camera TOML file, or None when there is no file or no table."""
    if camera is None:
        return None
    data = load_toml(camera)
    if "sensor" not in data:
        return None
    return Sensor.from_dict(data["sensor"], source=str(camera))


def save(table, path, quiet=False):
    write_table(table, path)
    if not quiet:
        print(f"wrote {len(table)} rows to {Path(path)}", file=sys.stderr)


def stack_tables(tables):
    """One table from several with the same columns, keeping the first one's metadata."""
    out = vstack(tables, metadata_conflicts="silent") if len(tables) > 1 else tables[0]
    out.meta = dict(tables[0].meta)
    return out


def run_frames(paths, work, *, command, quiet=False):
    """``work(image)`` (a Table) on every frame, stacked, with a ``frame`` column naming the file.

    With several frames, one that cannot be read or processed is skipped with
    a note on stderr; a single frame's error is raised (the one-line CLI error).

    Returns
    -------
    table, used, skipped
    """
    tables = []
    skipped = 0
    for path in progress(paths, total=len(paths), desc=command, quiet=quiet):
        try:
            image, _ = read_frame(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = work(image)
        except (ValueError, FileNotFoundError) as exc:
            if len(paths) == 1:
                raise
            print(f"startrack {command}: skipping {path}: {exc}", file=sys.stderr)
            skipped += 1
            continue
        res["frame"] = str(path)
        tables.append(res)
    if not tables:
        raise ValueError("no frame could be read")
    return stack_tables(tables), len(tables), skipped


def pyplot(hint):
    """matplotlib.pyplot on the Agg backend, or None after printing ``hint`` when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"  ({hint})", file=sys.stderr)
        return None
    return plt


def draw(plot, path, *args, quiet=False, hint="install the 'plot' extra for the plot"):
    """``plot(*args, path)`` (a library figure) when matplotlib is installed, else a note; True when drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if not quiet:
            print(f"  ({hint})", file=sys.stderr)
        return False
    plot(*args, path)
    if not quiet:
        print(f"  plot: {path}", file=sys.stderr)
    return True
