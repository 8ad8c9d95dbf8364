"""State-drift measures: slow references, properties of MMD^2 / sliced W1 / Jaccard, and the
featuriser's determinism (across processes too: no salted hash)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import wasserstein_distance

from repro.errors import ConfigError
from repro.metrics import (
    centroid_distance,
    drift_report,
    featurize,
    jaccard,
    median_bandwidth,
    mmd2_unbiased,
    prefix_states,
    sliced_wasserstein,
)

# ------------------------------------------------------------------------------------------
# Slow, obvious references
# ------------------------------------------------------------------------------------------


def ref_median_bandwidth(X, Y):
    Z = list(X) + list(Y)
    dist = [math.dist(Z[i], Z[j]) for i in range(len(Z)) for j in range(i + 1, len(Z))]
    med = float(np.median(dist))
    if med == 0.0:
        positive = [d for d in dist if d > 0]
        med = float(np.median(positive)) if positive else 1.0
    return med


def ref_mmd2_unbiased(X, Y, bandwidth=None):
    """Gretton et al. (2012) eq. 3, one pair at a time."""
    sigma = ref_median_bandwidth(X, Y) if bandwidth is None else bandwidth

    def k(a, b):
        return math.exp(-(math.dist(a, b) ** 2) / (2 * sigma**2))

    m, n = len(X), len(Y)
    xx = sum(k(X[i], X[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(Y[i], Y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(X[i], Y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def ref_featurize_row(text, n, dim, seed):
    import hashlib

    row = np.zeros(dim)
    tokens = text.split()
    for k in n:
        for i in range(len(tokens) - k + 1):
            gram = " ".join(tokens[i : i + k]).encode()
            h = hashlib.blake2b(gram, digest_size=8, salt=seed.to_bytes(16, "little")).digest()
            row[int.from_bytes(h, "little") % dim] += 1
    norm = np.linalg.norm(row)
    return row / norm if norm else row


# ------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------


@st.composite
def two_samples(draw, max_rows=8, max_dim=4):
    """Two small Gaussian samples of equal dimension, the second possibly shifted; some rows repeat."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    d = draw(st.integers(1, max_dim))
    m, n = draw(st.integers(2, max_rows)), draw(st.integers(2, max_rows))
    X = rng.standard_normal((m, d))
    Y = rng.standard_normal((n, d)) + draw(st.sampled_from([0.0, 0.5, 3.0]))
    if draw(st.booleans()):
        X[-1] = X[0]  # duplicates are legal states (same prompt, same prefix)
    return X, Y


WORDS = [f"w{i}" for i in range(30)]
texts = st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join)


# ------------------------------------------------------------------------------------------
# featurize
# ------------------------------------------------------------------------------------------


@given(states=st.lists(texts, min_size=1, max_size=6), seed=st.integers(0, 3))
def test_featurize_matches_reference_and_has_unit_rows(states, seed):
    X = featurize(states, n=(1, 2), dim=64, seed=seed)
    ref = np.stack([ref_featurize_row(s, (1, 2), 64, seed) for s in states])
    assert X.shape == (len(states), 64)
    np.testing.assert_allclose(X, ref, atol=1e-12)
    norms = np.linalg.norm(X, axis=1)
    assert np.allclose(norms[[bool(s) for s in states]], 1.0) and np.all(norms[[not s for s in states]] == 0)


def test_featurize_is_deterministic_across_calls_and_processes():
    states = ["Q: 3 + 4 = ? A: 3 plus 4 is 7", "Q: 2 * 5 = ? A: 10", ""]
    X = featurize(states)
    np.testing.assert_array_equal(X, featurize(list(states)))
    code = (
        "import sys; from repro.metrics import featurize;"
        f"sys.stdout.write(featurize({states!r}).tobytes().hex())"
    )
    for hash_seed in ("1", "2"):
        # The child imports the same `repro` as this process, whatever is installed.
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": os.pathsep.join(sys.path)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        other = np.frombuffer(bytes.fromhex(out.stdout), dtype=X.dtype).reshape(X.shape)
        np.testing.assert_array_equal(other, X)


def test_featurize_seed_changes_the_hash_and_bad_args_raise():
    states = ["a b c d e f g h"]
    assert not np.array_equal(featurize(states, dim=2**16, seed=0), featurize(states, dim=2**16, seed=1))
    with pytest.raises(ConfigError, match="dim"):
        featurize(states, dim=0)
    with pytest.raises(ConfigError, match="n"):
        featurize(states, n=(0, 1))


# ------------------------------------------------------------------------------------------
# MMD^2
# ------------------------------------------------------------------------------------------


@given(case=two_samples(), bandwidth=st.sampled_from([None, 0.3, 2.0]))
def test_mmd2_matches_reference(case, bandwidth):
    X, Y = case
    assert median_bandwidth(X, Y) == pytest.approx(ref_median_bandwidth(X, Y), rel=1e-6)
    assert mmd2_unbiased(X, Y, bandwidth) == pytest.approx(ref_mmd2_unbiased(X, Y, bandwidth), abs=1e-9)


@given(case=two_samples(), seed=st.integers(0, 2**16))
def test_mmd2_is_symmetric_and_permutation_invariant(case, seed):
    X, Y = case
    rng = np.random.default_rng(seed)
    value = mmd2_unbiased(X, Y)
    assert mmd2_unbiased(Y, X) == pytest.approx(value, abs=1e-12)
    assert mmd2_unbiased(X[rng.permutation(len(X))], Y[rng.permutation(len(Y))]) == pytest.approx(
        value, abs=1e-12
    )


def gaussian(seed, shift=0.0, N=300, d=8):
    return np.random.default_rng(seed).standard_normal((N, d)) + shift


def test_mmd2_near_zero_for_one_distribution_and_grows_with_shift():
    X = gaussian(0)
    same = mmd2_unbiased(X, gaussian(1))
    assert abs(same) < 0.01  # unbiased: can be slightly negative
    # Fixed bandwidth: MMD^2 is strictly increasing in the shift of a Gaussian.
    fixed = [mmd2_unbiased(X, gaussian(1, s), bandwidth=4.0) for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(fixed, fixed[1:]))
    # Median heuristic: shifted is still far above unshifted.
    assert mmd2_unbiased(X, gaussian(1, 0.5)) > 10 * abs(same)


def test_mmd2_rejects_bad_input():
    with pytest.raises(ConfigError, match="at least 2"):
        mmd2_unbiased(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ConfigError, match=r"\(N, d\)"):
        mmd2_unbiased(np.zeros((3, 3)), np.zeros((4, 2)))
    with pytest.raises(ConfigError, match="bandwidth"):
        mmd2_unbiased(np.zeros((3, 3)), np.ones((4, 3)), bandwidth=0.0)


# ------------------------------------------------------------------------------------------
# Centroid, sliced W1, Jaccard
# ------------------------------------------------------------------------------------------


@given(case=two_samples())
def test_centroid_distance_of_a_translate_is_the_shift(case):
    X, _ = case
    v = np.arange(X.shape[1], dtype=float)
    assert centroid_distance(X, X + v) == pytest.approx(np.linalg.norm(v))
    assert centroid_distance(X, X) == 0.0


@given(case=two_samples())
def test_sliced_w1_zero_on_identical_sets_and_matches_scipy(case):
    X, Y = case
    assert sliced_wasserstein(X, X[::-1]) == 0.0
    # Reference: scipy's 1-D W1 on each projection, same seeded directions.
    theta = np.random.default_rng(0).standard_normal((X.shape[1], 16))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    ref = np.mean([wasserstein_distance(X @ t, Y @ t) for t in theta.T])
    assert sliced_wasserstein(X, Y, n_projections=16) == pytest.approx(ref, abs=1e-9)


def ref_w1_quantiles(xs: np.ndarray, ys: np.ndarray) -> float:
    """W1 = integral over u in (0, 1] of |F^-1(u) - G^-1(u)| for sorted samples xs (m,), ys (n,).

    Both quantile functions are steps on the grid u = a / (m n): between consecutive breakpoints
    a < b the X quantile is xs[a // n] and the Y quantile ys[a // m]. (The library's formula
    before it used scipy; kept as an independent check.)
    """
    m, n = len(xs), len(ys)
    breaks = np.union1d(np.arange(0, m + 1) * n, np.arange(0, n + 1) * m)  # in units of 1/(m n)
    left, width = breaks[:-1], np.diff(breaks) / (m * n)
    return float(width @ np.abs(xs[left // n] - ys[left // m]))


@given(case=two_samples(), n_projections=st.sampled_from([1, 16, 128]), seed=st.integers(0, 2**16))
def test_sliced_w1_equals_the_quantile_integral(case, n_projections, seed):
    X, Y = case
    theta = np.random.default_rng(seed).standard_normal((X.shape[1], n_projections))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    xs, ys = np.sort(X @ theta, axis=0), np.sort(Y @ theta, axis=0)
    ref = np.mean([ref_w1_quantiles(xs[:, p], ys[:, p]) for p in range(n_projections)])
    # Measured over 1,200 random pairs: at most 5e-16 apart (1e-15 relative), about half identical.
    assert sliced_wasserstein(X, Y, n_projections=n_projections, seed=seed) == pytest.approx(
        ref, rel=1e-12, abs=1e-15
    )


def test_jaccard_of_identical_disjoint_and_overlapping_sets():
    a = ["x1 x2 x3", "x2 x3"]
    assert jaccard(a, list(reversed(a))) == 1.0
    assert jaccard(a, ["y1 y2 y3"]) == 0.0
    # bigrams {x1 x2, x2 x3} vs {x2 x3, x3 x4}: 1 shared of 3.
    assert jaccard(["x1 x2 x3"], ["x2 x3 x4"]) == pytest.approx(1 / 3)
    assert jaccard(["x1 x2"], ["x2 x1"], n=1) == 1.0
    assert jaccard([""], ["one"]) == 1.0  # no bigram on either side


@given(a=st.lists(texts, max_size=5), b=st.lists(texts, max_size=5))
def test_jaccard_is_a_symmetric_similarity(a, b):
    assert 0.0 <= jaccard(a, b) <= 1.0
    assert jaccard(a, b) == jaccard(b, a)
    assert jaccard(a, a) == 1.0


# ------------------------------------------------------------------------------------------
# Prefix states and the report
# ------------------------------------------------------------------------------------------


def test_prefix_states_cut_at_the_stride():
    states = prefix_states(["Q1", "Q2"], [["a", "b", "c", "d"], []], every=2)
    assert states == ["Q1", "Q1 a b", "Q1 a b c d", "Q2"]
    assert prefix_states(["Q:"], [[" 1", "2", " =", " 3"]], every=3, sep="") == ["Q:", "Q: 12 ="]
    with pytest.raises(ConfigError, match="pair up"):
        prefix_states(["Q1"], [])
    with pytest.raises(ConfigError, match="every"):
        prefix_states(["Q1"], [["a"]], every=0)


def test_drift_report_sees_a_shifted_policy():
    rng = np.random.default_rng(0)
    prompts = [f"Q: what is {i} plus {i + 1} ?" for i in range(40)]

    def rollouts(vocab):
        return [list(rng.choice(vocab, size=12)) for _ in prompts]

    base_vocab = ["so", "the", "answer", "is", "we", "add", "7", "9"]
    base = prefix_states(prompts, rollouts(base_vocab), every=4)
    resampled = prefix_states(prompts, rollouts(base_vocab), every=4)
    drifted = prefix_states(prompts, rollouts(base_vocab[:4] + ["####", "hence", "total", "="]), every=4)
    near, far = drift_report(base, resampled), drift_report(base, drifted)
    assert set(near) == {"drift/mmd2", "drift/centroid", "drift/sliced_w1", "drift/jaccard"}
    assert all(math.isfinite(v) for v in near.values())
    assert far["drift/mmd2"] > near["drift/mmd2"]
    assert far["drift/centroid"] > near["drift/centroid"]
    assert far["drift/sliced_w1"] > near["drift/sliced_w1"]
    assert far["drift/jaccard"] < near["drift/jaccard"]
