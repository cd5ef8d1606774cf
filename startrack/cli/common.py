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


def command_group(sub, name, help, description, adders, metavar="SUBCOMMAND"):
    """A command whose own sub-commands are added by ``adders``; run bare, it prints its help (exit 2)."""
    p = sub.add_parser(name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    subsub = p.add_subparsers(dest=f"{name}_command", metavar=metavar)
    for add in adders:
        add(subsub)
    p.set_defaults(func=lambda args: p.print_help() or 2)
    return p


def subcommand(sub, name, help, description):
    """A sub-command parser whose description keeps its line breaks (examples)."""
    return sub.add_parser(name, help=help, description=description,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def load_sensor(camera) -> Sensor | None:
    """The ``[sensor]`` table of a camera TOML file, or None when there is no file or no table."""
    if camera is None:
        return None
    data = load_toml(camera)
    if "sensor" not in data:
        return None
    return Sensor.from_dict(data["sensor"], source=str(camera))


def add_output(parser, default, what="table"):
    parser.add_argument("--out", "-o", default=default, metavar="FILE",
                        help=f"output {what} (.ecsv, .fits, .csv or .parquet; default {default})")


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
