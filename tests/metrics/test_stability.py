"""stability_summary: peak, end/peak, collapse (first evaluation after the peak below half of it)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from repro.metrics.stability import stability_summary


def test_examples():
    s = stability_summary([0, 10, 20, 30], [0.2, 0.6, 0.25, 0.5])
    assert s["stability/peak"] == 0.6 and s["stability/peak_step"] == 10
    assert s["stability/collapsed"] == 1.0 and s["stability/collapse_step"] == 20
    assert s["stability/end_over_peak"] == pytest.approx(0.5 / 0.6)
    steady = stability_summary([0, 10], [0.3, 0.4])
    assert steady["stability/collapsed"] == 0.0 and math.isnan(steady["stability/collapse_step"])
    assert math.isnan(stability_summary([0], [0.0])["stability/end_over_peak"])


@given(values=st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_collapse_iff_a_later_value_falls_below_half_the_peak(values):
    steps = list(range(0, 10 * len(values), 10))
    s = stability_summary(steps, values)
    peak = max(values)
    k = values.index(peak)
    assert s["stability/peak"] == peak and s["stability/peak_step"] == steps[k]
    assert s["stability/collapsed"] == float(any(v < peak / 2 for v in values[k + 1 :]))
    if peak > 0:
        assert 0 <= s["stability/end_over_peak"] <= 1
