"""Helpers shared by the sub-commands: camera files, frames, progress, output."""

from __future__ import annotations

import sys
from pathlib import Path

from ..io import write_table
from ..sensor import Sensor, load_toml


def progress(iterable, total=None, desc=None, quiet=False):
    """A progress bar on stderr for long loops (silent when ``quiet`` or not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=quiet or not sys.stderr.isatty(), unit="frame")


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
