"""Forgetting and retention (eq. 12) against the paper's Table 2, plus input checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from repro.errors import ConfigError
from repro.metrics import forgetting, retention, retention_report

# Table 2 of "Post-Training is About States, Not Tokens": TruthfulQA and MMLU scores, then F and R.
BASE = {"truthfulqa": 0.300, "mmlu": 0.436}
TABLE_2 = {
    "mild_sft": ({"truthfulqa": 0.295, "mmlu": 0.444}, -0.0015, 1.0008),
    "stress_sft": ({"truthfulqa": 0.245, "mmlu": 0.364}, 0.0635, 0.8258),
    "opd_from_mild_sft": ({"truthfulqa": 0.290, "mmlu": 0.434}, 0.0060, 0.9810),
    "opd_from_stress_sft": ({"truthfulqa": 0.275, "mmlu": 0.430}, 0.0155, 0.9515),
    "on_policy_rl": ({"truthfulqa": 0.290, "mmlu": 0.442}, 0.0020, 0.9902),
}
# The paper prints 4 decimals: half a unit in the last place.
ROUNDING = 5e-5


@pytest.mark.parametrize("run", sorted(TABLE_2))
def test_reproduces_table_2(run):
    post, paper_f, paper_r = TABLE_2[run]
    assert forgetting(BASE, post) == pytest.approx(paper_f, abs=ROUNDING)
    assert retention(BASE, post) == pytest.approx(paper_r, abs=ROUNDING)
    assert retention_report(BASE, post) == {
        "retention/forgetting": forgetting(BASE, post),
        "retention/ratio": retention(BASE, post),
    }


def test_ratio_of_averages_would_not_reproduce_table_2():
    # Why `retention` averages per-task ratios: the pooled ratio misses the paper's R.
    post, _, paper_r = TABLE_2["mild_sft"]
    pooled = sum(post.values()) / sum(BASE.values())
    assert abs(pooled - paper_r) > 10 * ROUNDING


scores = st.floats(0.01, 1.0)


@given(base=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), scores, min_size=1))
def test_no_change_means_no_forgetting_and_full_retention(base):
    assert forgetting(base, dict(base)) == 0.0
    assert retention(base, dict(base)) == pytest.approx(1.0)


@given(base=scores, post=scores)
def test_one_task_retention_is_one_minus_relative_forgetting(base, post):
    b, p = {"t": base}, {"t": post}
    assert retention(b, p) == pytest.approx(1 - forgetting(b, p) / base)


@given(pairs=st.lists(st.tuples(scores, scores), min_size=1, max_size=5), scale=st.floats(0.1, 10))
def test_retention_is_scale_free_and_forgetting_scales(pairs, scale):
    base = {f"t{i}": b for i, (b, _) in enumerate(pairs)}
    post = {f"t{i}": p for i, (_, p) in enumerate(pairs)}
    scaled_base = {t: scale * s for t, s in base.items()}
    scaled_post = {t: scale * s for t, s in post.items()}
    assert retention(scaled_base, scaled_post) == pytest.approx(retention(base, post))
    assert forgetting(scaled_base, scaled_post) == pytest.approx(scale * forgetting(base, post), abs=1e-12)


@pytest.mark.parametrize("fn", [forgetting, retention])
def test_mismatched_tasks_name_the_task(fn):
    with pytest.raises(ConfigError, match="'mmlu'"):
        fn(BASE, {"truthfulqa": 0.3})
    with pytest.raises(ConfigError, match="'arc'"):
        fn(BASE, {**BASE, "arc": 0.5})
    with pytest.raises(ConfigError, match="empty"):
        fn({}, {})
    with pytest.raises(ConfigError, match="'mmlu'"):
        fn(BASE, {**BASE, "mmlu": float("nan")})


def test_zero_base_score_names_the_task():
    with pytest.raises(ConfigError, match="'mmlu'"):
        retention({"truthfulqa": 0.3, "mmlu": 0.0}, BASE)
    assert forgetting({"truthfulqa": 0.3, "mmlu": 0.0}, BASE) == pytest.approx(-0.218)
