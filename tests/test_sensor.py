import numpy as np
import pytest

from startrack import Sensor


def test_conversions_roundtrip():
    s = Sensor(gain=0.14, offset=37.0, dark_var=54.4, read_noise=2.0)
    e = np.array([0.0, 10.0, 1234.5])
    assert np.allclose(s.to_electrons(s.to_dn(e)), e)
    assert s.noise_floor == pytest.approx(54.4 + 4.0)
    # Poisson datum and mean agree in expectation: E[(P - s0)/K] = signal + bg + dark_var.
    assert s.poisson_mean(100.0, 5.0) == pytest.approx(100 + 5 + 54.4 + 4.0)
    assert s.mean_dn(100.0, 5.0) == pytest.approx(37 + 0.14 * (100 + 5 + 54.4))


def test_variance_matches_simulation(rng):
    s = Sensor(gain=0.5, offset=100.0, dark_var=30.0, read_noise=3.0)
    from startrack.simulate import expose

    dn = expose(np.full((400, 400), 200.0), s, rng)
    assert dn.mean() == pytest.approx(s.mean_dn(200.0), rel=2e-3)
    assert dn.var() == pytest.approx(s.variance_dn(200.0), rel=0.02)


def test_saturation_mask():
    s = Sensor(gain=1.0, saturation=4095)
    assert s.saturated([4094, 4095, 5000]).tolist() == [False, True, True]
    assert not Sensor(gain=1.0).saturated([1e9]).any()


@pytest.mark.parametrize("kw, match", [
    (dict(gain=0), "gain"),
    (dict(gain=-1), "gain"),
    (dict(gain=float("nan")), "gain"),
    (dict(gain=1, dark_var=-1), "dark_var"),
    (dict(gain=1, read_noise="x"), "read_noise"),
    (dict(gain=1, offset=100, saturation=50), "saturation"),
])
def test_bad_values_name_the_parameter(kw, match):
    with pytest.raises(ValueError, match=match):
        Sensor(**kw)


def test_toml(tmp_path):
    p = tmp_path / "camera.toml"
    p.write_text("[camera]\nwidth = 10\n[sensor]\ngain = 0.14\noffset = 37\ndark_var = 54.4\nsaturation = 4095\n")
    s = Sensor.from_toml(p)
    assert (s.gain, s.offset, s.dark_var, s.saturation) == (0.14, 37.0, 54.4, 4095.0)
    assert Sensor.from_toml(_write(tmp_path, s.to_toml())) == s


def _write(tmp_path, text):
    p = tmp_path / "again.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, match", [
    ("[camera]\nwidth=1\n", "no \\[sensor\\]"),
    ("[sensor]\noffset = 3\n", "gain"),
    ("[sensor]\ngain = 1\ngian = 2\n", "unknown"),
    ("[sensor\ngain = 1\n", "not valid TOML"),
])
def test_bad_toml(tmp_path, text, match):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        Sensor.from_toml(p)


def test_missing_toml(tmp_path):
    with pytest.raises(FileNotFoundError):
        Sensor.from_toml(tmp_path / "nope.toml")
