import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from hypothesis.extra.numpy import arrays

import startrack as st
from startrack import FLAGS
from startrack.simulate import simulate_frame, spot_grid

PSF = st.GaussianPSF(0.4)


def _one(sensor, x=20.3, y=19.7, flux=5000.0, bg=10.0, seed=0, shape=(40, 40)):
    return simulate_frame(shape, x, y, flux, PSF, sensor, background=bg, seed=seed)


def test_recovers_a_star(sensor):
    img = _one(sensor)
    t = st.localize(img, [(20, 20)], PSF, sensor)
    r = t[0]
    assert r["converged"] and r["flags"] == 0
    assert abs(r["x"] - 20.3) < 5 * r["x_err"] and abs(r["y"] - 19.7) < 5 * r["y_err"]
    assert r["flux"] == pytest.approx(5000, rel=0.1)
    assert r["background"] == pytest.approx(10, abs=10)
    assert 1 <= r["iterations"] <= 10
    assert {"x", "y", "flux", "background", "x_err", "y_err", "loglike", "iterations", "converged",
            "flags"} <= set(t.colnames)


def test_table_positions_and_fixed_parameters(sensor):
    img, truth = spot_grid(PSF, 0.2, -0.1, 3000.0, sensor, background=5.0, repeats=50, seed=4)
    t = st.localize(img, truth, PSF, sensor, fit=("x", "y"), flux=3000.0, background=5.0)
    assert np.all(t["converged"])
    assert np.all(t["flux"] == 3000.0) and np.all(t["background"] == 5.0)
    assert np.all(np.isnan(t["flux_err"]))
    full = st.localize(img, truth, PSF, sensor)
    # Knowing flux and background shrinks the bound (each is evaluated at its own estimate,
    # so compare typical values).
    assert np.median(t["x_err"]) < np.median(full["x_err"])
    assert np.median(t["y_err"]) < np.median(full["y_err"])
    with pytest.raises(ValueError, match="flux is not fitted"):
        st.localize(img, truth[["x_cg", "y_cg"]], PSF, sensor, fit=("x", "y"), background=5.0)


def test_no_stars_gives_empty_table(sensor):
    t = st.localize(_one(sensor), np.zeros((0, 2)), PSF, sensor)
    assert len(t) == 0 and "x_err" in t.colnames


def test_nan_pixels_are_left_out(sensor):
    img = _one(sensor)
    clean = st.localize(img, [(20, 20)], PSF, sensor)[0]
    img[18, 22] = np.nan
    img[21, 18] = np.inf
    t = st.localize(img, [(20, 20)], PSF, sensor)[0]
    assert t["flags"] & FLAGS["masked"]
    assert t["converged"] and abs(t["x"] - clean["x"]) < 0.5 * clean["x_err"]


def test_mask_argument(sensor):
    img = _one(sensor)
    mask = np.zeros(img.shape, bool)
    mask[19, 19] = True
    t = st.localize(img, [(20, 20)], PSF, sensor, mask=mask)[0]
    assert t["flags"] & FLAGS["masked"] and t["converged"]
    with pytest.raises(ValueError, match="mask shape"):
        st.localize(img, [(20, 20)], PSF, sensor, mask=mask[:5])


def test_all_zero_roi_is_flagged_not_invented(sensor):
    img = _one(sensor)
    img[14:27, 14:27] = sensor.offset + sensor.gain * sensor.dark_var  # flat: nothing to fit
    t = st.localize(img, [(20, 20), (5, 5)], PSF, sensor)
    r = t[0]
    assert r["flags"] & FLAGS["bad_start"]
    # Either no star at all (tiny flux, huge error) or a flagged fit; never a confident position.
    assert (not r["converged"]) or r["flux"] < 5 * r["flux_err"] or np.isnan(r["x"])


def test_all_zero_image():
    t = st.localize(np.zeros((30, 30)), [(15, 15)], PSF, st.Sensor(gain=1.0))
    assert t["flags"][0] != 0
    assert np.isnan(t["x"][0]) or not t["converged"][0] or t["flux"][0] < 3 * t["flux_err"][0]


def test_position_off_the_image(sensor):
    img = _one(sensor)
    t = st.localize(img, [(-5, 3), (100, 10), (np.nan, 3), (20, 20)], PSF, sensor)
    assert np.all(t["flags"][:3] & FLAGS["no_fit"])
    assert np.all(np.isnan(t["x"][:3])) and np.all(np.isnan(t["x_err"][:3]))
    assert t["converged"][3]


def test_star_at_the_edge(sensor):
    img = _one(sensor, x=0.8, y=20.2)
    t = st.localize(img, [(1, 20)], PSF, sensor)[0]
    assert t["flags"] & FLAGS["edge"] and t["converged"]
    assert abs(t["x"] - 0.8) < 5 * t["x_err"]


def test_values_below_offset_are_flagged(sensor):
    img = _one(sensor)
    img[20, 18] = 0.0  # 37 DN below the offset: 185 e-, impossible for dark noise of 5 e-
    t = st.localize(img, [(20, 20)], PSF, sensor)[0]
    assert t["flags"] & FLAGS["below_offset"]


def test_saturated_star(sensor):
    s = st.Sensor(gain=0.2, offset=37, dark_var=25, saturation=1000)
    img = _one(s, flux=40000.0)
    assert (img >= 1000).sum() >= 1
    t = st.localize(img, [(20, 20)], PSF, s)[0]
    assert t["flags"] & FLAGS["saturated"]
    assert t["converged"] and abs(t["x"] - 20.3) < 0.05 and abs(t["y"] - 19.7) < 0.05
    assert t["flux"] == pytest.approx(40000, rel=0.1)  # the wings still carry the flux


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 20, 20)), "2-D"),
    (np.zeros(20), "2-D"),
    (np.array([["a", "b"]]), "numeric"),
    (np.zeros((20, 20), bool), "numeric"),
    (np.zeros((0, 5)), "empty"),
])
def test_bad_image(bad, match, sensor):
    with pytest.raises(ValueError, match=match):
        st.localize(bad, [(1, 1)], PSF, sensor)


def test_bad_arguments(sensor):
    img = _one(sensor)
    with pytest.raises(ValueError, match="positions"):
        st.localize(img, np.zeros((3, 3)), PSF, sensor)
    with pytest.raises(ValueError, match="model"):
        st.localize(img, [(20, 20)], "gaussian", sensor)
    with pytest.raises(ValueError, match="fit"):
        st.localize(img, [(20, 20)], PSF, sensor, fit=("x", "sigma"))
    with pytest.raises(ValueError, match="roi"):
        st.localize(img, [(20, 20)], PSF, sensor, roi=1)
    with pytest.raises(ValueError, match="sensor"):
        st.localize(img, [(20, 20)], PSF, {"gain": 1})


def test_integer_image_dtypes(sensor):
    img = _one(sensor)
    a = st.localize(img.astype(np.uint16), [(20, 20)], PSF, sensor)
    b = st.localize(img, [(20, 20)], PSF, sensor)
    assert a["x"][0] == b["x"][0]


def test_iteration_limit_is_flagged(sensor):
    img = _one(sensor)
    t = st.localize(img, [(20, 20)], PSF, sensor, max_iter=1, tol=1e-30)[0]
    assert not t["converged"] and t["flags"] & FLAGS["not_converged"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(img=arrays(np.float64, (12, 12), elements=hs.one_of(
           hs.floats(-1e6, 1e6), hs.just(np.nan), hs.just(np.inf), hs.just(0.0))),
       x=hs.floats(-3, 15), y=hs.floats(-3, 15))
def test_never_crashes_never_silently_wrong(img, x, y):
    t = st.localize(img, [(x, y)], PSF, st.Sensor(gain=1.0, dark_var=1.0))
    r = t[0]
    if r["converged"] and not r["flags"] & FLAGS["no_fit"]:
        assert np.isfinite(r["x"]) and np.isfinite(r["y"]) and np.isfinite(r["flux"])
    else:
        assert r["flags"] != 0


def test_ldl_solve_and_inverse_on_free_parameter_subsets():
    import importlib

    loc = importlib.import_module("startrack.localize")  # the module: the package exports the function
    rng = np.random.default_rng(11)
    M, dinv, unit, col, out, x = np.empty((4, 4)), np.empty(4), np.empty(4), np.empty(4), np.empty((4, 4)), np.empty(4)
    for _ in range(200):
        B = rng.normal(size=(4, 4))
        A = B @ B.T + 0.05 * np.eye(4)
        free = rng.random(4) < 0.7
        if not free.any():
            continue
        f = np.flatnonzero(free)
        b = rng.normal(size=4)
        assert loc._solve_free(A, b, free, 0.0, M, dinv, x)
        assert np.allclose(x[f], np.linalg.solve(A[np.ix_(f, f)], b[f])) and np.all(x[~free] == 0)
        loc._inverse_free(A, free, M, dinv, unit, col, out)
        assert np.allclose(out[np.ix_(f, f)], np.linalg.inv(A[np.ix_(f, f)]))
        assert np.all(np.isnan(out[~free])) and np.all(np.isnan(out[:, ~free]))
    assert not loc._solve_free(-np.eye(4), np.ones(4), np.ones(4, bool), 0.0, M, dinv, x)  # not positive definite
