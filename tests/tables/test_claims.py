"""claimed.yaml validation, metric extraction and every verdict branch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from repro.errors import ConfigError
from repro.tables.claims import (
    DIRECTION_ONLY,
    INCONCLUSIVE,
    KNOWN_METRICS,
    NOT_REPRODUCED,
    NOT_RUN,
    REPRODUCED,
    Claim,
    Measure,
    evaluate,
    load_claimed,
    metric_value,
    parse_claimed,
    verdict,
)
from repro.tables.stats import Estimate

REPO = Path(__file__).resolve().parents[2]
CLIPPING_ARMS = {
    "grpo",
    "grpo_nsr",
    "dapo",
    "dapo_nsr",
    "gspo",
    "gspo_nsr",
    "dapo_nsr_band",
    "dapo_decay",
    "dapo_push_only",
}


def est(lo: float, hi: float, n: int = 3) -> Estimate:
    return Estimate((lo + hi) / 2, 0.1, n, (lo, hi), tuple(range(n)))


def effect(direction: int = 1, min_effect: float = 0.02, rng=None, better: int = 1) -> Measure:
    return Measure(
        "effect", "eval/id/greedy_acc", "new", "base", None, "final", direction, better, min_effect, rng
    )


# --- verdicts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "measure, ci, expected",
    [
        # predicted +: clearly positive
        (effect(1), (0.03, 0.10), REPRODUCED),
        # significant but wholly inside ±min_effect: no meaningful effect
        (effect(1), (0.001, 0.015), NOT_REPRODUCED),
        # significant on the wrong side
        (effect(1), (-0.10, -0.03), NOT_REPRODUCED),
        # contains 0, reaches beyond min_effect
        (effect(1), (-0.05, 0.08), INCONCLUSIVE),
        # within ±min_effect although containing 0
        (effect(1), (-0.01, 0.01), NOT_REPRODUCED),
        # contains 0 but rules out a gain of min_effect: no meaningful effect in the predicted direction
        (effect(1), (-0.05, 0.01), NOT_REPRODUCED),
        # all seeds identical, no difference at all (min_effect 0): CI is the point 0
        (effect(1, min_effect=0.0), (0.0, 0.0), NOT_REPRODUCED),
        # predicted −: mirror images
        (effect(-1), (-0.10, -0.03), REPRODUCED),
        (effect(-1), (0.03, 0.10), NOT_REPRODUCED),
        # range given: overlap → reproduced, miss → direction only
        (effect(1, rng=(0.05, 0.07)), (0.03, 0.06), REPRODUCED),
        (effect(1, rng=(0.20, 0.30)), (0.03, 0.06), DIRECTION_ONLY),
        (effect(-1, rng=(-0.30, -0.20)), (-0.06, -0.03), DIRECTION_ONLY),
        # direction 0 ("does not help"): within ±min, or on the non-helping side → reproduced
        (effect(0), (-0.01, 0.015), REPRODUCED),
        (effect(0), (-0.20, -0.05), REPRODUCED),
        (effect(0), (-0.20, 0.01), REPRODUCED),
        (effect(0), (0.03, 0.10), NOT_REPRODUCED),
        (effect(0), (-0.05, 0.08), INCONCLUSIVE),
        # direction 0 where lower is better
        (effect(0, better=-1), (0.05, 0.20), REPRODUCED),
        (effect(0, better=-1), (-0.10, -0.03), NOT_REPRODUCED),
    ],
)
def test_verdict_branches(measure, ci, expected):
    assert verdict(measure, est(*ci)) == expected


def test_value_verdict_is_range_overlap():
    m = Measure("value", "train/nbm_abs_sig", arm="base", at="mean", range=(0.28, 0.35))
    assert verdict(m, est(0.30, 0.40)) == REPRODUCED
    assert verdict(m, est(0.10, 0.20)) == NOT_REPRODUCED
    assert verdict(m, est(0.36, 0.40)) == NOT_REPRODUCED


def test_one_seed_is_inconclusive():
    one = Estimate(0.5, math.nan, 1, None, (1,))
    assert verdict(effect(1), one) == INCONCLUSIVE
    assert verdict(Measure("value", "train/nbm_abs_sig", arm="a", range=(0, 1)), one) == INCONCLUSIVE


# --- evaluate on in-memory records ------------------------------------------------------------


def rec(seed: int, final: float, init: float = 0.3, run_id: str = "") -> dict:
    curve = [[0, init], [10, (init + final) / 2], [20, final]]
    return {
        "run_id": run_id or f"{seed:08d}ffff",
        "final": {"eval/id/greedy_acc": final},
        "curves": {
            "eval/id/greedy_acc": curve,
            "train/reward_mean": [[1, 0.1], [2, 0.3], [3, 0.2], [4, 0.4]],
        },
    }


def claim(measure: Measure) -> Claim:
    return Claim("c1", "text", "claimed", "Table 1", measure)


def test_missing_arm_is_not_run():
    records = {"base": {1: rec(1, 0.5), 2: rec(2, 0.6)}}
    result = evaluate(claim(effect(1)), records, "micro")
    assert result.verdict == NOT_RUN and result.estimate is None
    assert "new" in result.notes[0]


def test_effect_pairs_seeds_and_reports_run_ids():
    records = {
        "new": {1: rec(1, 0.70), 2: rec(2, 0.72), 3: rec(3, 0.69), 9: rec(9, 0.9)},
        "base": {1: rec(1, 0.60), 2: rec(2, 0.61), 3: rec(3, 0.60)},
    }
    result = evaluate(claim(effect(1)), records, "micro")
    assert result.estimate.seeds == (1, 2, 3)
    assert result.estimate.mean == pytest.approx((0.10 + 0.11 + 0.09) / 3)
    assert result.verdict == REPRODUCED
    assert result.run_ids == {
        "new": ["00000001", "00000002", "00000003"],
        "base": ["00000001", "00000002", "00000003"],
    }
    assert any("unpaired" in n and "9" in n for n in result.notes)


def test_change_is_final_minus_init_per_seed():
    records = {"base": {1: rec(1, 0.5, init=0.3), 2: rec(2, 0.6, init=0.3), 3: rec(3, 0.55, init=0.35)}}
    m = Measure("change", "eval/id/greedy_acc", arm="base", direction=1, min_effect=0.02)
    result = evaluate(claim(m), records, "micro")
    assert result.estimate.mean == pytest.approx((0.2 + 0.3 + 0.2) / 3)
    assert result.verdict == REPRODUCED


def test_one_seed_each_is_inconclusive():
    records = {"new": {1: rec(1, 0.9)}, "base": {1: rec(1, 0.5)}}
    result = evaluate(claim(effect(1)), records, "micro")
    assert result.verdict == INCONCLUSIVE and result.estimate.n == 1


def test_metric_value_modes_and_osc_fallback():
    r = rec(1, 0.5, init=0.3)
    assert metric_value(r, "eval/id/greedy_acc", "final") == 0.5
    assert metric_value(r, "eval/id/greedy_acc", "init") == 0.3
    assert metric_value(r, "eval/id/greedy_acc", "mean") == pytest.approx(0.4)
    # osc/reward absent from `final`: std of the step-to-step changes of train/reward_mean
    diffs = [0.2, -0.1, 0.2]
    m = sum(diffs) / 3
    assert metric_value(r, "osc/reward", "final") == pytest.approx(
        math.sqrt(sum((d - m) ** 2 for d in diffs) / 3)
    )
    r["final"]["osc/reward"] = 0.123
    assert metric_value(r, "osc/reward", "final") == 0.123
    assert metric_value(r, "train/entropy", "mean") is None
    r["curves"]["train/entropy"] = [[1, None], [2, 0.5], [3, float("nan")], [4, 0.7]]
    assert metric_value(r, "train/entropy", "mean") == pytest.approx(0.6)


# --- claimed.yaml ---------------------------------------------------------------------------


def minimal(**measure) -> dict:
    base = {"kind": "effect", "metric": "eval/id/greedy_acc", "treatment": "new", "control": "base"}
    base.update(direction=1, min_effect=0.02)
    base.update(measure)
    return {
        "paper": "P",
        "arxiv": "1",
        "arms": ["new", "base"],
        "claims": [{"id": "my_claim", "text": "t", "claimed": "c", "source": "s", "measure": base}],
    }


def test_unknown_arm_names_claim_and_key():
    with pytest.raises(ConfigError, match=r"my_claim.*treatment.*'nwe'"):
        parse_claimed(minimal(treatment="nwe"), "toy")


def test_unknown_metric_names_claim_and_key():
    with pytest.raises(ConfigError, match=r"my_claim.*metric.*eval/id/greedy_accc"):
        parse_claimed(minimal(metric="eval/id/greedy_accc"), "toy")


def test_extra_metrics_can_be_declared():
    data = minimal(metric="eval/gsm8k/acc")
    data["metrics"] = ["eval/gsm8k/acc"]
    assert parse_claimed(data, "toy").claims[0].measure.metric == "eval/gsm8k/acc"


@pytest.mark.parametrize(
    "measure, match",
    [
        ({"min_efect": 0.1}, "unknown key.*min_efect"),
        ({"direction": 2}, "direction"),
        ({"direction": 0, "range": [0, 1]}, "range"),
        ({"at": "last"}, "at"),
        ({"metric": "osc/reward", "at": "mean"}, "osc/reward"),
        ({"better": -1}, "better"),
        ({"control": "new"}, "same arm"),
        ({"range": [0.3, 0.1]}, "lo > hi"),
    ],
)
def test_bad_measures_are_rejected(measure, match):
    with pytest.raises(ConfigError, match=match):
        parse_claimed(minimal(**measure), "toy")


def test_clipping_bottleneck_claims_parse_and_use_known_names():
    path = REPO / "paper_tables" / "clipping_bottleneck" / "claimed.yaml"
    paper = load_claimed(path)
    assert paper.slug == "clipping_bottleneck" and paper.arxiv == "2605.22703"
    assert set(paper.arms) == CLIPPING_ARMS
    assert "metrics" not in yaml.safe_load(path.read_text())  # only the trainer's own metrics
    for c in paper.claims:
        assert set(c.measure.arms) <= CLIPPING_ARMS, c.id
        assert c.measure.metric in KNOWN_METRICS, c.id
        assert c.source and c.claimed and c.text
    kinds = {c.measure.kind for c in paper.claims}
    assert kinds == {"effect", "change", "value"}
    by_id = {c.id: c for c in paper.claims}
    assert by_id["push_only_no_help"].measure.direction == 0
    assert by_id["nsr_less_oscillation"].measure.direction == -1
    # Magnitudes from 7B models are not comparable at micro scale: ranges only on the shares.
    assert {c.id for c in paper.claims if c.measure.range} == {"band_share_of_clipped", "band_share_of_all"}
