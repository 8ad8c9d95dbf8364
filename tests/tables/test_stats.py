"""mean ± sd, paired-by-seed effects and one-sample summaries against hand computations."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.tables.stats import format_mean_sd, mean_sd, paired_effect, summarize

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)


def test_mean_sd_is_the_sample_sd_and_undefined_below_two_values():
    mean, sd = mean_sd([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7) and sd == pytest.approx(0.2)
    one = mean_sd(iter([0.3]))
    assert one[0] == 0.3 and math.isnan(one[1])
    assert all(math.isnan(v) for v in mean_sd([]))


def test_format_mean_sd():
    assert format_mean_sd(0.7, 0.2, "{:.3f}".format) == "0.700 ± 0.200"
    assert format_mean_sd(0.1, 0.02, "{:+.2f}".format, "{:.1e}".format, n=3) == "+0.10 ± 2.0e-02 (n=3)"


def test_paired_effect_matches_hand_computation():
    treatment = {1: 0.50, 2: 0.60, 3: 0.90, 4: 0.10}  # seed 4 has no control: dropped
    control = {1: 0.40, 2: 0.40, 3: 0.50, 5: 0.30}  # seed 5 has no treatment: dropped
    est = paired_effect(treatment, control)
    d = [0.10, 0.20, 0.40]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    half = T_975_DF2 * sd / math.sqrt(3)
    assert est.seeds == (1, 2, 3)
    assert est.n == 3
    assert est.mean == pytest.approx(mean)
    assert est.sd == pytest.approx(sd)
    assert est.ci == pytest.approx((mean - half, mean + half))


def test_pairing_is_by_seed_not_by_position():
    # Unpaired, these have equal means; paired by seed every difference is +0.1.
    est = paired_effect({1: 0.3, 2: 0.5, 3: 0.9}, {3: 0.8, 1: 0.2, 2: 0.4})
    assert est.mean == pytest.approx(0.1)
    assert est.sd == pytest.approx(0.0, abs=1e-12)


def test_one_seed_has_no_interval():
    est = summarize({7: 0.4})
    assert est.n == 1 and est.mean == 0.4
    assert est.ci is None and math.isnan(est.sd) and not est.defined


def test_no_common_seed_is_empty():
    est = paired_effect({1: 0.5}, {2: 0.5})
    assert est.n == 0 and est.ci is None and math.isnan(est.mean)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=2, max_size=8), st.lists(st.floats(-1, 1), min_size=2, max_size=8))
def test_paired_effect_is_summary_of_differences(t, c):
    n = min(len(t), len(c))
    est = paired_effect(dict(enumerate(t)), dict(enumerate(c)))
    ref = summarize({i: t[i] - c[i] for i in range(n)})
    assert est.n == n
    assert est.mean == pytest.approx(ref.mean) and est.ci == pytest.approx(ref.ci)
    assert est.ci[0] <= est.mean + 1e-12 and est.mean - 1e-12 <= est.ci[1]
