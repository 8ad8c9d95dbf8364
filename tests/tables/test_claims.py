"""claimed.yaml validation, metric extraction and every verdict branch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from repro.errors import ConfigError
from repro.tables.claims import (
    DIRECTION_ONLY,
    INCONCLUSIVE,
    KNOWN_METRICS,
    NOT_REPRODUCED,
    NOT_RUN,
    REPORTED,
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


def test_value_verdict_needs_overlap_and_the_mean_in_range():
    m = Measure("value", "train/toy_share", arm="base", at="mean", range=(0.28, 0.35))
    assert verdict(m, est(0.26, 0.40)) == REPRODUCED  # mean 0.33 in range
    assert verdict(m, est(0.10, 0.20)) == NOT_REPRODUCED
    assert verdict(m, est(0.36, 0.40)) == NOT_REPRODUCED
    # Overlap alone is not enough: a wide CI around a mean outside the range decides nothing
    # (the committed clipping table had 0.253, CI [0.086, 0.421], against 0.28-0.35).
    assert verdict(m, Estimate(0.253, 0.067, 3, (0.086, 0.421), (1, 2, 3))) == INCONCLUSIVE
    assert verdict(m, est(0.30, 0.42)) == INCONCLUSIVE  # mean 0.36 above the range


def test_one_seed_is_inconclusive():
    one = Estimate(0.5, math.nan, 1, None, (1,))
    assert verdict(effect(1), one) == INCONCLUSIVE
    assert verdict(Measure("value", "train/toy_share", arm="a", range=(0, 1)), one) == INCONCLUSIVE


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


# A bad file gives one line: `<file>: <key path> (<claim id>): <what is wrong; what is valid>`.
PATH = r"^claimed\.yaml: claims\[0\] \(my_claim\)\.measure\."


def test_unknown_arm_names_file_claim_and_key():
    with pytest.raises(
        ConfigError, match=PATH + r"treatment: unknown arm 'nwe'; arms declared in `arms:`: new, base$"
    ):
        parse_claimed(minimal(treatment="nwe"), "toy")


def test_unknown_metric_names_file_claim_and_key():
    with pytest.raises(
        ConfigError,
        match=PATH + r"metric: unknown metric 'eval/id/greedy_accc'; .*Known: .*eval/id/greedy_acc",
    ):
        parse_claimed(minimal(metric="eval/id/greedy_accc"), "toy")


def test_error_is_one_line_naming_the_file_and_counting_the_rest(tmp_path):
    data = minimal(treatment="nwe", min_effect="big")
    data["figures"] = [{"name": "f", "kind": "line"}]
    path = tmp_path / "toy" / "claimed.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_claimed(path)
    message = str(info.value)
    assert "\n" not in message
    # The line is the offending key's: `<path>:<line>: <key path>: <problem>`.
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "treatment: nwe" in text)
    assert message.startswith(f"{path}:{line}: claims[0] (my_claim).measure.treatment: unknown arm 'nwe'")
    assert message.endswith("(and 2 more error(s))")


@pytest.mark.parametrize(
    "top, match",
    [
        (
            {"paprer": "P"},
            r"^claimed\.yaml: unknown key\(s\) paprer; allowed: arms, arxiv, claims, curves, figures",
        ),
        ({"arms": []}, r"^claimed\.yaml: arms: expected a non-empty list$"),
        ({"arms": "new"}, r"^claimed\.yaml: arms: input should be a valid list, got 'new'$"),
        ({"claims": []}, r"^claimed\.yaml: claims: expected a non-empty list$"),
        ({"curves": ["train/nope"]}, r"^claimed\.yaml: curves\[0\]: unknown metric 'train/nope'"),
        ({"paper": "  "}, r"^claimed\.yaml: paper: expected a non-empty string$"),
    ],
)
def test_bad_top_level_keys_are_rejected(top, match):
    with pytest.raises(ConfigError, match=match):
        parse_claimed(minimal() | top, "toy")


def test_a_file_that_is_not_a_mapping_is_rejected():
    with pytest.raises(ConfigError, match=r"^claimed\.yaml: input should be a valid dictionary"):
        parse_claimed(["claims"], "toy")


def test_duplicate_claim_ids_are_rejected():
    data = minimal()
    data["claims"] = data["claims"] * 2
    with pytest.raises(ConfigError, match=r"^claimed\.yaml: claims: duplicate claim id\(s\) my_claim$"):
        parse_claimed(data, "toy")


def test_metric_per_scale_is_judged_with_that_scales_metric():
    """A measure's metric can differ by scale (micro `facts` vs small `mmlu`); a scale the claim
    names no metric for is not run there."""
    data = minimal(metric={"micro": "eval/id/greedy_acc", "small": "eval/gsm8k/acc"})
    data["metrics"] = ["eval/gsm8k/acc"]
    m = parse_claimed(data, "toy").claims[0].measure
    assert m.metric_at("micro") == "eval/id/greedy_acc" and m.metric_at("paper") is None
    assert "eval/gsm8k/acc" in m.describe("small")
    small = {"final": {"eval/gsm8k/acc": 0.0}, "curves": {}}
    records = {
        "new": {s: rec(s, 0.7) | {"final": {"eval/gsm8k/acc": 0.5 + s / 100}} for s in (1, 2, 3)},
        "base": {s: small | {"run_id": f"b{s}"} for s in (1, 2, 3)},
    }
    on_small = evaluate(claim(m), records, "small")
    assert on_small.estimate.mean == pytest.approx(0.52) and on_small.verdict == REPRODUCED
    assert evaluate(claim(m), records, "paper").verdict == NOT_RUN
    with pytest.raises(ConfigError, match=PATH + r"metric\.small: unknown metric 'eval/nope'"):
        parse_claimed(minimal(metric={"micro": "eval/id/greedy_acc", "small": "eval/nope"}), "toy")
    with pytest.raises(ConfigError, match=PATH + "metric: empty mapping"):
        parse_claimed(minimal(metric={}), "toy")


def test_report_only_scale_shows_the_value_without_a_verdict():
    """A value claim whose unit is not comparable at a scale (a micro accuracy vs a GSM8K plateau)
    is measured and shown there with its reason, and judged as usual at the other scales."""
    data = minimal(metric={"micro": "eval/id/greedy_acc", "small": "eval/id/greedy_acc"})
    data["claims"][0]["measure"] = {
        "kind": "value",
        "metric": {"micro": "eval/id/greedy_acc", "small": "eval/id/greedy_acc"},
        "arm": "new",
        "range": [0.69, 0.73],
        "report_only": {"micro": "not GSM8K"},
    }
    m = parse_claimed(data, "toy").claims[0].measure
    records = {"new": {s: rec(s, 0.30 + s / 100) for s in (1, 2, 3)}}
    on_micro = evaluate(claim(m), records, "micro")
    assert on_micro.verdict == REPORTED and on_micro.estimate.mean == pytest.approx(0.32)
    assert any("not GSM8K" in n for n in on_micro.notes)
    # The same numbers at a scale where the claim is judged: the CI misses [0.69, 0.73].
    assert evaluate(claim(m), records, "small").verdict == NOT_REPRODUCED
    data["claims"][0]["measure"]["report_only"] = {"paper": "x"}
    with pytest.raises(ConfigError, match=PATH + r"report_only: .*scale\(s\) paper name no metric"):
        parse_claimed(data, "toy")
    data["claims"][0]["measure"]["report_only"] = {"huge": "x"}
    with pytest.raises(ConfigError, match=PATH + r"report_only\.huge.*'micro', 'small', 'paper' or 'tiny'"):
        parse_claimed(data, "toy")


def test_extra_metrics_can_be_declared():
    data = minimal(metric="eval/gsm8k/acc")
    data["metrics"] = ["eval/gsm8k/acc"]
    assert parse_claimed(data, "toy").claims[0].measure.metric == "eval/gsm8k/acc"


@pytest.mark.parametrize(
    "measure, match",
    [
        ({"min_efect": 0.1}, "unknown key.*min_efect; allowed: at, better, ci, control, direction"),
        ({"direction": 2}, "direction: expected one of -1, 0, 1, got 2"),
        ({"direction": True}, "direction: input should be a valid integer, got True"),
        ({"direction": 0, "range": [0, 1]}, "range: a 'no effect' claim"),
        ({"at": "last"}, "at: input should be 'final', 'mean' or 'init', got 'last'"),
        ({"metric": "osc/reward", "at": "mean"}, "at: osc/reward summarizes a whole run"),
        ({"better": -1}, "better: only used with direction 0"),
        ({"control": "new"}, "control: treatment and control are the same arm 'new'"),
        ({"range": [0.3, 0.1]}, r"range: lo > hi in \[0\.3, 0\.1\]"),
        ({"min_effect": -0.1}, "min_effect: must be >= 0"),
        ({"min_effect": "0.1"}, "min_effect: input should be a valid number, got '0.1'"),
        ({"direction": 0, "min_effect": 0.0}, "min_effect: a 'no effect' claim .* needs min_effect > 0"),
        (
            {"kind": "size"},
            "kind: expected one of effect, change, value, correlation, config_diff, got 'size'",
        ),
        ({"kind": "value", "range": [0, 1]}, "unknown key.*control, direction"),
        ({"arm": "base"}, "unknown key.*arm; allowed"),
    ],
)
def test_bad_measures_are_rejected(measure, match):
    with pytest.raises(ConfigError, match=PATH.removesuffix(r"\.") + r".*" + match):
        parse_claimed(minimal(**measure), "toy")


def test_clipping_bottleneck_claims_parse_and_use_declared_names():
    path = REPO / "paper_tables" / "clipping_bottleneck" / "claimed.yaml"
    paper = load_claimed(path)
    assert paper.slug == "clipping_bottleneck" and paper.arxiv == "2605.22703"
    assert set(paper.arms) == CLIPPING_ARMS
    # The paper's own metrics (its package's stats) are declared in the file, not in the library.
    declared = set(yaml.safe_load(path.read_text())["metrics"])
    assert declared and not declared & KNOWN_METRICS and paper.metrics == KNOWN_METRICS | declared
    assert paper.curves is not None and set(paper.curves) <= paper.metrics
    for c in paper.claims:
        assert set(c.measure.arms) <= CLIPPING_ARMS, c.id
        for scale in ("micro", "small", "paper"):
            assert c.measure.metric_at(scale) in paper.metrics | {None}, c.id
        assert c.source and c.claimed and c.text
    kinds = {c.measure.kind for c in paper.claims}
    assert kinds == {"effect", "change", "value"}
    by_id = {c.id: c for c in paper.claims}
    assert by_id["push_only_no_help"].measure.direction == 0
    assert by_id["nsr_less_oscillation"].measure.direction == -1
    # Magnitudes from 7B models are not comparable at micro scale: ranges only on the shares, and
    # on the summary's GSM8K plateau, which is judged only where the task is GSM8K (at micro our
    # plateau is shown, not judged).
    ranged = {c.id for c in paper.claims if c.measure.range}
    assert ranged == {"band_share_of_clipped", "band_share_of_all", "grpo_plateau_gsm8k"}
    plateau = by_id["grpo_plateau_gsm8k"].measure
    assert plateau.metric_at("small") == plateau.metric_at("micro") == "eval/id/greedy_acc"
    assert set(plateau.report_only) == {"micro"}


def test_every_committed_claims_file_parses():
    for path in sorted((REPO / "paper_tables").glob("*/claimed.yaml")):
        assert load_claimed(path).claims, path


def test_known_metrics_cover_the_retention_and_drift_keys_trainers_log():
    from repro.metrics import drift_report, retention_report

    drift = drift_report(["x = 1 + 2", "y = 3 * 4"], ["x = 1 + 2", "z = 5 - 6"])
    logged = set(drift) | {k.replace("drift/", "drift_policy/") for k in drift}
    logged |= set(retention_report({"facts": 0.5}, {"facts": 0.4}))
    assert len(logged) == 10
    assert logged <= KNOWN_METRICS


# --- equivalence claims (direction 0, better 0) -----------------------------------------------


def equiv(min_effect: float = 0.02, kind: str = "effect") -> Measure:
    if kind == "change":
        return Measure(
            "change", "eval/id/greedy_acc", arm="base", direction=0, better=0, min_effect=min_effect
        )
    return effect(0, min_effect=min_effect, better=0)


@pytest.mark.parametrize(
    "ci, expected",
    [
        ((-0.01, 0.015), REPRODUCED),
        ((-0.02, 0.02), REPRODUCED),  # the band is closed
        ((0.03, 0.10), NOT_REPRODUCED),  # clearly helps
        ((-0.10, -0.03), NOT_REPRODUCED),  # clearly hurts: also a difference
        ((-0.01, 0.05), INCONCLUSIVE),  # crosses +min_effect
        ((-0.05, 0.01), INCONCLUSIVE),  # crosses −min_effect
        ((-0.05, 0.05), INCONCLUSIVE),
        ((0.01, 0.05), INCONCLUSIVE),  # excludes 0 but not the band
    ],
)
@pytest.mark.parametrize("kind", ["effect", "change"])
def test_equivalence_verdicts(ci, expected, kind):
    assert verdict(equiv(kind=kind), est(*ci)) == expected


def test_equivalence_one_seed_is_inconclusive():
    assert verdict(equiv(), Estimate(0.0, math.nan, 1, None, (1,))) == INCONCLUSIVE


_ci = st.tuples(st.floats(-1, 1), st.floats(0, 1)).map(lambda t: (t[0], t[0] + t[1]))


@given(_ci, st.floats(1e-4, 0.5), st.floats(0, 0.5), st.floats(0, 0.5))
def test_equivalence_properties(ci, m, widen_lo, widen_hi):
    lo, hi = ci
    v = verdict(equiv(m), est(lo, hi))
    assert v in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
    # Two-sided: mirroring the CI around 0 changes nothing.
    assert verdict(equiv(m), est(-hi, -lo)) == v
    # Reproduced exactly when every value in the CI is within ±min_effect.
    assert (v == REPRODUCED) == (max(abs(lo), abs(hi)) <= m)
    # A wider CI (less information) never turns a verdict into "reproduced".
    if verdict(equiv(m), est(lo - widen_lo, hi + widen_hi)) == REPRODUCED:
        assert v == REPRODUCED
    # Consistent with the one-sided 'no helpful effect' rules: equivalence strictly inside the band
    # means neither side helps; a refuted equivalence refutes 'no help' on the side it lies.
    if v == REPRODUCED and -m < lo and hi < m:
        assert verdict(effect(0, m, better=1), est(lo, hi)) == REPRODUCED
        assert verdict(effect(0, m, better=-1), est(lo, hi)) == REPRODUCED
    if v == NOT_REPRODUCED:
        side = 1 if lo > m else -1
        assert verdict(effect(0, m, better=side), est(lo, hi)) == NOT_REPRODUCED


def test_equivalence_change_on_records():
    flat = {s: rec(s, final=0.5 + 0.001 * s, init=0.5) for s in (1, 2, 3)}
    moved = {s: rec(s, final=0.7 + 0.001 * s, init=0.5) for s in (1, 2, 3)}
    assert evaluate(claim(equiv(kind="change")), {"base": flat}, "micro").verdict == REPRODUCED
    assert evaluate(claim(equiv(kind="change")), {"base": moved}, "micro").verdict == NOT_REPRODUCED


def test_better_zero_parses_only_with_direction_zero():
    m = parse_claimed(minimal(direction=0, better=0), "toy").claims[0].measure
    assert (m.direction, m.better) == (0, 0)
    with pytest.raises(ConfigError, match=PATH + r"better: only used with direction 0"):
        parse_claimed(minimal(direction=1, better=0), "toy")
    with pytest.raises(ConfigError, match=PATH + r"better: expected one of -1, 0, 1, got 2"):
        parse_claimed(minimal(direction=0, better=2), "toy")


# --- summary_only, table, figures -------------------------------------------------------------


def full(**top) -> dict:
    data = minimal()
    data["arms"] = ["new", "base", "rl"]
    data["metrics"] = ["eval/gsm8k/acc"]
    data.update(top)
    return data


TABLE = {
    "title": "Table 2",
    "source": "Table 2",
    "columns": [
        {"name": "GSM8K", "metric": {"micro": "eval/id/greedy_acc", "small": "eval/gsm8k/acc"}},
        {"name": "MMD", "metric": "drift_policy/mmd2"},
    ],
    "rows": {"rl": {"GSM8K": 0.472, "MMD": 0.01098}, "base": {"GSM8K": 0.448, "MMD": None}, "new": None},
}


def test_sections_parse():
    paper = parse_claimed(
        full(
            summary_only=[
                {"value": "one epoch", "source": "popular summary", "correction": "not in the paper"}
            ],
            table=TABLE,
            figures=[
                {"name": "acc_vs_r", "kind": "scatter", "x": "retention/ratio", "y": "eval/gsm8k/acc"},
                {"name": "bars", "kind": "bars", "metrics": ["retention/forgetting", "drift/mmd2"]},
            ],
        ),
        "toy",
    )
    assert (
        paper.summary_only[0].value == "one epoch" and paper.summary_only[0].correction == "not in the paper"
    )
    t = paper.table
    assert [arm for arm, _ in t.rows] == ["rl", "base", "new"]  # file order
    assert dict(t.rows)["base"] == {"GSM8K": 0.448, "MMD": None} and dict(t.rows)["new"] == {}
    gsm, mmd = t.columns
    assert gsm.metric_at("micro") == "eval/id/greedy_acc" and gsm.metric_at("small") == "eval/gsm8k/acc"
    assert gsm.metric_at("large") is None and mmd.metric_at("anything") == "drift_policy/mmd2"
    assert [(f.name, f.kind, f.metrics) for f in paper.figures] == [
        ("acc_vs_r", "scatter", ("retention/ratio", "eval/gsm8k/acc")),
        ("bars", "bars", ("retention/forgetting", "drift/mmd2")),
    ]
    plain = parse_claimed(minimal(), "toy")
    assert plain.summary_only == () and plain.table is None and plain.figures == ()


def table_with(**changes) -> dict:
    t = {**TABLE, "columns": [dict(c) for c in TABLE["columns"]], "rows": dict(TABLE["rows"])}
    for key, value in changes.items():
        if key.startswith("row_"):
            t["rows"][key[4:]] = value
        else:
            t[key] = value
    return t


@pytest.mark.parametrize(
    "top, match",
    [
        ({"summary_only": [{"value": "x"}]}, r"summary_only\[0\]\.correction: missing key"),
        (
            {"summary_only": [{"value": "x", "correction": "y", "why": 1}]},
            r"summary_only\[0\]: unknown key\(s\) why; allowed: correction, source, value",
        ),
        ({"summary_only": {"value": "x"}}, "summary_only: input should be a valid list"),
        (
            {"table": table_with(row_sft={"GSM8K": 0.5})},
            r"table\.rows\.sft: unknown arm 'sft'.*new, base, rl",
        ),
        (
            {"table": table_with(row_rl={"GSM8k": 0.5})},
            r"table\.rows\.rl\.GSM8k: unknown column 'GSM8k'; columns: GSM8K, MMD",
        ),
        (
            {"table": table_with(row_rl={"GSM8K": float("nan")})},
            r"table\.rows\.rl\.GSM8K: input should be a finite number, got nan",
        ),
        (
            {"table": table_with(row_rl={"GSM8K": "0.5"})},
            r"table\.rows\.rl\.GSM8K: input should be a valid number",
        ),
        ({"table": table_with(row_rl=[0.5])}, r"table\.rows\.rl: input should be a valid dictionary"),
        (
            {"table": table_with(columns=[{"name": "A", "metric": "eval/id/greedy_acc"}] * 2)},
            r"table\.columns: duplicate column name\(s\) 'A'",
        ),
        (
            {"table": table_with(columns=[{"name": "A", "metric": {"small": "eval/gsm8k/accc"}}])},
            r"table\.columns\[0\] \(A\)\.metric\.small: unknown metric 'eval/gsm8k/accc'",
        ),
        (
            {"table": table_with(columns=[{"name": "A", "metric": {}}])},
            r"table\.columns\[0\] \(A\)\.metric: empty",
        ),
        ({"table": table_with(columns=[])}, r"table\.columns: expected a non-empty list"),
        ({"table": table_with(rows={})}, r"table\.rows: expected a non-empty mapping"),
        (
            {"table": {"title": "t", "columns": [], "rowz": {}}},
            r"table: unknown key\(s\) rowz; allowed: columns, rows",
        ),
        (
            {"figures": [{"name": "f", "kind": "line", "x": "a"}]},
            r"figures\[0\] \(f\)\.kind: expected one of scatter, bars, got 'line'",
        ),
        (
            {"figures": [{"name": "f", "kind": "scatter", "x": "retention/ratio"}]},
            r"figures\[0\] \(f\)\.y: missing key",
        ),
        (
            {"figures": [{"name": "f", "kind": "scatter", "x": "retention/ratio", "y": "drift/mmd"}]},
            r"figures\[0\] \(f\)\.y: unknown metric 'drift/mmd'",
        ),
        (
            {"figures": [{"name": "f", "kind": "bars", "metrics": []}]},
            r"figures\[0\] \(f\)\.metrics: expected a non-empty list",
        ),
        (
            {"figures": [{"name": "f", "kind": "scatter", "x": ["drift/mmd2"], "y": "drift/mmd2"}]},
            r"figures\[0\] \(f\)\.x: input should be a valid string, got \['drift/mmd2'\]",
        ),
        (
            {"summary_only": [{"value": "x", "correction": ""}]},
            r"summary_only\[0\]\.correction: expected a non-empty string",
        ),
        (
            {"figures": [{"name": "f", "kind": "bars", "metrics": ["retention/ratio", "x/y"]}]},
            r"figures\[0\] \(f\)\.metrics\[1\]: unknown metric 'x/y'",
        ),
        (
            {"figures": [{"name": "a/b", "kind": "bars", "metrics": ["drift/mmd2"]}]},
            r"figures\[0\] \(a/b\)\.name: expected letters",
        ),
        (
            {"figures": [{"name": "effects", "kind": "bars", "metrics": ["drift/mmd2"]}]},
            r"figures\[0\] \(effects\)\.name",
        ),
        (
            {"figures": [{"name": "train_entropy", "kind": "bars", "metrics": ["drift/mmd2"]}]},
            r"figures\[0\] \(train_entropy\)\.name",
        ),
        (
            {"figures": [{"name": "f", "kind": "bars", "metrics": ["drift/mmd2"]}] * 2},
            r"figures: duplicate name\(s\) f",
        ),
    ],
)
def test_bad_sections_are_rejected(top, match):
    with pytest.raises(ConfigError, match=r"^claimed\.yaml: " + match):
        parse_claimed(full(**top), "toy")
