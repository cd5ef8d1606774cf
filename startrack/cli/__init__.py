"""The ``startrack`` command line: one sub-command per job.

Each sub-command lives in a module of this package with a ``register(sub)``
function; :data:`COMMANDS` lists them in the order ``--help`` shows them.
User mistakes (a missing or corrupt file, a bad option value) end with a
one-line ``startrack: error: ...`` and exit status 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import __version__

COMMANDS = ["demo", "localize", "solve", "nightsky", "crlb", "epsf", "design", "calib", "simulate", "micro", "cache"]


def build_parser(command=None) -> argparse.ArgumentParser:
    """The whole parser, or with ``command`` only that sub-command's (its module alone is imported)."""
    parser = argparse.ArgumentParser(
        prog="startrack",
        description="Star positions at the Cramér–Rao bound, and attitude, from small-PSF star sensors.",
        epilog="Run 'startrack COMMAND --help' for each command. Start with 'startrack demo'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version",
                        version=f"startrack {__version__}\nkernel cache: {os.environ.get('NUMBA_CACHE_DIR') or 'none'}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [command] if command in COMMANDS else COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Every command module imports what its job needs (scipy.spatial, the microscope code, ...):
    # a run imports only its own, which keeps `startrack localize` starting in about a second.
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("startrack: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"startrack {args.command}: error: {msg}", file=sys.stderr)
        return 2
