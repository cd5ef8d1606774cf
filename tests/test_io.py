"""Frames, arrays and tables in and out (startrack.io)."""

import numpy as np
import pytest
from astropy.io import fits

from startrack.io import read_array, read_frame, read_signals, sample_path, write_array


def test_sample_path():
    assert sample_path("sample_frame.fits").is_file()
    with pytest.raises(FileNotFoundError, match="startrack/data"):
        sample_path("nothing.fits")


def test_read_frame_of_a_fits_file_leaves_it_closed(tmp_path):
    p = tmp_path / "f.fits"
    fits.PrimaryHDU(np.arange(12, dtype=np.int16).reshape(3, 4)).writeto(p)
    data, meta = read_frame(p)
    np.testing.assert_array_equal(data, np.arange(12).reshape(3, 4))
    assert meta["bit_depth"] == 16 and "NAXIS1" in meta["header"]
    p.unlink()
    np.testing.assert_array_equal(data, np.arange(12).reshape(3, 4))  # a copy, not a view of the file


def test_arrays_round_trip(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    write_array(tmp_path / "a.npy", data)
    np.testing.assert_array_equal(read_array(tmp_path / "a.npy"), data)
    assert isinstance(read_array(tmp_path / "a.npy", mmap=True), np.memmap)
    with pytest.raises(ValueError, match="unknown array format"):
        write_array(tmp_path / "a.png", data)
    (tmp_path / "a.txt").write_text("1")
    with pytest.raises(ValueError, match="unknown stack format"):
        read_array(tmp_path / "a.txt", what="stack")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_array(tmp_path / "none.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read array"):
        read_array(tmp_path / "obj.npy")
    np.save(tmp_path / "str.npy", np.array(["a", "b"]))
    with pytest.raises(ValueError, match="real numbers"):
        read_array(tmp_path / "str.npy")
    pytest.importorskip("tifffile")
    write_array(tmp_path / "a.tif", data)
    np.testing.assert_array_equal(read_array(tmp_path / "a.tif"), data)


def test_read_signals(tmp_path):
    np.save(tmp_path / "one.npy", np.arange(8.0))
    assert read_signals(tmp_path / "one.npy").shape == (1, 8)
    np.save(tmp_path / "rows.npy", np.ones((5, 8)))
    assert read_signals(tmp_path / "rows.npy").shape == (5, 8)
    np.save(tmp_path / "cube.npy", np.ones((2, 5, 8)))
    with pytest.raises(ValueError, match="one readout per row"):
        read_signals(tmp_path / "cube.npy")
    fits.PrimaryHDU(np.ones((4, 8), np.float32)).writeto(tmp_path / "rows.fits")
    assert read_signals(tmp_path / "rows.fits").shape == (4, 8)
