"""The localisation core's promise: Poisson MLE at the Cramér–Rao bound (issue 2 acceptance).

Pixel-integrated Gaussian spots, N = 1500 e-, K = 0.2, dark variance 25 and 250 e-^2,
11 intra-pixel positions along x across one pixel (y at a pixel centre), 500 noise
realisations each, fitting all four parameters (4-parameter bound) and x, y with known
flux and background (known-flux bound).
"""

import numpy as np
import pytest

import startrack as st
from startrack.evaluate import intrapixel_accuracy

ALL = ("x", "y", "flux", "background")


def _excluded(r, sd2, dx):
    # r = 0.2 px under the high dark noise, spot within 0.2 px of the pixel centre: the star
    # sits in one pixel and only a ~2-sigma signal in a neighbour tells left from right, so
    # the likelihood is bimodal and ~5 % of realisations fall on the mirror solution. A
    # multi-start (global) MLE gives the same RMSE (checked below): no estimator reaches the
    # local bound there.
    return r == 0.2 and sd2 == 250.0 and abs(dx) <= 0.2 + 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("sd2", [25.0, 250.0])
@pytest.mark.parametrize("r", [0.2, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("fit", [ALL, ("x", "y")], ids=["4-param", "known-flux"])
def test_mle_reaches_the_crlb(r, sd2, fit):
    sensor = st.Sensor(gain=0.2, dark_var=sd2)
    t = intrapixel_accuracy(st.GaussianPSF(r), 1500.0, 0.0, sensor, fit=fit, repeats=500, seed=7)
    assert np.all(t["n_ok"] == 500), "every fit must converge"
    checked = 0
    for row in t:
        if row["pl_x"] >= 0.05 or _excluded(r, sd2, row["dx"]):
            continue
        checked += 1
        assert abs(row["bias_x"]) < 0.2 * row["pl_x"], f"bias at dx={row['dx']:+.1f}"
        assert 0.9 <= row["ratio"] <= 1.1, f"RMSE/PL = {row['ratio']:.3f} at dx={row['dx']:+.1f}"
    if r < 1.0 or sd2 < 250:  # (r = 1 px under the high dark noise has PL > 0.05 px everywhere)
        assert checked >= 6
    # CG's S-curve beside it. CG wins only exactly at the pixel centre of a tiny PSF, where its
    # bias happens to vanish; averaged over the pixel, the MLE is better, and far better for small PSFs.
    rms = lambda a: np.sqrt(np.mean(np.square(a)))  # noqa: E731
    assert rms(t["rmse_x"]) < rms(t["rmse_cg"])
    if r <= 0.3:
        assert t["rmse_cg"].max() > 3 * t["rmse_x"][np.abs(t["dx"]) == 0.5].max()


@pytest.mark.slow
def test_bimodal_region_is_the_global_maximum():
    """Where the bound is not reached, restarting from mirrored starts finds nothing better."""
    s = st.Sensor(gain=0.2, dark_var=250.0)
    m = st.GaussianPSF(0.2)
    img, truth = st.simulate.spot_grid(m, 0.1, 0.0, 1500.0, s, repeats=1000, seed=3)
    base = st.localize(img, truth, m, s)
    best = base.copy()
    for off in (-0.3, -0.15, 0.15, 0.3):
        r = st.localize(img, np.column_stack([base["x_start"] + off, base["y_start"]]), m, s, start="given")
        better = np.asarray(r["loglike"]) > np.asarray(best["loglike"]) + 1e-9
        best[better] = r[better]
    e0 = np.asarray(base["x"]) - truth["x"]
    e1 = np.asarray(best["x"]) - truth["x"]
    rmse0, rmse1 = np.sqrt(np.mean(e0 ** 2)), np.sqrt(np.mean(e1 ** 2))
    pl = st.crlb.precision_limit(m, 10.1, 10.0, 1500.0, 0.0, s)[0]
    assert abs(rmse1 / rmse0 - 1) < 0.02
    assert rmse0 > 1.2 * pl  # the documented gap
    assert np.mean(np.abs(e0 + 0.2) < 0.1) > 0.02  # the mirror mode
