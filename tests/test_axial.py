"""Dual-plane axial localisation: shipped models, ONNX back-ends, training, NCC baseline, CLI."""

import json

import numpy as np
import pytest

from startrack.cli import main
from startrack.microscope import axial, defocus
from startrack.microscope.axial import AxialLocalizer, LibraryMatcher


def _held_out(mode, n=300, seed=2026, z_range=(-1.5, 1.5), lateral_px=None):
    rng = np.random.default_rng(seed)
    z = rng.uniform(*z_range, n)
    return z, defocus.simulate_pairs(z, mode=mode, lateral_px=lateral_px, rng=rng)


def _rmse_nm(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)) * 1e3)


@pytest.mark.parametrize("mode, bound_nm", [("darkfield", 60.0), ("brightfield", 90.0)])
def test_shipped_model_localises_held_out_pairs(mode, bound_nm):
    loc = AxialLocalizer.load(mode=mode)
    assert loc.meta["mode"] == mode and loc.n_planes == 2 and loc.size == 32
    assert loc.path.stat().st_size <= 1_000_000
    z, pairs = _held_out(mode)
    zp = loc.predict(pairs)
    rmse = _rmse_nm(zp, z)
    assert rmse < bound_nm
    assert rmse < 0.1 * _rmse_nm(z, z.mean())  # a constant guess is ~870 nm off


def test_onnxruntime_and_opencv_agree():
    z, pairs = _held_out("darkfield", n=64)
    a = AxialLocalizer.load(backend="onnxruntime").predict(pairs)
    b = AxialLocalizer.load(backend="opencv").predict(pairs)
    assert np.max(np.abs(a - b)) < 1e-3  # um


def test_predict_layouts_and_cropping():
    loc = AxialLocalizer.load()
    z, pairs = _held_out("darkfield", n=8, seed=3, lateral_px=np.zeros((8, 2)))
    zp = loc.predict(pairs)
    assert isinstance(loc.predict(pairs[0]), float)
    assert loc.predict(pairs[0]) == pytest.approx(zp[0], abs=1e-6)
    np.testing.assert_allclose(loc.predict(np.moveaxis(pairs, 1, -1)), zp, atol=1e-6)
    # the same pairs inside larger frames (flat background) are cut out around the particle again
    big = np.full((8, 2, 50, 60), defocus.DEFAULT_BACKGROUND["darkfield"], np.float32)
    big[:, :, 7:39, 21:53] = pairs
    crops, origin = axial.crop_pairs(big)
    np.testing.assert_array_equal(origin, np.tile([21, 7], (8, 1)))
    np.testing.assert_allclose(loc.predict(big), zp, atol=1e-6)


@pytest.mark.parametrize("pairs, match", [
    (np.full((2, 2, 32, 32), np.nan), "pairs: contains NaN"),
    (np.ones((2, 3, 32, 32)), "2 plane"),
    (np.ones((32, 32)), "expected shape"),
    (np.ones((2, 2, 16, 16)), "smaller than"),
    (np.array(["a"]), "numeric"),
])
def test_predict_rejects_bad_input(pairs, match):
    with pytest.raises(ValueError, match=match):
        AxialLocalizer.load().predict(pairs)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="backend"):
        AxialLocalizer.load(backend="tensorrt")
    with pytest.raises(ValueError, match="mode"):
        AxialLocalizer.load(mode="phase")
    with pytest.raises(FileNotFoundError, match="no such model"):
        AxialLocalizer.load(tmp_path / "none.onnx")
    (tmp_path / "m.onnx").write_bytes(b"not onnx")
    with pytest.raises(FileNotFoundError, match="sidecar"):
        AxialLocalizer.load(tmp_path / "m.onnx")
    (tmp_path / "m.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a startrack axial model"):
        AxialLocalizer.load(tmp_path / "m.onnx")


def test_library_matcher_recovers_noise_free_z():
    matcher = LibraryMatcher.simulated(z_range=(-1.1, 1.1), step_um=0.01, offsets_px=(-1 / 3, 0, 1 / 3))
    rng = np.random.default_rng(5)
    z = rng.uniform(-1, 1, 60)
    on_grid = defocus.render(z, lateral_px=np.zeros((60, 2)))
    assert np.max(np.abs(matcher.predict(on_grid) - z)) < 1e-3  # um: parabolic refinement between 10 nm steps
    off_grid = defocus.render(z, rng=rng)  # offsets within +-0.5 px: up to 0.24 px from a library entry
    assert np.max(np.abs(matcher.predict(off_grid) - z)) < 5e-3
    with pytest.raises(ValueError, match="does not match the library"):
        matcher.predict(np.ones((1, 2, 16, 16)))


def test_axial_errors_table():
    z = np.repeat([0.05, 0.15], 50)
    zp = z + np.where(z < 0.1, 0.010, -0.020)
    t = axial.axial_errors(z, zp, bin_um=0.1, z_range=(0.0, 0.2))
    np.testing.assert_allclose(t["bias_nm"], [10, -20], atol=1e-9)
    np.testing.assert_allclose(t["rmse_nm"], [10, 20], atol=1e-9)
    assert list(t["n"]) == [50, 50] and t.meta["rmse_nm"] == pytest.approx(np.sqrt(250))


def test_train_on_simulated_pairs_and_export(tmp_path):
    pytest.importorskip("torch")
    model = axial.train(n_train=3000, n_val=400, epochs=4, batch_size=128, channels=(8, 16, 16), hidden=32, seed=1)
    m = model.meta
    assert m["n_planes"] == 2 and m["metrics"]["epochs_run"] <= 4
    assert m["metrics"]["val_rmse_um"] < 0.35  # learned: a constant guess is 1.15 um off over [-2, 2]
    onnx_path, json_path = model.save(tmp_path / "tiny")
    assert onnx_path.suffix == ".onnx" and json.loads(json_path.read_text())["model_bytes"] > 0
    z, pairs = _held_out("darkfield", n=200)
    z_torch = model.predict(pairs)
    for backend in axial.BACKENDS:
        assert np.max(np.abs(AxialLocalizer.load(onnx_path, backend=backend).predict(pairs) - z_torch)) < 1e-3


def test_single_plane_training_uses_one_channel():
    pytest.importorskip("torch")
    model = axial.train(defocus.Optics().with_planes(-2.5), n_train=500, n_val=100, epochs=1,
                        channels=(8, 8, 8), hidden=8)
    assert model.meta["n_planes"] == 1 and model.meta["optics"]["planes_um"] == [-2.5]
    assert model.predict(np.ones((3, 1, 32, 32))).shape == (3,)


def test_train_from_stack_and_evaluate_on_a_second_stack():
    pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    z = np.repeat(np.arange(-1.5, 1.5001, 0.05), 4)  # a piezo scan, 4 frames per step
    frames = np.full((z.size, 2, 40, 40), 20.0, np.float32)
    frames[:, :, 3:35, 5:37] = defocus.simulate_pairs(z, background=0, rng=rng)
    model = axial.train_from_stack(np.moveaxis(frames, 1, -1), z, epochs=4, channels=(8, 16, 16), hidden=32)
    assert model.meta["source"] == "stack" and model.meta["z_range_um"] == pytest.approx([-1.5, 1.5])
    z2, second = _held_out("darkfield", n=200, seed=8)
    assert _rmse_nm(model.predict(second), z2) < 0.5 * _rmse_nm(z2, z2.mean())
    with pytest.raises(ValueError, match="z_um: 3 values"):
        axial.train_from_stack(frames, z[:3])


def _cli_stack(tmp_path):
    stack = tmp_path / "s.npy"
    assert main(["micro", "axial", "simulate", "--n", "120", "--seed", "4", "--out", str(stack), "-q"]) == 0
    assert np.load(stack).shape == (120, 2, 32, 32)
    return stack, tmp_path / "s_z.ecsv"


def test_cli_simulate_evaluate_predict_with_the_shipped_model(tmp_path):
    from startrack.io import read_table

    stack, zfile = _cli_stack(tmp_path)
    errors, png, out = tmp_path / "e.ecsv", tmp_path / "e.png", tmp_path / "z.ecsv"
    assert main(["micro", "axial", "evaluate", str(stack), str(zfile), "--out", str(errors), "--plot", str(png),
                 "-q"]) == 0
    assert png.is_file() and read_table(errors).meta["rmse_nm"] < 60
    assert main(["micro", "axial", "predict", str(stack), "--model", "darkfield", "--backend", "opencv",
                 "--out", str(out), "-q"]) == 0
    z, zp = np.asarray(read_table(zfile)["z_um"]), np.asarray(read_table(out)["z_um"])
    assert _rmse_nm(zp, z) < 60


def test_cli_train_then_evaluate_and_predict(tmp_path):
    pytest.importorskip("torch")
    stack, zfile = _cli_stack(tmp_path)
    model = tmp_path / "m.onnx"
    assert main(["micro", "axial", "train", str(stack), str(zfile), "--epochs", "1", "--out", str(model),
                 "-q"]) == 0
    assert model.is_file() and json.loads(model.with_suffix(".json").read_text())["source"] == "stack"
    assert main(["micro", "axial", "evaluate", str(stack), str(zfile), "--model", str(model), "--out",
                 str(tmp_path / "e.ecsv"), "-q"]) == 0
    assert main(["micro", "axial", "predict", str(stack), "--model", str(model), "--out",
                 str(tmp_path / "z.ecsv"), "-q"]) == 0


@pytest.mark.parametrize("argv, match", [
    (["predict", "{missing}"], "no such file"),
    (["predict", "{bad}"], "expected 2 plane"),
    (["evaluate", "{stack}", "{stack}"], "z values"),
    (["simulate", "--z-range", "1", "-1"], "z-range"),
])
def test_cli_user_errors_are_one_line(tmp_path, capsys, argv, match):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((4, 3, 32, 32)))
    stack = tmp_path / "s.npy"
    np.save(stack, np.ones((4, 2, 32, 32)))
    argv = [a.format(missing=tmp_path / "none.npy", bad=bad, stack=stack) for a in argv]
    assert main(["micro", "axial", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err


def test_falls_back_to_opencv_without_onnxruntime(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes "import onnxruntime" fail
    loc = AxialLocalizer.load()
    assert loc.backend == "opencv"
    z, pairs = _held_out("darkfield", n=50)
    assert _rmse_nm(loc.predict(pairs), z) < 60
    with pytest.raises(ValueError, match="onnxruntime is not installed"):
        AxialLocalizer.load(backend="onnxruntime")


def test_read_stack_layouts_and_read_z(tmp_path):
    from astropy.table import Table

    from startrack.io import write_table

    pairs = np.arange(3 * 2 * 4 * 5, dtype=np.float32).reshape(3, 2, 4, 5)
    np.save(tmp_path / "first.npy", pairs)
    np.save(tmp_path / "last.npy", np.moveaxis(pairs, 1, -1))
    np.save(tmp_path / "pages.npy", pairs.reshape(6, 4, 5))  # a z-stack whose pages alternate the planes
    for name in ("first", "last", "pages"):
        np.testing.assert_array_equal(axial.read_stack(tmp_path / f"{name}.npy"), pairs)
    pytest.importorskip("tifffile")
    import tifffile

    tifffile.imwrite(tmp_path / "pages.tif", pairs.reshape(6, 4, 5))
    np.testing.assert_array_equal(axial.read_stack(tmp_path / "pages.tif"), pairs)
    z = np.array([-0.5, 0.0, 0.5])
    write_table(Table({"z_um": z}), tmp_path / "z.ecsv")
    np.save(tmp_path / "z.npy", z)
    np.savetxt(tmp_path / "z.txt", z)
    for name in ("z.ecsv", "z.npy", "z.txt"):
        np.testing.assert_array_equal(axial.read_z(tmp_path / name, 3), z)
    with pytest.raises(ValueError, match="3 z values for 4 pairs"):
        axial.read_z(tmp_path / "z.npy", 4)
    write_table(Table({"depth": z}), tmp_path / "bad.ecsv")
    with pytest.raises(ValueError, match="no z_um column"):
        axial.read_z(tmp_path / "bad.ecsv")
    with pytest.raises(ValueError, match="unknown stack format"):
        axial.read_stack(tmp_path / "z.txt")
