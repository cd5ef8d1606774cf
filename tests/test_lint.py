"""The code passes ruff with the project's rules ([tool.ruff] in pyproject.toml)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ruff():
    try:
        import ruff
    except ImportError:
        return shutil.which("ruff")
    return ruff.find_ruff_bin()


def test_ruff_finds_nothing():
    ruff = _ruff()
    if ruff is None:
        pytest.fail('ruff is not installed; it comes with the dev extra: pip install -e ".[dev]"')
    res = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", str(ROOT)], capture_output=True,
                         text=True, cwd=ROOT)
    assert res.returncode == 0, f"ruff check found problems:\n{res.stdout}{res.stderr}"
