"""Compiled kernels are cached in the user cache folder, keyed by version and source, never in the package."""

import os
import subprocess
import sys
import time
from pathlib import Path

import startrack
from startrack import _cache
from startrack.cli import main

PACKAGE = Path(startrack.__file__).parent


def _run(code, env):
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                          cwd="/").stdout.strip()


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(STARTRACK_CACHE=str(tmp_path / "cache"), **extra)
    return env


def test_kernels_go_to_the_user_cache_not_the_package(tmp_path):
    code = ("import numba, startrack.psf as p; p.roi_origin([3.2], 5); "
            "print(numba.config.CACHE_DIR)")
    start = time.time() - 1.0
    folder = Path(_run(code, _env(tmp_path)))
    assert folder.parent == tmp_path / "cache" / "numba"
    assert folder.name.startswith(startrack.__version__ + "-")
    index = list(folder.rglob("*_origins*.nbi"))
    assert index, f"no cached kernel index under {folder}: {list(folder.rglob('*'))[:10]}"
    written = [p for p in PACKAGE.rglob("*.nb[ic]") if p.stat().st_mtime >= start]
    assert not written, f"kernel cache files written into the package: {written[:5]}"


def test_numba_imported_first_still_uses_the_user_cache(tmp_path):
    code = "import numba; import startrack; print(numba.config.CACHE_DIR)"
    assert Path(_run(code, _env(tmp_path))).parent == tmp_path / "cache" / "numba"


def test_users_own_numba_cache_dir_wins(tmp_path):
    mine = str(tmp_path / "mine")
    code = "import numba, startrack; print(numba.config.CACHE_DIR)"
    assert _run(code, _env(tmp_path, NUMBA_CACHE_DIR=mine)) == mine


def test_key_follows_version_and_kernel_sources_not_the_cli(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "cli").mkdir(parents=True)
    (pkg / "psf.py").write_text("x = 1\n")
    (pkg / "cli" / "run.py").write_text("y = 1\n")
    monkeypatch.setattr(_cache, "_PACKAGE", pkg)
    key = _cache._source_key("1.0")
    assert _cache._source_key("1.1") != key
    (pkg / "cli" / "run.py").write_text("y = 22\n")
    assert _cache._source_key("1.0") == key
    (pkg / "psf.py").write_text("x = 22\n")
    assert _cache._source_key("1.0") != key


def test_old_kernel_folders_are_pruned_when_a_new_one_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("STARTRACK_CACHE", str(tmp_path))
    parent = tmp_path / "numba"
    old, recent = parent / "0.0.1-aaaa", parent / "0.0.2-bbbb"
    for folder in (old, recent):
        folder.mkdir(parents=True)
    os.utime(old, (0, 0))
    folder = _cache.kernel_cache_dir("9.9")
    assert folder.is_dir() and folder.parent == parent
    assert not old.exists() and recent.exists()


def test_cache_command_info_and_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STARTRACK_CACHE", str(tmp_path / "c"))
    (tmp_path / "c" / "numba" / "k").mkdir(parents=True)
    (tmp_path / "c" / "numba" / "k" / "f.nbi").write_bytes(b"x" * 1000)
    assert main(["cache", "info"]) == 0
    assert str(tmp_path / "c") in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "removed" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
