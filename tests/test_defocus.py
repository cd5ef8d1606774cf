"""Defocus simulator: Airy focus, Parseval normalisation, symmetry through focus, bright-field contrast flip,
lateral shift, noise statistics, and (optional) agreement with Gibson–Lanni's scalar model from psfmodels."""

import numpy as np
import pytest
from scipy.special import j1

from startrack.microscope.defocus import Optics, random_z, render, simulate_pairs

CENTRED = (0.0, 0.0)


def test_in_focus_is_the_airy_pattern():
    # Uniform pupil, pixels much smaller than the Airy core: the image is [2 J1(v) / v]^2, v = 2 pi NA r / lambda.
    o = Optics(pixel_um=0.02, size=41, aplanatic=False, pupil_samples=96, planes_um=(0.0,))
    img = render(0.0, o, lateral_px=CENTRED)[0, 0]
    r = (np.arange(41) - 20) * o.pixel_um
    v = 2 * np.pi * o.na / o.wavelength_um * np.where(r == 0, 1e-12, r)
    airy = (2 * j1(v) / v) ** 2
    row = img[20] / img[20, 20]
    assert np.max(np.abs(row - airy)) < 0.01


def test_high_na_pupil_is_finite():
    # NA > n / sqrt(2): the corners of the square pupil sampling reach k_z = 0, outside the disc.
    img = render(np.array([0.0, 1.0]), Optics(na=1.3, n=1.5, planes_um=(0.0,)), lateral_px=CENTRED)
    assert np.all(np.isfinite(img)) and img.max() > 0


def test_darkfield_energy_is_conserved_through_focus():
    # Parseval: a crop wide enough for the defocus blur catches all of the one photon, at every defocus.
    o = Optics(size=96, planes_um=(0.0,))
    total = render(np.array([0.0, 1.0, 2.0]), o, lateral_px=CENTRED).sum(axis=(2, 3))[:, 0]
    assert np.all(np.abs(total - 1) < 0.02), total
    # The 32 px default crop loses the outer rings, more so when defocused.
    small = render(np.array([0.0, 2.5]), Optics(planes_um=(0.0,)), lateral_px=CENTRED).sum(axis=(2, 3))[:, 0]
    assert 0.8 < small[1] < small[0] < 0.99


def test_darkfield_cannot_tell_above_from_below_focus():
    o = Optics(planes_um=(0.0,))
    above, below = render(np.array([0.8, -0.8]), o, lateral_px=CENTRED)[:, 0]
    assert np.max(np.abs(above - below)) < 1e-6 * above.max()
    # ... but two planes can: the pair at z and -z is swapped, not equal.
    pair = render(np.array([0.8, -0.8]), Optics(), lateral_px=CENTRED)
    np.testing.assert_allclose(pair[0, 0], pair[1, 1], atol=1e-6 * pair.max())
    assert np.max(np.abs(pair[0, 0] - pair[1, 0])) > 0.2 * pair.max()


def test_brightfield_contrast_flips_through_focus_for_a_phase_particle():
    o = Optics(planes_um=(0.0,))
    z = np.array([-0.6, 0.6])
    centre = render(z, o, mode="brightfield", lateral_px=CENTRED, scattering=0.3j)[:, 0, 15:17, 15:17].mean(axis=(1, 2))
    assert (centre[0] - 1) * (centre[1] - 1) < 0 and np.all(np.abs(centre - 1) > 0.05), centre
    # A purely absorbing particle gives the same image either side of focus.
    absorb = render(z, o, mode="brightfield", lateral_px=CENTRED, scattering=-0.3)[:, 0]
    np.testing.assert_allclose(absorb[0], absorb[1], atol=1e-6)


def test_brightfield_has_no_reflection_fringes():
    # With the on-axis carrier n z / lambda left in, the centre intensity would oscillate with period
    # lambda / 2n = 0.18 um; without it, it varies once over the depth of field.
    o = Optics(planes_um=(0.0,))
    z = np.linspace(0.0, 1.0, 51)
    centre = render(z, o, mode="brightfield", lateral_px=CENTRED, scattering=0.3j)[:, 0, 15:17, 15:17].mean(axis=(1, 2))
    turns = np.count_nonzero(np.diff(np.sign(np.diff(centre))) != 0)
    assert turns <= 1, centre


def test_lateral_offset_moves_the_image():
    o = Optics(planes_um=(0.0,))
    z = np.full(3, 0.7)
    centred, whole, half = render(z, o, lateral_px=[(0.0, 0.0), (2.0, -1.0), (0.5, 0.0)])[:, 0]
    # A whole-pixel offset is the same image moved by whole pixels ...
    np.testing.assert_allclose(whole[4:-4, 4:-4], np.roll(centred, (-1, 2), axis=(0, 1))[4:-4, 4:-4],
                               atol=1e-6 * centred.max())
    # ... and half a pixel right makes it mirror-symmetric about the centre of column 16 (the crop centre is 15.5).
    np.testing.assert_allclose(half[:, 1:], half[:, 1:][:, ::-1], atol=1e-6 * centred.max())
    assert np.max(np.abs(centred[:, 1:] - centred[:, 1:][:, ::-1])) > 0.1 * centred.max()


def test_noise_statistics_are_poisson_plus_read_noise():
    z = np.full(4000, 0.3)
    kw = dict(mode="darkfield", lateral_px=CENTRED, photons=5000, background=20, read_noise=2.0)
    mean = simulate_pairs(z[:1], noise=False, **kw)[0]
    img = simulate_pairs(z, rng=7, **kw)
    assert img.dtype == np.float32 and img.shape == (4000, 2, 32, 32)
    m, v = img.mean(axis=0), img.var(axis=0)
    # 4000 samples: the mean within 4 standard errors, the variance within 10 % of mean + read_noise^2.
    assert np.all(np.abs(m - mean) < 4 * np.sqrt(mean / 4000) + 0.01)
    np.testing.assert_allclose(v, mean + 4.0, rtol=0.10)


def test_seeded_and_batched_consistently():
    z = random_z(10, rng=3)
    assert np.all((z >= -2) & (z <= 2))
    a = simulate_pairs(z, rng=5)
    np.testing.assert_array_equal(a, simulate_pairs(z, rng=5))
    one = render(z[4], lateral_px=(0.1, 0.2))
    many = render(z, lateral_px=np.tile([0.1, 0.2], (10, 1)))
    np.testing.assert_allclose(one[0], many[4], atol=1e-9)


@pytest.mark.parametrize("kw, match", [
    (dict(z_um=[np.nan]), "z_um"),
    (dict(z_um=[0.0], mode="phase"), "mode"),
    (dict(z_um=[0.0, 1.0], lateral_px=np.zeros((3, 2))), "lateral_px"),
    (dict(z_um=[0.0], photons=-1), "photons"),
])
def test_bad_input_names_the_parameter(kw, match):
    with pytest.raises(ValueError, match=match):
        simulate_pairs(**kw)


def test_bad_optics_names_the_field():
    with pytest.raises(ValueError, match="na"):
        Optics(na=1.6)
    with pytest.raises(ValueError, match="planes_um"):
        Optics(planes_um=())


@pytest.mark.optional
@pytest.mark.parametrize("z", [0.0, 0.5, -1.0])
def test_matches_gibson_lanni_scalar_model(z):
    psfmodels = pytest.importorskip("psfmodels")
    # Matched indices: Gibson–Lanni reduces to pure defocus with a uniform pupil (no aplanatic factor).
    params = dict(NA=0.8, ni=1.5, ni0=1.5, ns=1.5, ng=1.5, ng0=1.5, tg=170, tg0=170, ti0=150, sf=3)
    gl = psfmodels.scalar_psf(zv=[z], nx=63, dxy=0.05, pz=0.0, wvl=0.55, params=params, normalize=False)[0]
    o = Optics(pixel_um=0.05, size=63, aplanatic=False, pupil_samples=96, planes_um=(z,))
    ours = render(0.0, o, lateral_px=CENTRED)[0, 0]
    gl, ours = gl / gl.sum(), ours / ours.sum()
    assert np.max(np.abs(gl - ours)) < 0.01 * ours.max()
