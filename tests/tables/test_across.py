"""Claims measured across runs: rank correlation over every package's records (cluster bootstrap),
the config values two arms' records differ in, and their place in claimed.yaml and the tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from repro.errors import ConfigError
from repro.tables import write_tables
from repro.tables.across import (
    Point,
    changed_keys,
    config_diff,
    rank_correlation,
    run_points,
    value_of,
)
from repro.tables.claims import (
    NOT_REPRODUCED,
    NOT_RUN,
    REPRODUCED,
    UNDERPOWERED,
    parse_claimed,
)
from repro.tables.stats import ALPHA, POWER


def record(paper: str, arm: str, seed: int, drift: float, forgetting: float, loss: float, **config) -> dict:
    return {
        "schema": 1, "paper": paper, "arm": arm, "seed": seed, "scale": "micro", "status": "FINISHED",
        "failure_reason": None, "run_id": f"{arm}{seed}".ljust(32, "0"), "overrides": [],
        "config": {"paper": paper, "arm": arm, "seed": seed, "trainer": {"lr": 0.1, "threads": 1}, **config},
        "config_hash": "x", "final": {"drift/mmd2": drift, "retention/forgetting": forgetting},
        "curves": {"train/loss": [[1, loss + 1], [2, loss]],
                   "eval/id/greedy_acc": [[0, 0.3], [2, 0.3 + loss]]},
        "provenance": {"git_sha": "abc", "git_dirty": False, "wall_time_s": 1.0},
    }  # fmt: skip


def test_value_of_final_change_mean_and_forgetting_from_retention_curves():
    rec = {
        "final": {"x": 2.0},
        "curves": {
            "x": [[0, 1.0], [5, 3.0], [10, 2.0]],
            "eval/retention/facts_acc": [[0, 1.0], [10, 0.8]],
            "eval/retention/truths_acc": [[0, 0.5], [10, 0.5]],
        },
    }
    assert value_of(rec, "x", "final") == 2.0
    assert value_of(rec, "x", "change") == pytest.approx(1.0)
    assert value_of(rec, "x", "mean") == pytest.approx(2.0)
    # Older records without retention/forgetting: eq. 12 from the retention curves (step 0 vs last).
    assert value_of(rec, "retention/forgetting", "final") == pytest.approx(0.1)
    assert (
        value_of(
            {"final": {"retention/forgetting": 0.3}, "curves": rec["curves"]}, "retention/forgetting", "final"
        )
        == 0.3
    )
    assert value_of(rec, "missing", "final") is None
    assert value_of({"curves": {"x": [[0, 1.0]]}}, "x", "change") is None


def test_rank_correlation_equals_spearman_and_its_interval_is_deterministic():
    gen = np.random.default_rng(1)
    x = gen.normal(size=40)
    y = x + gen.normal(scale=0.5, size=40)
    points = [Point("p", f"arm{i // 2}", i % 2, (float(a), float(b))) for i, (a, b) in enumerate(zip(x, y))]
    est = rank_correlation(points)
    assert est.mean == pytest.approx(stats.spearmanr(x, y).statistic)
    assert est.n == 40 and est.ci is not None and est.ci[0] < est.mean < est.ci[1]
    assert rank_correlation(points).ci == est.ci  # fixed bootstrap generator


def test_cluster_bootstrap_is_wider_than_treating_copies_as_independent_runs():
    """Ten seeds of an arm that are copies of one point carry one point's information."""
    gen = np.random.default_rng(0)
    base = [(float(a), float(a + gen.normal(scale=1.0))) for a in gen.normal(size=8)]
    clustered = [Point("p", f"a{i}", s, v) for i, v in enumerate(base) for s in range(10)]
    independent = [Point("p", f"a{i}-{s}", 0, v) for i, v in enumerate(base) for s in range(10)]
    lo_c, hi_c = rank_correlation(clustered).ci
    lo_i, hi_i = rank_correlation(independent).ci
    assert hi_c - lo_c > 1.5 * (hi_i - lo_i)


def test_versus_compares_absolute_correlations():
    x = np.arange(12.0)
    y = x.copy()
    w = np.array([0, 3, 1, 5, 2, 4, 8, 6, 11, 7, 10, 9.0])  # weaker, positive
    points = [Point("p", f"a{i}", 1, (x[i], y[i], -w[i])) for i in range(12)]  # sign of w does not matter
    est = rank_correlation(points, versus=True)
    assert est.mean == pytest.approx(1.0 - abs(stats.spearmanr(w, y).statistic))


def test_too_few_arms_gives_no_interval():
    points = [Point("p", "a", s, (float(s), float(s))) for s in range(5)]
    est = rank_correlation(points)
    assert est.mean == pytest.approx(1.0) and est.ci is None


def test_run_points_reads_every_paper_and_skips_runs_lacking_a_metric():
    universe = {
        "p1": {"a": {1: record("p1", "a", 1, 0.1, 0.2, 1.0)}},
        "p2": {"b": {1: record("p2", "b", 1, 0.3, 0.4, 2.0), 2: {"final": {}, "curves": {}}}},
    }
    pts = run_points(universe, ("drift/mmd2", "final"), ("retention/forgetting", "final"))
    assert [(p.paper, p.arm, p.seed) for p in pts] == [("p1", "a", 1), ("p2", "b", 1)]
    assert pts[1].values == (0.3, 0.4)


def test_changed_keys_ignores_names_paths_seed_and_threads():
    a = {"paper": "x", "arm": "a", "seed": 1, "paths": {"root": "/a"}, "trainer": {"lr": 0.1, "threads": 1},
         "objective": {"kw": {"eps": 0.2}}}  # fmt: skip
    b = {"paper": "y", "arm": "b", "seed": 2, "paths": {"root": "/b"}, "trainer": {"lr": 0.1, "threads": 4},
         "objective": {"kw": {"eps": 0.2, "rescue": "perturb", "delta": 0.1}}}  # fmt: skip
    assert changed_keys(b, a) == {"objective.kw.delta": (None, 0.1), "objective.kw.rescue": (None, "perturb")}
    counts, changed = config_diff({1: {"config": b}, 2: {"config": b}}, {1: {"config": a}, 3: {"config": a}})
    assert counts == {1: 2.0} and list(changed) == ["objective.kw.delta", "objective.kw.rescue"]


CLAIMED = """
paper: "Recipe (no paper)"
arxiv: ""
arms: [a, b]
claims:
  - id: drift_predicts
    text: Drift rises with forgetting across every package's runs.
    claimed: "measure drift"
    source: "summary"
    headline: true
    measure: {kind: correlation, x: drift/mmd2, y: retention/forgetting, papers: all, direction: 1,
              min_effect: 0.2}
  - id: drift_beats_loss
    text: Drift predicts forgetting better than the loss.
    claimed: "not just the loss"
    source: "summary"
    measure: {kind: correlation, x: drift/mmd2, y: retention/forgetting,
              versus: {metric: train/loss, at: final}, papers: all, direction: 1, min_effect: 0.1}
  - id: only_mine
    text: Within this paper only.
    claimed: "-"
    source: "summary"
    measure: {kind: correlation, x: drift/mmd2, y: retention/forgetting, direction: 1, min_effect: 0.2}
  - id: small_swap
    text: The swap changes few values.
    claimed: "one hour"
    source: "summary"
    measure: {kind: config_diff, treatment: b, control: a, range: [1, 5]}
"""


@pytest.fixture
def universe_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """`recipe` (arms a, b; b sets two more config values) and `other` (6 arms): forgetting rises
    with drift everywhere; the loss is noise."""
    results, tables = tmp_path / "results", tmp_path / "paper_tables"
    (tables / "recipe").mkdir(parents=True)
    (tables / "recipe" / "claimed.yaml").write_text(CLAIMED)
    gen = np.random.default_rng(3)
    rows = [("recipe", "a", {}), ("recipe", "b", {"objective": {"rescue": "perturb", "delta": 0.1}})]
    rows += [("other", f"arm{k}", {}) for k in range(6)]
    for i, (paper, arm, extra) in enumerate(rows):
        for seed in (1, 2):
            drift = 0.01 * i + 0.001 * seed
            rec = record(
                paper, arm, seed, drift, 2 * drift + 0.001 * gen.normal(), float(gen.normal()), **extra
            )
            path = results / paper / "micro" / arm / f"seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rec))
    return results, tables


def test_correlation_and_config_diff_claims_in_a_table(universe_dirs):
    results, tables = universe_dirs
    report = write_tables("recipe", results, tables)
    by_id = {r.claim.id: r for r in report.results}
    corr = by_id["drift_predicts"]
    assert corr.verdict == REPRODUCED and corr.estimate.n == 16  # every run of both papers
    assert corr.estimate.mean > 0.9 and "16 runs of 8 arms (other 12, recipe 4)" in corr.notes[0]
    assert by_id["drift_beats_loss"].verdict == REPRODUCED  # the loss here is noise
    mine = by_id["only_mine"]  # 2 arms of this paper only: no interval
    assert mine.estimate.n == 4 and mine.estimate.ci is None
    swap = by_id["small_swap"]
    assert swap.verdict == REPRODUCED and swap.estimate.mean == 2.0 and swap.estimate.ci == (2.0, 2.0)
    assert "objective.rescue: — → perturb" in swap.notes[0]
    # Power: a correlation's MDE comes from its bootstrap sd; a config_diff is a fact, without power.
    z = stats.norm.ppf(1 - ALPHA) + stats.norm.ppf(POWER)
    assert corr.power.mde == pytest.approx(z * corr.estimate.sd) and math.isnan(corr.power.needed)
    assert swap.power is None and mine.power is not None and math.isnan(mine.power.mde)
    md = report.path.read_text()
    assert "<br><sub>bootstrap sd " in md and ", n=16 runs</sub>" in md
    assert "— (a fact of the configuration)" in md and "bootstrap over arms" in md
    assert "no arXiv paper" in md
    assert "Spearman ρ(drift/mmd2 (final), retention/forgetting (final)) over the runs of every paper" in md
    fig = tables / "recipe" / "fig_micro_corr_drift_predicts.png"
    assert fig.exists() and f"]({fig.name})" in md


def test_noisy_correlation_is_underpowered_when_its_mde_exceeds_min_effect(universe_dirs):
    results, tables = universe_dirs
    gen = np.random.default_rng(0)
    for path in results.glob("*/micro/*/seed*.json"):  # forgetting unrelated to drift
        rec = json.loads(path.read_text())
        rec["final"]["retention/forgetting"] = float(gen.normal())
        path.write_text(json.dumps(rec))
    corr = {r.claim.id: r for r in write_tables("recipe", results, tables).results}["drift_predicts"]
    lo, hi = corr.estimate.ci
    assert lo < 0 < hi and hi > 0.2  # straddles 0 and reaches min_effect: not decided
    assert corr.power.mde > 0.2 and corr.verdict == UNDERPOWERED


def test_correlation_claim_not_run_without_runs_and_refuted_when_reversed(universe_dirs):
    results, tables = universe_dirs
    for path in results.glob("*/micro/*/seed*.json"):  # forgetting now falls as drift rises
        rec = json.loads(path.read_text())
        rec["final"]["retention/forgetting"] = -rec["final"]["drift/mmd2"]
        path.write_text(json.dumps(rec))
    by_id = {r.claim.id: r for r in write_tables("recipe", results, tables).results}
    assert by_id["drift_predicts"].verdict == NOT_REPRODUCED
    for path in results.glob("*/micro/*/seed*.json"):
        rec = json.loads(path.read_text())
        del rec["final"]["drift/mmd2"]
        path.write_text(json.dumps(rec))
    by_id = {r.claim.id: r for r in write_tables("recipe", results, tables).results}
    assert by_id["drift_predicts"].verdict == NOT_RUN


@pytest.mark.parametrize(
    "measure, message",
    [
        (
            "{kind: correlation, x: drift/mmd2, y: nope, direction: 1, min_effect: 0.1}",
            "measure.y: unknown metric 'nope'",
        ),
        (
            "{kind: correlation, x: drift/mmd2, y: drift/mmd2, direction: 1, min_effect: 0.1, arm: a}",
            "unknown key(s) arm",
        ),
        (
            "{kind: correlation, x: {metric: drift/mmd2, at: last}, y: drift/mmd2, direction: 1, "
            "min_effect: 0.1}",
            "measure.x.at",
        ),
        ("{kind: config_diff, treatment: a, control: a, range: [1, 5]}", "same arm"),
        ("{kind: config_diff, treatment: a, control: b}", "measure.range: missing key"),
    ],
)
def test_bad_measures_fail_with_one_line(measure, message):
    text = f"""
paper: P
arms: [a, b]
claims:
  - {{id: c, text: t, claimed: x, source: s, measure: {measure}}}
"""
    import yaml

    with pytest.raises(ConfigError) as info:
        parse_claimed(yaml.safe_load(text), "p", "claimed.yaml")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_correlation_without_versus_has_finite_point_and_nan_free_interval():
    points = [Point("p", f"a{i}", 1, (float(i), float(i % 3))) for i in range(9)]
    est = rank_correlation(points)
    assert math.isfinite(est.mean) and all(math.isfinite(v) for v in est.ci)
