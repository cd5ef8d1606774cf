import numpy as np
import pytest
from astropy.table import Table
from scipy.special import ndtr

import startrack as st
from startrack.cli import main
from startrack.design import REGIONS, design, equivalent_radius, pl_versus_radius, precision_map, region_summary


def _exact_pl_x(r, x, y, photons, dark_var, half=6):
    """Known-flux PL_x of a pixel-integrated Gaussian from the normal CDF and pdf (no startrack code)."""
    j = np.arange(-half, half + 1)
    pdf = lambda t: np.exp(-0.5 * t * t) / np.sqrt(2 * np.pi)  # noqa: E731
    fx = ndtr((j + 0.5 - x) / r) - ndtr((j - 0.5 - x) / r)
    fy = ndtr((j + 0.5 - y) / r) - ndtr((j - 0.5 - y) / r)
    gx = (pdf((j - 0.5 - x) / r) - pdf((j + 0.5 - x) / r)) / r
    gy = (pdf((j - 0.5 - y) / r) - pdf((j + 0.5 - y) / r)) / r
    lam = photons * np.outer(fy, fx) + dark_var
    dx = photons * np.outer(fy, gx)
    dy = photons * np.outer(gy, fx)
    F = np.array([[np.sum(dx * dx / lam), np.sum(dx * dy / lam)], [np.sum(dx * dy / lam), np.sum(dy * dy / lam)]])
    return float(np.sqrt(np.linalg.inv(F)[0, 0]))


def test_best_pl_of_the_map_matches_the_exact_crlb():
    sensor = st.Sensor(gain=0.2, dark_var=25.0)
    m = precision_map(st.GaussianPSF(0.2), 1500.0, sensor, n=40)
    k = int(np.argmin(m["pl_x"]))
    exact = _exact_pl_x(0.2, -0.5, 0.0, 1500.0, 25.0)
    assert abs(m["pl_x"][k] / exact - 1) < 0.02
    assert abs(abs(m["x"][k]) - 0.5) < 1e-9  # on the pixel boundary
    # At the pixel centre the same spot is far worse.
    centre = m[(np.abs(m["x"]) < 1e-9) & (np.abs(m["y"]) < 1e-9)]["pl_x"][0]
    assert centre == pytest.approx(_exact_pl_x(0.2, 0.0, 0.0, 1500.0, 25.0), rel=1e-6) and centre > 3 * exact


def test_regions_are_three_equal_pl_levels():
    m = precision_map(st.GaussianPSF(0.25), 1500.0, st.Sensor(1.0, dark_var=25.0), n=30)
    lo, hi = float(np.min(m["pl"])), float(np.max(m["pl"]))
    for k, name in enumerate(REGIONS):
        pl = np.asarray(m["pl"])[np.asarray(m["region"]) == name]
        assert pl.min() >= lo + k * (hi - lo) / 3 - 1e-12 and pl.max() <= lo + (k + 1) * (hi - lo) / 3 + 1e-12
    s = region_summary(m)
    assert np.sum(s["area_fraction"]) == pytest.approx(1.0)
    assert s["pl_mean"][0] < s["pl_mean"][1] < s["pl_mean"][2]


@pytest.mark.parametrize("dark_var", [25.0, 250.0])
def test_closed_form_matches_the_exact_best_pl_for_small_radii(dark_var):
    # The small-PSF paper's Fig. 3a: N = 1500, both noise levels.
    c = pl_versus_radius([0.1, 0.15, 0.2, 0.25, 1.0], 1500.0, dark_var)
    ratio = np.asarray(c["pl_best"]) / np.asarray(c["pl_closed_form"])
    assert np.all(np.abs(ratio[:4] - 1) < 0.03)
    assert ratio[4] > 1.05  # a wide spot spills past the two boundary pixels
    assert np.all(np.abs(np.abs(c["best_dx"][:4]) - 0.5) < 1e-9)
    for row in c[[0, 2]]:
        assert row["pl_best"] == pytest.approx(_exact_pl_x(row["radius"], -0.5, 0.0, 1500.0, dark_var), rel=1e-6)
    # The RMS over the pixel has an interior optimum: tiny spots are bad on average.
    r = pl_versus_radius(np.linspace(0.1, 1.0, 19), 1500.0, dark_var)
    j = int(np.argmin(r["pl_rms"]))
    assert 0 < j < 18


def test_design_with_optics_and_verdict():
    d = design(0.15, 1500.0, 25.0, gain=0.2, wavelength_nm=550.0, f_number=2.0, pixel_um=5.3)
    dl = 1.22 * 0.55 * 2.0 / 5.3
    assert d.diffraction["limit"] == pytest.approx(dl)
    assert d.diffraction["r_min"] == pytest.approx(dl / 3)
    assert d.diffraction["pl_best"] == pytest.approx(d.diffraction["pl_optimum"], rel=0.02)
    assert "defocusing to a radius of about" in d.verdict and "Diffraction" in d.verdict
    near_opt = design(float(d.curve["radius"][np.argmin(d.curve["pl_rms"])]), 1500.0, 25.0)
    assert "no defocus is needed" in near_opt.verdict
    assert "A sharper focus, to a radius of about" in design(0.8, 1500.0, 25.0).verdict
    with pytest.raises(ValueError, match="all three"):
        design(0.2, 1500.0, 25.0, wavelength_nm=550.0)
    with pytest.raises(ValueError, match="photons"):
        design(0.2, -5.0, 25.0)


def test_design_of_a_non_gaussian_psf():
    psf = st.GaussianMixturePSF([(1.0, 0.45, 0.1, 0.0)])
    assert equivalent_radius(psf) == pytest.approx(0.45, rel=1e-6)
    d = design(st.GaussianMixturePSF([(0.8, 0.3, 0, 0), (0.2, 0.6, 0.25, 0.1)]), 5000.0, 25.0, n=16)
    assert 0.3 < d.radius < 0.4 and len(d.pmap) == 256


def test_design_command(tmp_path, capsys):
    out = tmp_path / "d"
    rc = main(["design", "--radius", "0.2", "--photons", "1500", "--dark-var", "25", "--gain", "0.2",
               "--wavelength-nm", "550", "--f-number", "2", "--pixel-um", "5.3", "--grid", "20", "--out", str(out)])
    assert rc == 0
    assert "best precision limit" in capsys.readouterr().out
    m = Table.read(out / "map.ecsv")
    assert set(m.colnames) >= {"x", "y", "pl_x", "pl_y", "region"} and len(m) == 400
    assert len(Table.read(out / "regions.ecsv")) == 3
    assert "pl_closed_form" in Table.read(out / "radius.ecsv").colnames
    assert (out / "verdict.txt").read_text().startswith("With 1500 e-")
    assert (out / "design.png").stat().st_size > 10000


@pytest.mark.parametrize("argv, match", [
    (["design", "--radius", "-1", "--photons", "10", "--dark-var", "1"], "radius"),
    (["design", "--radius", "0.2", "--photons", "10", "--dark-var", "1", "--f-number", "2"], "all three"),
    (["design", "--epsf", "missing.fits", "--photons", "10", "--dark-var", "1"], "not found"),
])
def test_design_command_errors_are_one_line(tmp_path, capsys, argv, match):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err
