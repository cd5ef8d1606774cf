"""Old import paths of modules that moved, kept working with a DeprecationWarning.

``import startrack.camera`` gives the module object of ``startrack.sky.camera``
itself (not a copy), so classes, isinstance checks and pickles agree. An
import hook instead of shim files: the tree shows only where code lives.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: Old module path prefix -> new one (a prefix maps its submodules too).
MOVED = {
    "startrack.starid.sky": "startrack.sky.simulate",
    "startrack.starid": "startrack.sky.starid",
    "startrack.camera": "startrack.sky.camera",
    "startrack.catalog": "startrack.sky.catalog",
    "startrack.attitude": "startrack.sky.attitude",
    "startrack.pipeline": "startrack.sky.pipeline",
    "startrack.pixel_epsf": "startrack.psf",
}


def new_name(name: str) -> str | None:
    """Where the module once imported as ``name`` lives now, or None if it did not move."""
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return None


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if new_name(name) is None:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        new = new_name(spec.name)
        warnings.warn(f"{spec.name} moved to {new}; import it from there (the old path will be removed)",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the module was executed under its new name


def install() -> None:
    """Put the finder once at the front of ``sys.meta_path`` (before the path finder, which would load a
    moved module's submodule a second time under its old name)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
