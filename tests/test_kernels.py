"""The shared numba kernels (startrack._kernels) against numpy and libm."""

import math

import numpy as np


def test_vectorised_normal_tails_and_densities_match_libm():
    from startrack._kernels import normal_edges

    t = np.concatenate([np.linspace(-40.0, 40.0, 160001), [0.0, 0.6629, 0.6630, 5.6568, 5.6569, -1e-300]])
    n = -(-t.size // 16) * 16
    tt = np.zeros(n)
    tt[:t.size] = t
    tail, pdf = np.empty(n), np.empty(n)
    normal_edges(tt, tail, pdf, n)
    tail, pdf = tail[:t.size], pdf[:t.size]
    ref_tail = np.array([0.5 * math.erfc(abs(v) / math.sqrt(2.0)) for v in t])
    ref_pdf = np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    normal = ref_tail > 1e-300  # both underflow together below that
    assert np.max(np.abs(tail - ref_tail)[normal] / ref_tail[normal]) < 1e-12
    assert np.max(np.abs(tail - ref_tail)) < 2e-16
    dense = ref_pdf > 1e-300  # below e^-708 the density is returned as 0
    assert np.max(np.abs(pdf - ref_pdf)[dense] / ref_pdf[dense]) < 1e-13
    assert np.all(tail[~normal] < 1e-290) and np.all(pdf[~dense] < 1e-300) and np.all(pdf >= 0)


def test_vectorised_log_is_within_two_ulp_of_numpy():
    from startrack._kernels import log_into

    rng = np.random.default_rng(3)
    x = np.concatenate([np.exp(rng.uniform(-700, 700, 100000)), rng.uniform(0.5, 2.0, 100000),
                        [1.0, 2.0, 0.5, np.nextafter(1.0, 2.0), math.sqrt(2), np.nextafter(math.sqrt(2), 2),
                         2.3e-308, 1.7e308]])
    out = np.empty_like(x)
    log_into(x.copy(), out, x.size)
    ref = np.log(x)
    assert np.max(np.abs(out - ref) / np.spacing(np.maximum(np.abs(ref), 1e-300))) <= 2.0
    assert out[x.size - 8] == 0.0


def test_median_inplace_matches_numpy_for_every_ring_size():
    from startrack._kernels import median_inplace

    rng = np.random.default_rng(5)
    for m in range(1, 90):  # through the sorting networks (<= 64) and the fallback sort
        for _ in range(50):
            ring = rng.integers(0, 6, m).astype(float)  # many ties
            buf = np.concatenate([ring, np.full(3, -1e9)])  # values past m must not take part
            assert median_inplace(buf, m) == np.median(ring)
            assert np.array_equal(buf[:m], np.sort(ring))
