"""``startrack cache``: where compiled kernels and pattern databases are kept, and clearing them."""

from __future__ import annotations

import sys

from .. import __version__, _cache
from .common import command, command_group

HELP = """startrack compiles its numba kernels on first use (20-30 s) and builds a
pattern database per camera (seconds to a minute); both are kept in the user
cache folder, never inside the installed package: $STARTRACK_CACHE, else the
platform's user cache folder (~/.cache/startrack on Linux). Kernels are kept
per installed version and source, so an upgrade or an edited source tree
compiles afresh; old kernel folders unused for 30 days are removed.

examples:
  startrack cache info
  startrack cache clear
"""

INFO_HELP = """Print the cache folder with its size, and the kernel folder of this installation.

example:
  startrack cache info
"""

CLEAR_HELP = """Delete the whole user cache folder: compiled kernels (they recompile on next use,
20-30 s) and pattern databases (rebuilt per camera on next use).

example:
  startrack cache clear
"""


def register(sub):
    command_group(sub, "cache", "show or clear the kernel and pattern-database cache", HELP,
                  [_add_info, _add_clear])


def _add_info(sub):
    p = command(sub, "info", "where the cache is and how big", INFO_HELP, quiet=False)
    p.set_defaults(func=_info)


def _add_clear(sub):
    p = command(sub, "clear", "delete the cache (kernels recompile, databases rebuild on next use)", CLEAR_HELP,
                quiet=False)
    p.set_defaults(func=_clear)


def _mb(size):
    return f"{size / 2**20:.1f} MB"


def _info(args):
    folder = _cache.cache_dir()
    files, size = _cache.cache_size(folder)
    print(f"cache folder:   {folder}  ({files} files, {_mb(size)})")
    kernels = _cache.configure_numba(__version__)
    print(f"kernels of this installation (startrack {__version__}): {kernels or 'not cached (no writable folder)'}")
    return 0


def _clear(args):
    files, size = _cache.clear_cache()
    print(f"removed {files} files ({_mb(size)}) from {_cache.cache_dir()}", file=sys.stderr)
    return 0
