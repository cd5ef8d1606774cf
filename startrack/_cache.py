"""Where startrack keeps what it computes once: compiled numba kernels and pattern databases.

Both live in the user cache folder (``$STARTRACK_CACHE``, else the platform's
user cache, e.g. ``~/.cache/startrack`` on Linux), never inside the installed
package: a package folder that holds files pip did not install survives
``pip uninstall`` as an empty namespace package that shadows the next install,
and a read-only install could not cache at all.

Compiled kernels go to ``numba/<key>``, the key made of the version and a
stamp (path, size, modification time) of every module of the installed
package but the command line's. numba's own cache checks only the file a kernel is defined in, so a
change to a kernel it calls in another module (the PSF renderer that the
fitter inlines) would otherwise reuse a stale compilation; here any change,
upgrade or second installation gets its own folder. Folders unused for 30
days are removed when a new one is made.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from platformdirs import user_cache_dir

__all__ = ["cache_dir", "kernel_cache_dir", "configure_numba", "cache_size", "clear_cache"]

_PACKAGE = Path(__file__).resolve().parent
#: Kernel folders not used for this long are removed when a new one is created (s).
_STALE_AFTER = 30 * 86400.0


def cache_dir() -> Path:
    """The user cache folder: ``$STARTRACK_CACHE``, else the platform's user cache folder for startrack."""
    if os.environ.get("STARTRACK_CACHE"):
        return Path(os.environ["STARTRACK_CACHE"])
    return Path(user_cache_dir("startrack", appauthor=False))


def _source_key(version: str) -> str:
    digest = hashlib.sha1(str(_PACKAGE).encode())
    for path in sorted(_PACKAGE.rglob("*.py")):
        if path.parent.name == "cli":  # holds no kernel and no constant a kernel folds in
            continue
        st = path.stat()
        digest.update(f"{path.relative_to(_PACKAGE)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{version}-{digest.hexdigest()[:12]}"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def _prune(parent: Path, keep: Path) -> None:
    now = time.time()
    for old in parent.iterdir():
        try:
            if old != keep and old.is_dir() and now - old.stat().st_mtime > _STALE_AFTER:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def kernel_cache_dir(version: str) -> Path | None:
    """The folder for this installation's compiled kernels (created), or None when nowhere is writable.

    Falls back to a per-user folder under the system's temporary directory
    when the user cache folder cannot be written.
    """
    key = _source_key(version)
    user = getattr(os, "getuid", lambda: "user")()
    for parent in (cache_dir() / "numba", Path(tempfile.gettempdir()) / f"startrack-{user}" / "numba"):
        folder = parent / key
        new = not folder.is_dir()
        if _writable(folder):
            if new:
                _prune(parent, folder)
            else:
                try:
                    os.utime(folder)  # marks it as in use for the pruning above
                except OSError:
                    pass
            return folder
    return None


def configure_numba(version: str) -> Path | None:
    """Point numba's kernel cache at :func:`kernel_cache_dir`, unless the user set ``NUMBA_CACHE_DIR``.

    Must run before any ``@njit(cache=True)`` function is defined: numba picks a
    function's cache folder when it is decorated. Returns the folder in use.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    folder = kernel_cache_dir(version)
    if folder is None:
        return None  # numba's own fallback (next to the sources, or its user-wide folder)
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    if "numba" in sys.modules:  # imported before startrack: its configuration was read already
        sys.modules["numba"].core.config.reload_config()
    return folder


def cache_size(folder: Path | None = None) -> tuple[int, int]:
    """(files, bytes) under ``folder`` (default the whole user cache folder)."""
    folder = cache_dir() if folder is None else Path(folder)
    files = size = 0
    if folder.is_dir():
        for path in folder.rglob("*"):
            if path.is_file():
                files += 1
                size += path.stat().st_size
    return files, size


def clear_cache() -> tuple[int, int]:
    """Remove everything in the user cache folder; returns the (files, bytes) removed."""
    folder = cache_dir()
    removed = cache_size(folder)
    if folder.is_dir():
        shutil.rmtree(folder)
    return removed
