import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from startrack.cli import main


def test_demo(tmp_path, capsys):
    assert main(["demo", "--frame", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "Poisson MLE" in out
    t = Table.read(tmp_path / "d" / "stars.ecsv")
    assert len(t) > 40 and t["converged"].all()
    # the attitude is found and agrees with the truth within a few of its own sigmas
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("attitude error"))
    errs = [float(v) for v in line.replace("/", " ").replace(",", " ").split() if v[0] in "+-"]
    sig = next(ln for ln in out.splitlines() if ln.strip().startswith("1-sigma"))
    sigs = [float(v) for v in sig.replace("/", " ").replace(",", " ").replace(";", " ").split()
            if v.replace(".", "").isdigit()][:3]
    assert all(abs(e) < 5 * s for e, s in zip(errs, sigs, strict=True))


def test_localize_command(tmp_path, capsys):
    from startrack.io import sample_path

    out = tmp_path / "stars.ecsv"
    rc = main(["localize", str(sample_path("sample_frame.fits")), "--psf", "gaussian:0.35",
               "--camera", str(sample_path("sample_camera.toml")), "--out", str(out), "-q"])
    assert rc == 0
    t = Table.read(out)
    assert {"x", "y", "x_err", "y_err", "x_cg", "frame"} <= set(t.colnames)


def test_localize_two_frames_one_corrupt(tmp_path, capsys):
    from startrack.io import sample_path

    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  = T\ngarbage")
    out = tmp_path / "s.fits"
    rc = main(["localize", str(sample_path("sample_frame.fits")), str(bad), "--psf", "gaussian:0.35",
               "--out", str(out), "-q"])
    assert rc == 0
    assert "skipping" in capsys.readouterr().err
    assert len(Table.read(out)) > 40


@pytest.mark.parametrize("argv, match", [
    (["localize", "missing.fits"], "no such file"),
    (["localize", "{frame}", "--psf", "airy:2"], "unknown PSF"),
    (["localize", "{frame}", "--camera", "{badtoml}"], "TOML"),
    (["localize", "{frame}", "--roi", "1"], "roi"),
    (["crlb", "--radius", "-1", "--photons", "10"], "radius"),
])
def test_user_errors_are_one_line(tmp_path, capsys, argv, match):
    frame = tmp_path / "f.npy"
    np.save(frame, np.ones((30, 30)))
    badtoml = tmp_path / "c.toml"
    badtoml.write_text("[sensor\n")
    argv = [a.format(frame=frame, badtoml=badtoml) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err
    assert match in err


def test_crlb_command(capsys):
    assert main(["crlb", "--radius", "0.2", "--photons", "1500", "--dark-var", "25", "--params", "x"]) == 0
    out = capsys.readouterr().out
    assert "closed-form optimum" in out and "0.0066" in out


def _leaf_commands(parser, path=()):
    """Every runnable command path of the parser, e.g. ("micro", "axial", "train")."""
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [path]
    return [p for name, child in subs[0].choices.items() for p in _leaf_commands(child, (*path, name))]


def test_help_for_every_command(capsys):
    from startrack.cli import COMMANDS, build_parser

    leaves = _leaf_commands(build_parser())
    assert {p[0] for p in leaves} == set(COMMANDS) and len(leaves) > len(COMMANDS)
    for path in [(cmd,) for cmd in COMMANDS] + leaves:
        with pytest.raises(SystemExit) as e:
            main([*path, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "example" in out, f"'startrack {' '.join(path)} --help' shows no example"


def test_a_run_imports_only_its_own_command(tmp_path):
    # Start-up time: `startrack localize` must not pay for the other commands' code.
    import json
    import subprocess
    import sys

    from startrack.io import sample_path

    argv = ["localize", str(sample_path("sample_frame.fits")), "--psf", "gaussian:0.35", "--camera",
            str(sample_path("sample_camera.toml")), "--out", str(tmp_path / "s.ecsv"), "-q"]
    code = (f"import json, sys; from startrack.cli import main; rc = main({argv!r}); "
            "print(json.dumps([rc, sorted(sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    rc, modules = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and "startrack.cli.localize" in modules
    heavy = ("startrack.cli.demo", "startrack.cli.micro", "startrack.cli.calib", "startrack.cli.solve",
             "startrack.epsf", "startrack.microscope", "startrack.calibration", "startrack.sky.starid",
             "scipy.optimize")
    assert not [m for m in modules if m.startswith(heavy)]


def test_fits_frame_with_header(tmp_path):
    from startrack.io import read_frame

    p = tmp_path / "x.fits"
    fits.PrimaryHDU(np.arange(12, dtype=np.uint16).reshape(3, 4)).writeto(p)
    data, meta = read_frame(p)
    assert data.shape == (3, 4)
    assert meta["dtype"] in ("uint16", ">u2")  # FITS stores big-endian; astropy may hand it over as stored
    np.testing.assert_array_equal(data, np.arange(12).reshape(3, 4))
