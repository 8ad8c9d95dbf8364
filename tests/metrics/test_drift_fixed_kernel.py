"""One kernel per base (issue 10): the RBF bandwidth fixed once from the base model's own states
(`within_bandwidth`) and passed to every comparison (`drift_report(..., bandwidth=h)`), against slow
references; and the style-free variant (`drop_words`, drift_policy/mmd2_nostyle).

    pytest tests/metrics/test_drift_fixed_kernel.py
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.errors import ConfigError
from repro.metrics import drift_report, drop_words, featurize, mmd2_unbiased, prefix_states, within_bandwidth
from repro.tasks.arith import ArithWorld

from .test_drift import ref_median_bandwidth, ref_mmd2_unbiased, two_samples


def ref_within_bandwidth(X):
    """Median of the distances over distinct pairs of one sample, one pair at a time: the pooled
    reference of test_drift with nothing pooled in."""
    return ref_median_bandwidth(X, [])


@given(case=two_samples())
def test_within_bandwidth_matches_reference_and_ignores_order(case):
    X, _ = case
    h = within_bandwidth(X)
    assert h == pytest.approx(ref_within_bandwidth(X), rel=1e-9)
    assert within_bandwidth(X[::-1]) == pytest.approx(h, rel=1e-9)
    if len(np.unique(X, axis=0)) > 1:  # a length scale (all points equal: the fallback 1.0)
        assert within_bandwidth(3.0 * X) == pytest.approx(3.0 * h, rel=1e-9)


def test_within_bandwidth_falls_back_when_points_coincide():
    assert within_bandwidth(np.ones((4, 3))) == 1.0
    with pytest.raises(ConfigError, match="at least 2"):
        within_bandwidth(np.ones((1, 3)))


@settings(max_examples=50, deadline=None)
@given(case=two_samples(), h=st.floats(0.1, 5.0))
def test_fixed_kernel_mmd2_matches_reference_and_is_symmetric(case, h):
    X, Y = case
    assert mmd2_unbiased(X, Y, bandwidth=h) == pytest.approx(ref_mmd2_unbiased(X, Y, h), abs=1e-9)
    assert mmd2_unbiased(X, Y, bandwidth=h) == pytest.approx(mmd2_unbiased(Y, X, bandwidth=h), abs=1e-12)


@given(case=two_samples(), h=st.floats(0.1, 5.0))
def test_mmd2_of_a_sample_with_itself_is_its_zero_shift_value(case, h):
    """X against itself: the unbiased estimator is -(2/m)(1 - mean k over distinct pairs), in
    [-2/m, 0]: zero in expectation, never positive (its V-statistic would be exactly 0)."""
    X, _ = case
    m = len(X)
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * h**2))
    kbar = (k.sum() - np.trace(k)) / (m * (m - 1))
    got = mmd2_unbiased(X, X, bandwidth=h)
    assert got == pytest.approx(-(2 / m) * (1 - kbar), abs=1e-12)
    assert -2 / m - 1e-12 <= got <= 1e-12


def _states(rng, prompts, vocab):
    return prefix_states(prompts, [list(rng.choice(vocab, size=12)) for _ in prompts], every=4)


def test_one_bandwidth_for_every_arm_and_the_old_median_beside_it():
    """Every arm compared with the base under the base's own bandwidth: drift/bandwidth is the same
    number for all, drift/mmd2 uses it, drift/mmd2_median is the per-comparison median's (the old
    drift/mmd2, whose kernel moves with the arm)."""
    rng = np.random.default_rng(0)
    prompts = [f"q : {i} plus {i + 1} ?" for i in range(30)]
    vocab = ["so", "the", "answer", "is", "we", "add", "7", "9"]
    base = _states(rng, prompts, vocab)
    h = within_bandwidth(featurize(base))
    arms = {
        "near": _states(rng, prompts, vocab),
        "far": _states(rng, prompts, vocab[:4] + ["####", "hence", "total", "="]),
    }
    reports = {name: drift_report(base, states, bandwidth=h) for name, states in arms.items()}
    for name, rep in reports.items():
        X, Y = featurize(base), featurize(arms[name])
        assert rep["drift/bandwidth"] == h
        assert rep["drift/mmd2"] == pytest.approx(mmd2_unbiased(X, Y, bandwidth=h), abs=1e-12)
        assert rep["drift/mmd2_median"] == pytest.approx(mmd2_unbiased(X, Y), abs=1e-12)
        assert rep["drift/mmd2_median"] == drift_report(base, arms[name])["drift/mmd2"]
    assert reports["far"]["drift/mmd2"] > reports["near"]["drift/mmd2"]
    # The per-comparison medians differ between arms: the reason for the fixed kernel.
    X = featurize(base)
    medians = {n: within_bandwidth(np.vstack([X, featurize(s)])) for n, s in arms.items()}
    assert medians["far"] != pytest.approx(medians["near"], rel=1e-3)
    assert "drift/bandwidth" not in drift_report(base, arms["near"])  # no fixed kernel given


def test_drop_words_removes_only_the_listed_tokens():
    assert drop_words(["first : 5 + 3 is 8 .", "", "is is"], [":", "is"]) == ["first 5 + 3 8 .", "", ""]
    assert drop_words(["a  b"], []) == ["a b"]


def test_style_words_make_the_two_sft_styles_one_text():
    """The micro world's style words are exactly where its SFT "third" style and the worked style
    differ: without them the demonstrations of the same problems are the same states, so the
    style-free MMD between them is its zero-shift value while the plain one is large."""
    world = ArithWorld()
    third = world.sft_examples(random.Random(0), 40, "third")
    worked = world.sft_examples(random.Random(0), 40, "worked")
    prompts = [p for p, _ in third]
    assert prompts == [p for p, _ in worked]
    style = world.style_words
    plain_t = prefix_states(prompts, [c.split() for _, c in third], every=4)
    plain_w = prefix_states(prompts, [c.split() for _, c in worked], every=4)
    free_t = prefix_states(prompts, [c.split() for c in drop_words([c for _, c in third], style)], every=4)
    free_w = prefix_states(prompts, [c.split() for c in drop_words([c for _, c in worked], style)], every=4)
    assert free_t == free_w
    h = within_bandwidth(featurize(free_w))
    assert mmd2_unbiased(featurize(free_w), featurize(free_t), bandwidth=h) <= 0.0
    assert mmd2_unbiased(featurize(plain_w), featurize(plain_t), bandwidth=h) > 0.01
    # Dropping one word too few leaves a style difference the MMD sees.
    partial = [w for w in style if w != "is"]
    part_t = prefix_states(prompts, [c.split() for c in drop_words([c for _, c in third], partial)], every=4)
    assert part_t != free_w
