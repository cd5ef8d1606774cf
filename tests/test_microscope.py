"""Microscope mode: ePhasor and friends on line signals, fluoroBancroft, 2-D phasor, Gaussian baselines, CLI."""

import math

import numpy as np
import pytest
from astropy.table import Table
from scipy.special import erf

import startrack as st
from startrack.cli import main
from startrack.microscope import (
    PHASOR_FLAGS,
    atca,
    crlb_1d,
    ephasor,
    fluoro_bancroft,
    gauss_lsq,
    gauss_mle,
    mle_1d,
    phasor,
    phasor_2d,
    simulate_signals,
    step_precision,
    track1d,
)
from startrack.microscope.spots import cut_rois, localize_spots, simulate_rois
from startrack.microscope.track import line_psf


def gauss_line(n, x0, sigma, peak=1000.0, base=100.0):
    """Pixel-integrated Gaussian line signal, computed here independently of the core."""
    edges = np.arange(n + 1) - 0.5
    cdf = 0.5 * (1 + erf((edges - x0) / (math.sqrt(2) * sigma)))
    return base + peak * math.sqrt(2 * math.pi) * sigma * np.diff(cdf)


def gauss_spot(shape, x0, y0, sx, sy, amp=400.0, base=50.0):
    """Point-sampled Gaussian spot: exactly fluoroBancroft's and the LSQ fit's model."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return base + amp * np.exp(-0.5 * ((xx - x0) / sx) ** 2 - 0.5 * ((yy - y0) / sy) ** 2)


# -- ePhasor and the line estimators -------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.5, 5.0])
@pytest.mark.parametrize("dx", [-0.37, 0.0, 0.21, 0.5])
def test_ephasor_noise_free(sigma, dx):
    x0 = 120.0 + dx
    s = gauss_line(256, x0, sigma)
    # The default window (2.57 sigma) cuts the tails: a bias of up to 3.3e-3 px at sigma 1 px (5-px window),
    # 4e-4 px from 2 px up; a 4-sigma window (7 or 9 px for sigma ~1) leaves < 2e-4 px.
    assert abs(ephasor(s) - x0) < (4e-3 if sigma < 2 else 5e-4)
    assert abs(ephasor(s, window=4) - x0) < 2e-4
    assert abs(phasor(s, int(4 * sigma) + 1) - x0) < 1e-4


def test_width_estimate_and_window():
    for sigma in (1.0, 2.0, 3.0, 5.0):
        t = track1d(gauss_line(256, 100.3, sigma))
        assert abs(t["sigma"][0] - sigma) < 0.05 * sigma
        assert t["half_width"][0] == max(2, int(math.pi * math.sqrt(2 / 3) * t["sigma"][0]))
        assert t["flags"][0] == 0


def test_batch_matches_single_and_dtypes():
    rng = np.random.default_rng(3)
    x = 60 + rng.uniform(-5, 5, 40)
    sig = np.array([gauss_line(128, xi, 2.0, peak=3000) for xi in x])
    sig = np.round(rng.poisson(sig)).astype(float)
    batch = ephasor(sig)
    assert np.array_equal(batch, [ephasor(row) for row in sig])
    for dt in (np.uint16, np.float32):
        assert np.allclose(ephasor(sig.astype(dt)), batch, atol=1e-9)
    assert np.allclose(ephasor(sig + 1000.0), batch, atol=1e-9)  # a constant baseline cancels


def test_short_signal_and_smoothing():
    s = gauss_line(20, 9.6, 1.5)
    assert abs(ephasor(s) - 9.6) < 2e-3
    t = track1d(gauss_line(256, 100.3, 2.0), smooth=5)
    assert abs(t["sigma"][0] - 2.0) < 0.1  # the running mean's width is taken out
    assert abs(t["x"][0] - 100.3) < 1e-3


def test_atca_noise_free():
    assert abs(atca(gauss_line(256, 100.0, 2.0)) - 100.0) < 1e-9  # symmetric: exact
    assert abs(atca(gauss_line(256, 100.3, 2.0)) - 100.3) < 0.05


def test_line_bad_input():
    with pytest.raises(ValueError, match="empty"):
        ephasor(np.zeros((0, 10)))
    with pytest.raises(ValueError, match="1-D"):
        ephasor(np.zeros((2, 3, 10)))
    with pytest.raises(ValueError, match="real numbers"):
        ephasor(np.ones(10, bool))
    with pytest.raises(ValueError, match="real numbers"):
        ephasor(np.ones(10, complex))
    with pytest.raises(ValueError, match="at least 3"):
        ephasor(np.ones(2))
    with pytest.raises(ValueError, match="smooth"):
        ephasor(np.ones(10), smooth=4)
    with pytest.raises(ValueError, match="window"):
        ephasor(np.ones(10), window=0)
    with pytest.raises(ValueError, match="half_width"):
        phasor(np.ones(10), 0)
    with pytest.raises(ValueError, match="fraction"):
        atca(np.ones(10), fraction=1.5)
    with pytest.raises(ValueError, match="method"):
        track1d(np.ones(10), method="mle")
    with pytest.raises(ValueError, match="pixel_nm"):
        track1d(np.ones(10), pixel_nm=-80)


def test_line_bad_signals_flagged():
    good = gauss_line(64, 30.2, 2.0)
    edge_peak = gauss_line(64, 0.0, 2.0)
    near_edge = gauss_line(64, 3.0, 2.0)  # window clipped to half-width 3
    with_nan = good.copy()
    with_nan[50] = np.nan
    with_inf = good.copy()
    with_inf[5] = np.inf
    rows = np.array([good, np.full(64, 7.0), np.zeros(64), edge_peak, edge_peak[::-1], near_edge, with_nan,
                     with_inf])
    t = track1d(rows)
    f = PHASOR_FLAGS
    assert list(t["flags"]) == [0, f["no_signal"], f["no_signal"], f["peak_at_edge"], f["peak_at_edge"],
                                f["window_clipped"], f["nonfinite"], f["nonfinite"]]
    x = np.asarray(t["x"])
    assert abs(x[0] - 30.2) < 1e-3 and abs(x[5] - 3.0) < 0.01
    assert np.all(np.isnan(x[[1, 2, 3, 4, 6, 7]]))
    assert math.isnan(ephasor(np.full(10, 3.0)))


def test_line_psf_is_the_1d_profile():
    val, dx, dy = line_psf(1.7).render([20.4], [0.0], [0], [0], (1, 41))
    assert np.allclose(val[0, 0], gauss_line(41, 20.4, 1.7, peak=1 / (math.sqrt(2 * math.pi) * 1.7), base=0),
                       atol=1e-14)
    assert np.all(dy == 0)


def test_crlb_1d_against_hand_fisher():
    sigma, x, peak, bg, rn = 1.5, 10.3, 5000.0, 1000.0, 100.0
    flux = peak * math.sqrt(2 * math.pi) * sigma
    k = np.arange(4, 17)  # the 13-pixel window centred on pixel 10
    h = 1e-6

    def mean(xx, f, b):
        e = np.arange(4, 18) - 0.5
        return f * np.diff(0.5 * (1 + erf((e - xx) / (math.sqrt(2) * sigma)))) + b + rn ** 2

    mu = mean(x, flux, bg)
    jac = np.column_stack([(mean(x + h, flux, bg) - mean(x - h, flux, bg)) / (2 * h), (mu - bg - rn ** 2) / flux,
                           np.ones(k.size)])
    fisher = jac.T @ (jac / mu[:, None])
    expected = math.sqrt(np.linalg.inv(fisher)[0, 0])
    got = crlb_1d(sigma, x, flux, bg, st.Sensor(gain=1, read_noise=rn), half_width=6)
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_ephasor_precision_near_mle():
    """Fig. 3b conditions (peak 10000, background 2000, 100 e- read noise): ePhasor within 10 % of the MLE."""
    rng = np.random.default_rng(7)
    n = 2000
    sensor = st.Sensor(gain=1.0, read_noise=100.0)
    for sigma in (1.0, 3.0):
        x = 128 + rng.uniform(-0.5, 0.5, n)
        s = simulate_signals(n, 256, x, sigma, 10000, 2000, read_noise=100, seed=11)
        mle = mle_1d(s, sigma, sensor=sensor)
        assert np.all(mle["converged"])
        r_mle = np.sqrt(np.mean((mle["x"] - x) ** 2))
        r_eph = np.sqrt(np.mean((ephasor(s) - x) ** 2))
        bound = np.sqrt(np.mean(crlb_1d(sigma, x, 10000 * math.sqrt(2 * math.pi) * sigma, 2000, sensor) ** 2))
        assert r_mle / bound == pytest.approx(1.0, abs=0.06)  # 2000 samples: 1.6 % standard error
        assert r_eph < 1.10 * r_mle
        if sigma == 3.0:  # a 4 px half-width clips a 3 px spot's information
            assert np.sqrt(np.mean((phasor(s, 4) - x) ** 2)) > 1.15 * r_eph


# -- the core with a (ny, nx) window --------------------------------------------------------------------

def test_mle_1d_rows_are_independent():
    rng = np.random.default_rng(5)
    x = 30 + rng.uniform(-0.5, 0.5, 6)
    s = simulate_signals(6, 64, x, 1.5, 4000, 500, seed=2)
    both = mle_1d(s, 1.5, half_width=6)
    for k in (0, 3, 5):
        alone = mle_1d(s[k], 1.5, half_width=6)
        assert alone["x"][0] == pytest.approx(both["x"][k], abs=1e-9)
        assert alone["x_err"][0] == pytest.approx(both["x_err"][k], rel=1e-9)
    assert list(both["signal"]) == list(range(6))


def test_non_square_roi_in_localize_and_centroid():
    img = np.zeros((5, 40))
    img[2] = gauss_line(40, 20.3, 1.2, peak=500, base=10)
    cg = st.centroid(img, [(20, 2)], roi=(1, 7), background=10.0)
    expected = np.sum((img[2, 17:24] - 10) * np.arange(17, 24)) / np.sum(img[2, 17:24] - 10)
    assert cg["x_cg"][0] == pytest.approx(expected, abs=1e-12)
    sq = st.localize(img, [(20, 2)], st.GaussianPSF(1.2), roi=5)
    tup = st.localize(img, [(20, 2)], st.GaussianPSF(1.2), roi=(5, 5))
    assert np.allclose([sq["x"][0], sq["y"][0]], [tup["x"][0], tup["y"][0]], atol=0)
    assert tup.meta["roi"] == 5
    for bad in [(0, 5), (1, 1), (2,), (2.5, 5), "5"]:
        with pytest.raises(ValueError, match="roi"):
            st.localize(img, [(20, 2)], st.GaussianPSF(1.2), roi=bad)


# -- fluoroBancroft ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, x0, y0, sx, sy", [((9, 9), 4.3, 3.8, 1.5, 1.5), ((16, 16), 8.9, 6.2, 2.0, 2.0),
                                                    ((12, 15), 6.6, 5.1, 1.4, 2.6)])
@pytest.mark.parametrize("weighted", [True, False])
def test_bancroft_exact_on_its_model(shape, x0, y0, sx, sy, weighted):
    spot = gauss_spot(shape, x0, y0, sx, sy)
    x, y = fluoro_bancroft(spot, (sx, sy), 50.0, weighted=weighted)
    assert x == pytest.approx(x0, abs=1e-9) and y == pytest.approx(y0, abs=1e-9)
    spot[0, 0] = np.nan  # non-finite pixels are left out
    spot[-1, 0] = np.inf
    assert fluoro_bancroft(spot, (sx, sy), 50.0, weighted=weighted)[0] == pytest.approx(x0, abs=1e-9)


def test_bancroft_batch_and_backgrounds():
    rng = np.random.default_rng(1)
    bgs = np.array([10.0, 50.0, 0.0, 120.0])
    stack = np.array([rng.poisson(gauss_spot((11, 11), 5.2, 4.9, 1.6, 1.6, base=b)) for b in bgs], float)
    out = fluoro_bancroft(stack, 1.6, bgs)
    assert out.shape == (4, 2)
    for k in range(4):
        assert np.array_equal(out[k], fluoro_bancroft(stack[k], 1.6, bgs[k]))
    assert np.all(np.isnan(fluoro_bancroft(np.full((2, 8, 8), 5.0), 1.5, 10.0)))  # nothing above background
    two = np.full((8, 8), 5.0)
    two[3, 3:5] = 30.0
    assert np.isnan(fluoro_bancroft(two, 1.5, 10.0)[0])  # 2 pixels: no unique position


def test_bancroft_bad_input():
    spot = gauss_spot((9, 9), 4, 4, 1.5, 1.5)
    for kw, match in [(dict(sigma=0), "sigma"), (dict(sigma=(1, 2, 3)), "sigma"), (dict(background=-1), "background"),
                      (dict(background=np.ones(3)), "background"), (dict(background="a"), "background")]:
        args = dict(roi=spot, sigma=1.5, background=10.0)
        args.update(kw)
        with pytest.raises(ValueError, match=match):
            fluoro_bancroft(**args)
    with pytest.raises(ValueError, match="roi"):
        fluoro_bancroft(np.ones(9), 1.5, 1.0)
    with pytest.raises(ValueError, match="roi"):
        fluoro_bancroft(np.ones((9, 9), bool), 1.5, 1.0)
    with pytest.raises(ValueError, match="background"):
        fluoro_bancroft(np.stack([spot, spot]), 1.5, np.ones(3))


def _snr_amplitude(snr, bg):
    # The paper's SNR = I0 / sqrt(var_bg + var_I0) with Poisson variances bg and I0 + bg.
    return 0.5 * (snr ** 2 + math.sqrt(snr ** 4 + 8 * snr ** 2 * bg))


def _rmse(est, truth):
    ok = np.all(np.isfinite(est), axis=1)
    return float(np.sqrt(np.mean((est[ok] - truth[ok]) ** 2))), float(ok.mean())


@pytest.mark.slow
def test_bancroft_precision_against_lsq_fit():
    """16x16, sigma 2 px, background 100 e-: weighted within 1.2x of the LSQ fit at SNR 9, 1.5x at SNR 6."""
    for snr, limit in ((9.0, 1.2), (6.0, 1.5)):
        rois, truth = simulate_rois(500, 16, 2.0, _snr_amplitude(snr, 100.0) * 8 * math.pi, 100.0, seed=int(snr))
        lsq, _ = _rmse(gauss_lsq(rois, 2.0, 100.0), truth)
        fb, ok = _rmse(fluoro_bancroft(rois, 2.0, 100.0), truth)
        plain, _ = _rmse(fluoro_bancroft(rois, 2.0, 100.0, weighted=False), truth)
        assert ok == 1.0
        assert fb < limit * lsq
        assert plain > 2.0 * lsq  # the paper's equal weights: the reason for the default
    rois, truth = simulate_rois(500, 16, 2.0, _snr_amplitude(3.0, 100.0) * 8 * math.pi, 100.0, seed=3)
    fb, ok = _rmse(fluoro_bancroft(rois, 2.0, 100.0), truth)
    assert ok > 0.99 and fb < 0.35  # still localises at SNR 3


# -- 2-D phasor and the Gaussian fits ------------------------------------------------------------------

def test_phasor_2d():
    spot = gauss_spot((9, 9), 4.0, 4.0, 1.3, 1.3)
    assert phasor_2d(spot) == pytest.approx((4.0, 4.0), abs=1e-12)
    off = gauss_spot((11, 10), 5.25, 4.8, 1.3, 1.3)
    x, y = phasor_2d(off)
    assert abs(x - 5.25) < 5e-3 and abs(y - 4.8) < 5e-3
    assert np.allclose(phasor_2d(off + 500.0), (x, y), atol=1e-9)  # a constant background cancels
    assert phasor_2d(np.stack([spot, spot])).shape == (2, 2)
    with pytest.raises(ValueError, match="roi"):
        phasor_2d(np.ones((2, 9)))


def test_gauss_lsq_exact_and_failures():
    spot = gauss_spot((12, 12), 5.7, 6.2, 1.6, 2.1)
    assert gauss_lsq(spot, 1.8, 50.0) == pytest.approx((5.7, 6.2), abs=1e-6)
    assert gauss_lsq(spot, 1.8) == pytest.approx((5.7, 6.2), abs=1e-6)  # offset fitted
    bad = spot.copy()
    bad[0, 0] = np.nan
    assert np.isnan(gauss_lsq(bad, 1.8, 50.0)[0])


@pytest.mark.slow
def test_gauss_mle_at_the_bound():
    """Microscopy spot (sigma 1.3 px, 7x7, 1000 photons, background 10): RMSE/CRLB near 1."""
    rois, truth = simulate_rois(1500, 7, 1.3, 1000.0, 10.0, seed=4)
    t = gauss_mle(rois, 1.3)
    assert np.all(t["converged"])
    err = np.column_stack([t["x"], t["y"]]) - truth
    bound = st.crlb.precision_limit(st.GaussianPSF(1.3), truth[:, 0], truth[:, 1], 1000.0, 10.0, roi=7)
    ratio = np.sqrt(np.mean(err ** 2)) / np.sqrt(np.mean(np.square(bound)))
    assert ratio == pytest.approx(1.0, abs=0.06)


def test_localize_spots_every_method():
    img, truth = st.simulate.star_field((96, 96), 12, st.GaussianPSF(1.3), st.Sensor(gain=1.0), flux=(3000, 6000),
                                        background=10, margin=10, seed=2)
    for method in ("mle", "phasor", "bancroft", "gauss"):
        t = localize_spots(img, 1.3, method=method)
        assert len(t) == len(truth)
        d = np.hypot(t["x"][:, None] - truth["x"][None, :], t["y"][:, None] - truth["y"][None, :]).min(axis=1)
        assert np.all(d < (0.3 if method == "phasor" else 0.15)), method
    rois, x0, y0, clipped = cut_rois(img, [(1.0, 50.0)], 7)
    assert clipped[0] and np.isnan(rois[0, 0, 0]) and x0[0] == -2
    with pytest.raises(ValueError, match="method"):
        localize_spots(img, 1.3, method="airy")
    with pytest.raises(ValueError, match="roi"):
        localize_spots(img, 1.3, roi=2)


# -- stage steps and the command line ------------------------------------------------------------------

def test_step_precision():
    rng = np.random.default_rng(0)
    pos = np.repeat([10.0, 11.25, 12.5], 50) + rng.normal(0, 0.02, 150)
    pos = np.append(pos, [1.0, 2.0])  # an incomplete last step is dropped
    pos[3] = np.nan
    t = step_precision(pos, 50, pixel_nm=80)
    assert len(t) == 3 and list(t["n"]) == [49, 50, 50]
    assert t["std"][1] == pytest.approx(np.std(pos[50:100], ddof=1))
    assert t["step_nm"][2] == pytest.approx(80 * (np.mean(pos[100:150]) - np.mean(pos[50:100])))
    with pytest.raises(ValueError, match="frames_per_step"):
        step_precision(pos, 1)
    with pytest.raises(ValueError, match="exceeds"):
        step_precision(pos[:10], 50)


def test_cli_track1d(tmp_path, capsys):
    x = 500 + np.repeat([0.0, 1.25], 100)
    sig = simulate_signals(200, 1024, x, 3.0, 10000, 2000, read_noise=100, seed=1).astype(np.uint16)
    np.save(tmp_path / "s.npy", sig)
    out = tmp_path / "pos.ecsv"
    assert main(["micro", "track1d", str(tmp_path / "s.npy"), "--pixel-nm", "80", "--frames-per-step", "100",
                 "--out", str(out), "-q"]) == 0
    t = Table.read(out)
    assert len(t) == 200 and {"frame", "x", "x_nm", "sigma", "flags"} <= set(t.colnames)
    steps = Table.read(tmp_path / "pos_steps.ecsv")
    assert steps["step_nm"][1] == pytest.approx(100.0, abs=2.0)
    assert np.all(steps["std_nm"] < 3.0)


def test_cli_localize(tmp_path):
    img, truth = st.simulate.star_field((64, 64), 5, st.GaussianPSF(1.3), st.Sensor(gain=1.0), flux=(3000, 6000),
                                        background=10, margin=8, seed=5)
    np.save(tmp_path / "f.npy", img)
    out = tmp_path / "l.ecsv"
    assert main(["micro", "localize", str(tmp_path / "f.npy"), "--method", "bancroft", "--sigma", "1.3",
                 "--out", str(out), "-q"]) == 0
    t = Table.read(out)
    assert len(t) == len(truth) and {"x", "y", "flags", "frame"} <= set(t.colnames)


@pytest.mark.parametrize("argv, match", [
    (["micro", "track1d", "missing.npy"], "no such file"),
    (["micro", "track1d", "{cube}"], "per row"),
    (["micro", "track1d", "{sig}", "--smooth", "4"], "smooth"),
    (["micro", "track1d", "{sig}", "--pixel-nm", "0"], "pixel_nm"),
    (["micro", "localize", "{sig}", "--sigma", "0"], "sigma"),
    (["micro", "localize", "{frame}", "--sigma", "1.3", "--roi", "1"], "roi"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, match):
    np.save(tmp_path / "cube.npy", np.ones((2, 3, 4)))
    np.save(tmp_path / "sig.npy", np.ones((3, 40)))
    np.save(tmp_path / "frame.npy", np.ones((30, 30)))
    argv = [a.format(cube=tmp_path / "cube.npy", sig=tmp_path / "sig.npy", frame=tmp_path / "frame.npy")
            for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err and match in err


def test_cli_micro_help(capsys):
    for argv in (["micro", "--help"], ["micro", "track1d", "--help"], ["micro", "localize", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        assert "example" in capsys.readouterr().out
    assert main(["micro"]) == 2
