import math
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import Distance, SkyCoord
from astropy.table import Table
from astropy.time import Time

from startrack.sky.catalog import Catalog, load_catalog, radec_to_vector

T = Time("2026-11-25T22:00:00", scale="utc")


@pytest.fixture(scope="module")
def cat():
    return load_catalog(8.0)


def test_bundled_catalog(cat):
    assert 37000 < len(cat) < 38500  # Hipparcos 2 has ~37,600 stars with Hp <= 8
    assert cat.hip[0] == 32349  # Sirius is the brightest
    assert np.all(np.diff(cat.mag) >= 0)
    vega = cat.table[cat.hip == 91262][0]
    assert vega["ra"] == pytest.approx(279.2341, abs=1e-3) and vega["dec"] == pytest.approx(38.7830, abs=1e-3)
    assert len(load_catalog(5.0)) < 2000


def test_propagation_matches_astropy(cat):
    sub = cat.select(slice(0, 2000))
    t = sub.table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc = SkyCoord(ra=t["ra"], dec=t["dec"], pm_ra_cosdec=t["pmra"], pm_dec=t["pmdec"],
                      distance=Distance(parallax=np.clip(np.asarray(t["plx"]), 0.5, None) * u.mas),
                      radial_velocity=0 * u.km / u.s,
                      obstime=Time(1991.25, format="jyear", scale="tcb")).apply_space_motion(new_obstime=T)
    ref = sc.cartesian.xyz.value.T
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    err_mas = np.linalg.norm(sub.propagate(T) - ref, axis=1) / math.radians(1 / 3.6e6)
    assert err_mas.max() < 0.1
    # Arcturus moves ~2.3 arcsec/yr: 35 years is more than a pixel of a star tracker
    moved = np.linalg.norm(sub.propagate(T) - sub.vectors, axis=1)[sub.hip == 69673][0]
    assert 70 < moved / math.radians(1 / 3600) < 90


def test_apparent_is_annual_aberration(cat):
    """Against the first-order aberration formula with the Earth's velocity from ERFA (independent path)."""
    import erfa

    sub = cat.select(np.asarray(cat.table["plx"]) < 10)  # parallax below 0.01 arcsec
    app = sub.apparent(T)
    geo = sub.propagate(T)
    _, pvb = erfa.epv00(T.tdb.jd1, T.tdb.jd2)
    beta = pvb["v"] * (u.au / u.day).to(u.m / u.s) / 299792458.0
    expect = geo + beta - (geo @ beta)[:, None] * geo
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    sun = -erfa.epv00(T.tdb.jd1, T.tdb.jd2)[0]["p"]  # heliocentric Earth -> direction to the Sun
    far = geo @ (sun / np.linalg.norm(sun)) < math.cos(math.radians(20))  # light deflection < 0.03"
    err = np.linalg.norm(app - expect, axis=1)[far] / math.radians(1 / 3600)
    assert err.max() < 0.05
    shift = np.linalg.norm(app - geo, axis=1) / math.radians(1 / 3600)
    assert 19 < shift.max() < 21.5
    from astropy.utils import iers

    assert iers.conf.auto_download is False


def test_merge_close_pairs():
    t = Table({"hip": [1, 2, 3], "ra": [10.0, 10.0 + 5 / 3600, 20.0], "dec": [0.0, 0.0, 0.0],
               "pmra": [0.0, 0, 0], "pmdec": [0.0, 0, 0], "plx": [1.0, 1, 1], "hp": [5.0, 5.0, 6.0],
               "b_v": [0.5] * 3, "v_i": [0.5] * 3, "n_comp": [1] * 3, "sol_type": [5] * 3, "n_merged": [1] * 3})
    merged = Catalog(t, 8.0).merge(math.radians(10 / 3600))
    assert len(merged) == 2
    m = merged.table[0]
    assert m["hip"] == 1 and m["n_merged"] == 2
    assert m["hp"] == pytest.approx(5.0 - 2.5 * math.log10(2), abs=1e-5)
    assert m["ra"] == pytest.approx(10.0 + 2.5 / 3600, abs=1e-9)
    assert merged.table[1]["n_merged"] == 1


def test_load_with_merge(cat):
    merged = load_catalog(7.0, merge_radius=math.radians(60 / 3600))
    assert merged.mag.max() <= 7.0
    assert (merged.table["n_merged"] > 1).sum() > 20
    # no two entries closer than the merge radius remain
    from scipy.spatial import cKDTree

    assert len(cKDTree(merged.vectors).query_pairs(math.radians(59 / 3600))) == 0


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="mag_limit"):
        load_catalog("bright")
    with pytest.raises(FileNotFoundError, match="catalog"):
        load_catalog(6.0, path=tmp_path / "none.fits")
    with pytest.raises(ValueError, match="time"):
        load_catalog(3.0).apparent("yesterday")


def test_radec_vector_round_trip():
    from startrack.sky.catalog import vector_to_radec

    v = radec_to_vector([0.1, 6.0], [-1.2, 0.3])
    ra, dec = vector_to_radec(v)
    np.testing.assert_allclose(ra, [0.1, 6.0])
    np.testing.assert_allclose(dec, [-1.2, 0.3])
