"""write_tables end to end on synthetic run records (no real runs)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from repro.config import find_root
from repro.errors import ConfigError
from repro.provenance import code_sha256
from repro.tables import load_records, write_all, write_tables
from repro.tables.claims import Gate, GateResult, check_gate, item_values
from repro.tables.stats import item_bootstrap

SLUG = "toy"
CLAIMED = """
paper: "Toy Paper (Doe et al.)"
arxiv: "2600.00001"
arms: [base, base_new, base_push, other]
metrics: [train/toy_share]   # a paper's own metric, logged by its registered functions
claims:
  - id: improves
    text: The new arm raises accuracy.
    claimed: "+5 points"
    source: "Table 1"
    summary: {value: "+10%", source: "popular summary", correction: "+5 points"}
    measure: {kind: effect, metric: eval/id/greedy_acc, treatment: base_new, control: base,
              direction: 1, min_effect: 0.02}
  - id: trains
    text: Training raises accuracy.
    claimed: "precondition"
    source: "suite precondition"
    measure: {kind: change, metric: eval/id/greedy_acc, arm: base, direction: 1, min_effect: 0.02}
  - id: push_no_help
    text: Pushing does not help.
    claimed: "no gain"
    source: "[secondary]"
    measure: {kind: effect, metric: eval/id/greedy_acc, treatment: base_push, control: base,
              direction: 0, min_effect: 0.02}
  - id: share
    text: A third of the signal is near the boundary.
    claimed: "none"
    source: "[secondary]"
    measure: {kind: value, metric: train/toy_share, arm: base, at: mean, range: [0.28, 0.35]}
  - id: other_helps
    text: The other arm helps.
    claimed: "+1"
    source: "Fig. 2"
    measure: {kind: effect, metric: eval/id/greedy_acc, treatment: other, control: base,
              direction: 1, min_effect: 0.02}
"""


RUN_ID_PREFIX = {"base": "aa", "base_new": "bb", "base_push": "cc", "other": "dd"}


def make_record(
    arm: str, seed: int, final_acc: float, scale: str = "micro", status: str = "FINISHED"
) -> dict:
    rng = np.random.default_rng(seed)
    steps = list(range(0, 21, 5))
    return {
        "schema": 1,
        "paper": SLUG,
        "arm": arm,
        "seed": seed,
        "scale": scale,
        "status": status,
        "failure_reason": None if status == "FINISHED" else "NonFiniteError: loss is nan at step 7",
        "run_id": f"{RUN_ID_PREFIX[arm]}{seed:06d}" + "f" * 24,
        "overrides": [],
        "config": {},
        "final": {"eval/id/greedy_acc": final_acc, "eval/ood/greedy_acc": final_acc / 2},
        "curves": {
            "eval/id/greedy_acc": [
                [s, float(v)] for s, v in zip(steps, np.linspace(0.3, final_acc, len(steps)))
            ],
            "train/entropy": [[s, float(1 - 0.02 * s + 0.01 * rng.standard_normal())] for s in range(1, 21)],
            "train/reward_mean": [[s, float(0.3 + 0.02 * s)] for s in range(1, 21)],
            "train/toy_share": [[s, 0.3] for s in range(1, 21)],
        },
        "provenance": {"git_sha": "abcdef1234567890", "git_dirty": False, "wall_time_s": 40.0},
    }


def write_record(results: Path, rec: dict, name: str | None = None, adhoc: bool = False) -> Path:
    d = results / SLUG / rec["scale"] / rec["arm"] / ("adhoc" if adhoc else "")
    d.mkdir(parents=True, exist_ok=True)
    path = d / (name or f"seed{rec['seed']}.json")
    path.write_text(json.dumps(rec))
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Three paired seeds of base, base_new (+0.1) and base_push (≈ +0); no runs of `other`."""
    results, tables = tmp_path / "results", tmp_path / "paper_tables"
    (tables / SLUG).mkdir(parents=True)
    (tables / SLUG / "claimed.yaml").write_text(CLAIMED)
    for seed, (b, n, p) in enumerate([(0.60, 0.70, 0.60), (0.62, 0.71, 0.61), (0.58, 0.69, 0.57)], start=1):
        write_record(results, make_record("base", seed, b))
        write_record(results, make_record("base_new", seed, n))
        write_record(results, make_record("base_push", seed, p))
    return results, tables


def claim_row(md: str, claim_id: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| **{claim_id}**"))


def test_table_verdicts_and_marker(dirs):
    results, tables = dirs
    report = write_tables(SLUG, results, tables)
    md = (tables / SLUG / "comparison.md").read_text()
    assert report.written and report.runs == 9
    assert "<!-- repro:runs=9 -->" in md
    assert "from 9 runs" in md and "git abcdef1234" in md
    assert "Toy Paper (Doe et al.)" in md and "2600.00001" in md
    assert "**reproduced**" in claim_row(md, "improves")
    assert "+0.100 ± 0.010 (n=3)" in claim_row(md, "improves")
    assert "+10% (popular summary)" in claim_row(md, "improves")
    assert "**reproduced**" in claim_row(md, "trains")
    assert "**reproduced**" in claim_row(md, "push_no_help")
    assert "**reproduced**" in claim_row(md, "share")
    assert "**not run**" in claim_row(md, "other_helps")
    # Run ids link to their records, resolvable from the table's folder.
    links = ", ".join(f"[bb00000{s}](../../results/toy/micro/base_new/seed{s}.json)" for s in (1, 2, 3))
    assert f"base_new: {links}<br>base: [aa000001](../../results/toy/micro/base/seed1.json)" in claim_row(
        md, "improves"
    )
    for verdict in ("reproduced", "direction only", "not reproduced", "inconclusive", "not run"):
        assert f"- **{verdict}**:" in md  # footer documents every verdict
    assert re.search(r"\| micro \| other \| — \| not run \|", md)


def _config(seed: int, lr: float = 1e-4) -> dict:
    """A record's config with the keys that differ per seed by design (seed, its base, threads, a
    teacher checkpoint made from that seed's base)."""
    return {
        "seed": seed,
        "model": {"base": (seed - 1) % 3, "kind": "micro"},
        "trainer": {
            "lr": lr,
            "threads": seed % 2 + 1,
            "teacher": f"<cache_dir>/checkpoints/{seed:016x}/seed{seed}",
        },
        "paths": {"root": f"/machine{seed}"},
    }


@pytest.mark.parametrize("stale_lr", [None, 3e-4])
def test_mixed_configs_within_an_arm_are_named(dirs, stale_lr):
    """An arm whose seeds ran under different settings (a config changed and old records were kept)
    is named in the header with its seed groups; per-seed keys alone never make a mix."""
    results, tables = dirs
    for seed, acc in [(1, 0.60), (2, 0.62), (3, 0.58)]:
        rec = make_record("base", seed, acc)
        rec["config"] = _config(seed, lr=stale_lr if (stale_lr and seed == 3) else 1e-4)
        write_record(results, rec)
    write_tables(SLUG, results, tables)
    md = (tables / SLUG / "comparison.md").read_text()
    if stale_lr is None:
        assert "Mixed configs" not in md
    else:
        assert "**Mixed configs**" in md and "`micro/base`: 2 configs (seeds 1, 2 | 3)" in md


def test_figures_written_and_embedded(dirs):
    results, tables = dirs
    report = write_tables(SLUG, results, tables)
    names = {p.name for p in report.figures}
    # The default curves; train/clipfrac is in no record: skipped.
    assert names == {
        "fig_micro_eval_id_greedy_acc.png",
        "fig_micro_train_entropy.png",
        "fig_micro_train_reward_mean.png",
        "fig_micro_effects.png",
    }
    md = report.path.read_text()
    for p in report.figures:
        assert p.stat().st_size > 1000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({p.name})" in md


def test_failed_runs_listed_never_counted(dirs):
    results, tables = dirs
    failed = make_record("base_new", 4, 0.99, status="FAILED")
    write_record(results, failed, name="seed4.failed.json")
    # A failed retry beside a success: the success counts, the failure is listed.
    write_record(results, make_record("base", 1, 0.1, status="FAILED"), name="seed1.failed.json")
    # Ad-hoc runs are ignored entirely.
    write_record(results, make_record("other", 1, 0.9), adhoc=True)
    # A canonical path holding a run with overrides is not canonical.
    odd = make_record("base_push", 5, 0.9)
    odd["overrides"] = ["trainer.lr=1"]
    write_record(results, odd)

    runs = load_records(results, SLUG)
    assert runs.n == 9
    assert runs.records["micro"]["base"][1]["final"]["eval/id/greedy_acc"] == 0.60
    assert {(f.arm, f.seed) for f in runs.failed} == {("base_new", 4), ("base", 1), ("base_push", 5)}

    report = write_tables(SLUG, results, tables)
    md = report.path.read_text()
    assert report.runs == 9 and "<!-- repro:runs=9 -->" in md
    assert "`micro/base_new` [seed 4](../../results/toy/micro/base_new/seed4.failed.json)" in md
    assert "NonFiniteError: loss is nan at step 7" in md
    assert "A finished run of this seed exists" in md
    assert "not canonical" in md
    assert "**not run**" in claim_row(md, "other_helps")
    assert "(n=3)" in claim_row(md, "improves")


def test_fewer_runs_guard(dirs, capsys):
    results, tables = dirs
    write_tables(SLUG, results, tables)
    path = tables / SLUG / "comparison.md"
    before = path.read_text()
    for arm in ("base", "base_new", "base_push"):
        (results / SLUG / "micro" / arm / "seed3.json").unlink()

    report = write_tables(SLUG, results, tables)
    assert not report.written
    assert report.previous_runs == 9 and report.runs == 6
    assert "9" in report.message and "6" in report.message and "force" in report.message
    assert report.message in capsys.readouterr().err
    assert path.read_text() == before

    report = write_tables(SLUG, results, tables, force=True)
    assert report.written and "<!-- repro:runs=6 -->" in path.read_text()


def test_no_records_gives_not_run_table(tmp_path):
    tables = tmp_path / "tables"
    (tables / SLUG).mkdir(parents=True)
    (tables / SLUG / "claimed.yaml").write_text(CLAIMED)
    report = write_tables(SLUG, tmp_path / "results", tables)
    md = report.path.read_text()
    assert report.written and report.runs == 0 and not report.figures
    assert {r.verdict for r in report.results} == {"not run"}
    assert md.count("| **not run** |") == 5 and "<!-- repro:runs=0 -->" in md


def test_write_all_and_missing_claims(dirs, tmp_path):
    results, tables = dirs
    (tables / "empty_dir").mkdir()  # no claimed.yaml: not a paper
    reports = write_all(results, tables)
    assert [r.slug for r in reports] == [SLUG] and reports[0].written
    with pytest.raises(ConfigError, match="no claims file"):
        write_tables("nope", results, tables)


def test_declared_curves_replace_the_default_ones_in_their_order(dirs):
    results, tables = dirs
    claimed = CLAIMED.replace("claims:", "curves: [train/toy_share, train/entropy]\nclaims:", 1)
    (tables / SLUG / "claimed.yaml").write_text(claimed)
    report = write_tables(SLUG, results, tables)
    curves = [p.name for p in report.figures if p.name != "fig_micro_effects.png"]
    assert curves == ["fig_micro_train_toy_share.png", "fig_micro_train_entropy.png"]
    md = report.path.read_text()
    assert md.index("fig_micro_train_toy_share.png") < md.index("fig_micro_train_entropy.png")
    assert not (tables / SLUG / "fig_micro_eval_id_greedy_acc.png").exists()


def test_bad_claim_fails_before_writing(dirs):
    results, tables = dirs
    (tables / SLUG / "claimed.yaml").write_text(CLAIMED.replace("treatment: other", "treatment: othr"))
    with pytest.raises(
        ConfigError, match=r"claimed\.yaml:\d+: claims\[4\] \(other_helps\)\.measure\.treatment: .*'othr'"
    ):
        write_tables(SLUG, results, tables)
    assert not (tables / SLUG / "comparison.md").exists()


def test_one_table_per_scale(dirs):
    results, tables = dirs
    for seed in (1, 2):
        write_record(results, make_record("base", seed, 0.5, scale="small"))
        write_record(results, make_record("base_new", seed, 0.5 + 0.01 * seed, scale="small"))
    report = write_tables(SLUG, results, tables)
    md = report.path.read_text()
    assert report.runs == 13
    assert "## Claims at scale `micro`" in md and "## Claims at scale `small`" in md
    small = [r for r in report.results if r.scale == "small"]
    assert {r.claim.id: r.verdict for r in small}["push_no_help"] == "not run"
    assert (tables / SLUG / "fig_small_effects.png").exists()
    assert (tables / SLUG / "fig_micro_effects.png").exists()


# --- results table, popular-summary section, declared figures, equivalence claims -------------

EXTRA = """
metrics: [train/toy_share, eval/retention/mmlu_acc]
summary_only:
  - {value: "cut SFT to one epoch, then three light RL iterations", source: "popular summary",
     correction: "not in the paper"}
table:
  title: "Table 2: target and retention"
  source: "Table 2"
  columns:
    - {name: ACC, metric: {micro: eval/id/greedy_acc, small: eval/ood/greedy_acc}}
    - {name: R, metric: retention/ratio}
    - {name: MMLU, metric: {micro: eval/retention/mmlu_acc}}
  rows:
    base: {ACC: 0.448, R: null, MMLU: 0.436}
    base_new: {ACC: 0.512, R: 1.0008}
    base_push: {}
    other: {ACC: 0.04}
figures:
  - {name: acc_vs_retention, kind: scatter, x: retention/ratio, y: eval/id/greedy_acc}
  - {name: retention_bars, kind: bars, metrics: [retention/forgetting, retention/ratio]}
  - {name: nobody_logs_it, kind: scatter, x: drift/mmd2, y: eval/id/greedy_acc}
"""
SAME = """
  - id: push_same
    text: Pushing changes nothing.
    claimed: "no difference"
    source: "Table 3"
    measure: {kind: effect, metric: eval/id/greedy_acc, treatment: base_push, control: base,
              direction: 0, better: 0, min_effect: 0.05}
"""


def with_retention(rec: dict) -> dict:
    """base and base_new log retention (ratio 0.9 + seed/100); base_push does not."""
    if rec["arm"] != "base_push":
        ratio = 0.9 + rec["seed"] / 100
        rec["final"] |= {"retention/ratio": ratio, "retention/forgetting": 1 - ratio}
    return rec


@pytest.fixture
def paper_dirs(dirs) -> tuple[Path, Path]:
    """`dirs` plus the optional sections and retention metrics in the records."""
    results, tables = dirs
    (tables / SLUG / "claimed.yaml").write_text(CLAIMED + SAME + EXTRA)
    for path in (results / SLUG / "micro").glob("*/seed*.json"):
        path.write_text(json.dumps(with_retention(json.loads(path.read_text()))))
    return results, tables


def section(md: str, title: str) -> str:
    start = md.index(title)
    end = md.find("\n## ", start + 1)
    return md[start : end if end >= 0 else None]


def table_row(text: str, arm: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {arm} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_results_table_paper_vs_ours(paper_dirs):
    results, tables = paper_dirs
    # One seed of base at a second scale, where MMLU has no metric and ACC maps to the OOD metric.
    write_record(results, with_retention(make_record("base", 1, 0.5, scale="small")))
    md = write_tables(SLUG, results, tables).path.read_text()
    t = section(md, "## Table 2: target and retention: paper vs reproduced")
    assert "Paper values from Table 2." in t
    micro, small = t.split("### Scale `small`")
    assert "### Scale `micro`" in micro
    header = "| arm | ACC paper | ACC ours | R paper | R ours | MMLU paper | MMLU ours |"
    assert micro.count(header) == 1 and small.count(header) == 1
    assert (
        "Columns at `micro`: ACC = `eval/id/greedy_acc`, R = `retention/ratio`, "
        "MMLU = `eval/retention/mmlu_acc`." in micro
    )
    assert "MMLU = – (none at this scale)" in small and "ACC = `eval/ood/greedy_acc`" in small
    # Rows in the file's order; paper values as given, reproduced = mean ± sd (n) over seeds.
    arms = [
        line.split("|")[1].strip()
        for line in micro.splitlines()
        if line.startswith("| base") or line.startswith("| other")
    ]
    assert arms == ["base", "base_new", "base_push", "other"]
    assert table_row(micro, "base") == [
        "base",
        "0.448",
        "0.600 ± 0.020 (n=3)",
        "–",
        "0.920 ± 0.010 (n=3)",
        "0.436",
        "not logged",
    ]
    assert table_row(micro, "base_new") == [
        "base_new",
        "0.512",
        "0.700 ± 0.010 (n=3)",
        "1.0008",
        "0.920 ± 0.010 (n=3)",
        "–",
        "not logged",
    ]
    assert table_row(micro, "base_push")[1:5] == ["–", "0.593 ± 0.021 (n=3)", "–", "not logged"]
    assert table_row(micro, "other") == ["other", "0.04", "not run", "–", "not run", "–", "not run"]
    # A single seed shows its value with n=1; a column without a metric at this scale shows –.
    assert table_row(small, "base") == ["base", "0.448", "0.250 (n=1)", "–", "0.910 (n=1)", "0.436", "–"]
    assert table_row(small, "base_new")[2] == "not run"
    # A claim on that one seed is labelled a single-seed row: its estimate, no CI, no verdict.
    row = claim_row(section(md, "## Claims at scale `small`"), "trains")
    assert "+0.200 (n=1)<br><sub>single-seed row (n=1): no CI" in row
    assert "| undefined (n<2) |" in row and "**inconclusive**" in row


def test_results_table_without_runs(tmp_path):
    tables = tmp_path / "tables"
    (tables / SLUG).mkdir(parents=True)
    (tables / SLUG / "claimed.yaml").write_text(CLAIMED + EXTRA)
    md = write_tables(SLUG, tmp_path / "results", tables).path.read_text()
    t = section(md, "## Table 2: target and retention")
    assert "No runs yet." in t and "### Scale" not in t
    assert table_row(t, "base") == ["base", "0.448", "not run", "–", "not run", "0.436", "not run"]


def test_popular_summary_section(paper_dirs):
    results, tables = paper_dirs
    md = write_tables(SLUG, results, tables).path.read_text()
    s = section(md, "## Popular summary vs paper")
    rows = [line for line in s.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == [
        "| +10% (popular summary) | +5 points | **improves** (micro: reproduced) |",
        "| cut SFT to one epoch, then three light RL iterations (popular summary) | not in the paper "
        "| no measurable counterpart |",
    ]
    assert md.index("## Popular summary vs paper") < md.index("## Runs")


def test_no_summaries_no_section(dirs):
    results, tables = dirs
    (tables / SLUG / "claimed.yaml").write_text(CLAIMED.replace("    summary: {value", "    #"))
    md = write_tables(SLUG, results, tables).path.read_text()
    assert "Popular summary vs paper" not in md and "paper vs reproduced" not in md


def test_declared_figures(paper_dirs):
    results, tables = paper_dirs
    report = write_tables(SLUG, results, tables)
    names = [p.name for p in report.figures]
    # Declared figures come after the built-in ones; one whose metric no run logged is skipped.
    assert names[-2:] == ["fig_micro_acc_vs_retention.png", "fig_micro_retention_bars.png"]
    assert not any("nobody_logs_it" in n for n in names)
    assert not (tables / SLUG / "fig_micro_nobody_logs_it.png").exists()
    md = report.path.read_text()
    for name in names[-2:]:
        data = (tables / SLUG / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
        assert f"]({name})" in md
    assert "![acc_vs_retention: eval/id/greedy_acc vs retention/ratio per seed and arm (micro)]" in md
    # Removing the declaration removes its now stale figure.
    (tables / SLUG / "claimed.yaml").write_text(CLAIMED + SAME)
    write_tables(SLUG, results, tables)
    assert not (tables / SLUG / "fig_micro_acc_vs_retention.png").exists()


def test_equivalence_claim_row(paper_dirs):
    results, tables = paper_dirs
    md = write_tables(SLUG, results, tables).path.read_text()
    row = claim_row(md, "push_same")
    # base_push − base = −0.007 ± 0.006: the CI lies within ±0.05.
    assert "predicted ≈ 0: no difference (CI within ±0.050)" in row and "**reproduced**" in row
    (tables / SLUG / "claimed.yaml").write_text(
        (CLAIMED + SAME).replace("min_effect: 0.05", "min_effect: 0.005")
    )
    row = claim_row(write_tables(SLUG, results, tables).path.read_text(), "push_same")
    # The CI crosses ±0.005, and 3 seeds with sd 0.006 cannot detect 0.005 (MDE 0.019).
    assert "**underpowered**" in row and "MDE 0.019" in row


# --- verdict machinery: gates, power, bases, commits, tiers, items ----------------------------

GATED = """
  - id: gated
    text: The new arm raises accuracy, where its mechanism acts.
    claimed: "+5 points"
    source: "Table 1"
    role: summary
    requires:
      - {arm: base_new, metric: run/rescued, op: ">=", value: 0.01, why: "the rescue acts"}
    measure: {kind: effect, metric: eval/id/greedy_acc, treatment: base_new, control: base,
              direction: 1, min_effect: 0.02}
"""


def set_field(results: Path, arm: str, seed: int, fn) -> None:
    path = results / SLUG / "micro" / arm / f"seed{seed}.json"
    rec = json.loads(path.read_text())
    fn(rec)
    path.write_text(json.dumps(rec))


def gated_row(results: Path, tables: Path, gated: str | None, shares: tuple[float, ...]) -> str:
    """The `gated` claim's row after base_new's seeds 1.. log `shares` as run/rescued; `gated` (a
    GATED variant) is declared first unless None (keep the declared one)."""
    if gated is not None:
        claimed = CLAIMED.replace("metrics: [train/toy_share]", "metrics: [train/toy_share, run/rescued]")
        (tables / SLUG / "claimed.yaml").write_text(claimed + gated)
    for seed, share in enumerate(shares, start=1):
        set_field(results, "base_new", seed, lambda r, v=share: r["final"].update({"run/rescued": v}))
    return claim_row(write_tables(SLUG, results, tables).path.read_text(), "gated")


def test_a_failed_gate_makes_the_verdict_untestable_and_shows_its_value(dirs):
    results, tables = dirs
    row = gated_row(results, tables, GATED, (0.02, 0.03, 0.04))
    assert "**reproduced**" in row and "0.030 ± 0.010, 3/3 seeds: met" in row
    # The mechanism acts on too little signal in one seed: the same effect is now untestable.
    set_field(results, "base_new", 2, lambda r: r["final"].update({"run/rescued": 0.004}))
    report = write_tables(SLUG, results, tables)
    row = claim_row(report.path.read_text(), "gated")
    assert "**untestable at this scale**" in row
    assert (
        "gate base_new run/rescued (final) >= 0.01, the rescue acts: 0.021 ± 0.018, 2/3 seeds: FAILED" in row
    )
    assert "+0.100 ± 0.010 (n=3)" in row  # the estimate is still shown
    assert {r.claim.id: r.verdict for r in report.results}["improves"] == "reproduced"  # no gate
    # A gate no record logs is unchecked and decides nothing.
    for seed in (1, 2, 3):
        set_field(results, "base_new", seed, lambda r: r["final"].pop("run/rescued"))
    row = claim_row(write_tables(SLUG, results, tables).path.read_text(), "gated")
    assert "**reproduced**" in row and "not logged" in row


def test_a_gate_names_its_metric_per_scale_and_applies_only_where_it_names_one(dirs):
    """A retention task is `facts` at micro and MMLU at small: the gate reads the scale's metric
    (a micro name at small would be 'not logged' and decide nothing), and a gate that names no
    metric at a scale is not checked there."""
    results, tables = dirs
    per_scale = GATED.replace(
        "metric: run/rescued,", "metric: {micro: run/rescued, small: eval/retention/facts_acc},"
    )
    row = gated_row(results, tables, per_scale, (0.02, 0.004, 0.04))
    assert "**untestable at this scale**" in row
    assert (
        "gate base_new run/rescued (final) >= 0.01, the rescue acts: 0.021 ± 0.018, 2/3 seeds: FAILED" in row
    )
    small_only = GATED.replace("metric: run/rescued,", "metric: {small: eval/retention/facts_acc},")
    row = gated_row(results, tables, small_only, (0.02, 0.004, 0.04))
    assert "**reproduced**" in row and "gate " not in row
    gate = Gate("a", {"micro": "eval/retention/facts_acc", "small": "eval/retention/mmlu_acc"}, "<", 0.95)
    assert gate.at_scale("small") == replace(gate, metric="eval/retention/mmlu_acc")
    assert gate.at_scale("paper") is None
    with pytest.raises(TypeError, match="at_scale"):
        check_gate(gate, {})


def test_a_gate_over_the_mean_judges_the_regime_by_its_interval(dirs):
    """`over: mean` in a table: the seeds' 95% CI of the mean must lie on the gate's side, shown
    with its end. At 3 seeds that is stricter than every seed meeting it: 0.02, 0.03, 0.04 all
    exceed 0.01, but the CI's lower end is 0.03 - t(0.975, 2) * 0.01 / sqrt(3) = 0.0052."""
    results, tables = dirs
    gated = GATED.replace('why: "the rescue acts"}', 'why: "the rescue acts", over: mean}')
    row = gated_row(results, tables, gated, (0.02, 0.03, 0.04))
    assert "**untestable at this scale**" in row
    assert (
        "gate base_new run/rescued (final, 95% CI of the mean over seeds) >= 0.01, the rescue acts: "
        "0.030 ± 0.010, CI end 0.005: FAILED" in row
    )
    row = gated_row(results, tables, None, (0.029, 0.030, 0.031))  # CI end 0.030 - 4.303 * 0.001 / 1.732
    assert "**reproduced**" in row and "CI end 0.028: met" in row


def test_a_gate_over_the_mean_tolerates_a_low_seed_only_when_the_interval_clears():
    """With more seeds one run below the threshold no longer decides: the regime does."""
    gate = Gate("a", "run/rescued", ">=", 0.01, over="mean")
    six = {1: 0.0095, 2: 0.0125, 3: 0.0128, 4: 0.0130, 5: 0.0127, 6: 0.0126}  # seed 1 below
    assert GateResult(gate, six).holds is True
    assert GateResult(replace(gate, over="every_seed"), six).holds is False
    wide = {1: 0.002, 2: 0.012, 3: 0.022, 4: 0.030, 5: 0.004, 6: 0.016}  # mean 0.0143, wide CI
    assert GateResult(gate, wide).holds is False
    assert GateResult(gate, wide).mean == pytest.approx(0.086 / 6)  # the centre the interval is on
    assert GateResult(gate, {1: 0.5}).holds is False  # one seed: no interval, not established
    assert math.isnan(GateResult(gate, {}).mean)
    upper = Gate("a", "run/clipfrac", "<=", 0.10, over="mean")  # the upper end must be below
    assert GateResult(upper, {1: 0.08, 2: 0.09, 3: 0.085}).holds is True
    assert GateResult(upper, {1: 0.05, 2: 0.09, 3: 0.12}).holds is False
    # The bound is the t interval's end: mean 0.085, sd 0.005, n 3.
    assert upper.bound({1: 0.08, 2: 0.09, 3: 0.085}) == pytest.approx(
        0.085 + stats.t.ppf(0.975, 2) * 0.005 / 3**0.5
    )


def test_headline_counts_split_paper_summary_and_precondition_claims(dirs):
    results, tables = dirs
    claimed = CLAIMED.replace(
        '    source: "suite precondition"\n', '    source: "suite precondition"\n    role: precondition\n'
    )
    claimed = claimed.replace("metrics: [train/toy_share]", "metrics: [train/toy_share, run/rescued]")
    (tables / SLUG / "claimed.yaml").write_text(claimed + GATED)
    md = write_tables(SLUG, results, tables).path.read_text()
    assert (
        "6 claims: 4 paper claims (3 reproduced, 1 not run); 1 summary claim (1 reproduced); "
        "1 precondition (1 reproduced)." in md
    )
    assert "**trains** *(precondition)*" in md and "**gated** *(summary)*" in md


def test_underpowered_vs_inconclusive(dirs):
    results, tables = dirs
    # other − base: +0.01 ± 0.03 over 3 seeds: the CI straddles 0 and the MDE (~0.1) exceeds 0.02.
    for seed, acc in ((1, 0.64), (2, 0.61), (3, 0.58)):
        write_record(results, make_record("other", seed, acc))
    report = write_tables(SLUG, results, tables)
    row = claim_row(report.path.read_text(), "other_helps")
    assert "**underpowered**" in row and "seeds for 0.020:" in row
    # 30 seeds, differences of mean 0.01 and sd 0.03: MDE 0.016 <= 0.02, CI [-0.001, +0.021]
    # still straddles 0 and 0.02: a powered design that did not decide, inconclusive.
    z = np.random.default_rng(0).standard_normal(30)
    diffs = 0.01 + 0.03 * (z - z.mean()) / z.std(ddof=1)
    for seed, d in enumerate(diffs, start=1):
        write_record(results, make_record("base", seed, 0.6))
        write_record(results, make_record("other", seed, 0.6 + d))
    report = write_tables(SLUG, results, tables)
    result = {r.claim.id: r for r in report.results}["other_helps"]
    assert result.power.mde == pytest.approx(0.016, abs=5e-4)
    assert result.estimate.ci[0] < 0 and result.estimate.ci[1] > 0.02
    assert result.verdict == "inconclusive"


def with_base(rec: dict, base: int, sha: str) -> dict:
    rec["config"] = {"model": {"kind": "micro", "base": base}}
    rec["provenance"] |= {"base_sha256": sha, "root_base_sha256": sha}
    return rec


def test_pairs_from_different_base_models_are_refused(dirs):
    results, tables = dirs
    for arm in ("base", "base_new", "base_push"):
        for seed in (1, 2, 3):
            set_field(results, arm, seed, lambda r, s=seed: with_base(r, (s - 1) % 3, f"{s:x}" * 64))
    md = write_tables(SLUG, results, tables).path.read_text()
    # Three bases: the effect per base and the spread between bases are shown.
    assert (
        "by base: base 0: +0.100 (n=1), base 1: +0.090 (n=1), base 2: +0.110 (n=1); sd between bases 0.010"
        in (claim_row(md, "improves"))
    )
    assert "base 0 sha256 111111111111… (3 runs)" in md
    set_field(results, "base_new", 2, lambda r: with_base(r, 1, "e" * 64))
    with pytest.raises(
        ConfigError, match=r"improves: cannot pair base_new seed 2 \(base sha256 eeeeeeeeeeee\) "
    ):
        write_tables(SLUG, results, tables)


def test_old_records_say_the_base_checksum_was_not_recorded(dirs):
    results, tables = dirs
    md = write_tables(SLUG, results, tables).path.read_text()
    assert "base checksum: not recorded (9 runs, made before records carried it)" in md


def test_require_head_fails_on_records_from_another_commit(dirs):
    results, tables = dirs
    with pytest.raises(
        ConfigError,
        match=r"--require-head: records not produced by the code at HEAD 0123456789 .*: abcdef1234: 9",
    ):
        write_tables(SLUG, results, tables, require_head="0123456789" * 4)
    assert not (tables / SLUG / "comparison.md").exists()
    # A record of another commit counts as HEAD's when its code fingerprint is the code here
    # (that commit changed no code that computes runs); another fingerprint does not.
    here = code_sha256(find_root())
    for arm, seed in [(a, s) for a in ("base", "base_new", "base_push") for s in (1, 2, 3)]:
        set_field(results, arm, seed, lambda r: r["provenance"].update({"code_sha256": here}))
    set_field(results, "base", 1, lambda r: r["provenance"].update({"code_sha256": "f" * 64}))
    with pytest.raises(ConfigError, match=r"at HEAD 0123456789 .*: abcdef1234: 1 \(micro/base/seed1\)"):
        write_tables(SLUG, results, tables, require_head="0123456789" * 4)
    set_field(results, "base", 1, lambda r: r["provenance"].update({"code_sha256": here}))
    write_tables(SLUG, results, tables, require_head="0123456789" * 4)
    report = write_tables(SLUG, results, tables, require_head="abcdef1234567890")
    assert report.written
    # Only the scales asked for are checked.
    write_record(results, make_record("base", 1, 0.5, scale="small"))
    set_field(results, "base", 1, lambda r: None)
    write_tables(SLUG, results, tables, require_head="abcdef1234567890", head_scales=["micro"])


def test_records_from_several_commits_are_listed(dirs):
    results, tables = dirs
    set_field(results, "base", 1, lambda r: r["provenance"].update({"git_sha": "1111111111aaaa"}))
    md = write_tables(SLUG, results, tables).path.read_text()
    assert "git 1111111111 (1 runs), abcdef1234 (8 runs) (mixed: records from several commits)" in md


def test_tables_say_which_tier_made_them(dirs):
    results, tables = dirs
    md = write_tables(SLUG, results, tables, suite_seeds=[1, 2, 3]).path.read_text()
    assert "Tier: quick tier: the suite's seeds 1, 2, 3." in md
    for seed in (4, 5):
        write_record(results, make_record("base", seed, 0.6))
        write_record(results, make_record("base_new", seed, 0.7))
    md = write_tables(SLUG, results, tables, suite_seeds=[1, 2, 3]).path.read_text()
    assert (
        "Tier: power tier: up to 5 seeds per arm (seeds 1, 2, 3, 4, 5; the quick tier's are [1, 2, 3])." in md
    )


def test_tiny_records_are_never_read(dirs):
    results, tables = dirs
    # A smoke run written where published records live (by an older version, or by hand).
    write_record(results, make_record("base", 1, 0.99, scale="tiny"))
    (results / ".smoke" / SLUG / "tiny" / "base").mkdir(parents=True)
    (results / ".smoke" / SLUG / "tiny" / "base" / "seed1.json").write_text("{not even json")
    report = write_tables(SLUG, results, tables)
    md = report.path.read_text()
    assert report.runs == 9 and "`tiny`" not in md and "| tiny |" not in md


def items_text(bits) -> str:
    from repro.records import encode_items

    return encode_items(np.array(bits, dtype=bool))


def test_item_seed_bootstrap_and_mean_of_last_k(dirs):
    results, tables = dirs
    rng = np.random.default_rng(0)
    for arm, p in (("base", 0.6), ("base_new", 0.7)):
        for seed in (1, 2, 3):
            evals = [[step, items_text(rng.random(200) < p)] for step in (0, 10, 20)]
            set_field(
                results,
                arm,
                seed,
                lambda r, e=evals: r.update({"schema": 2, "items": {"eval/id/greedy_acc": e}}),
            )
    claimed = CLAIMED.replace(
        "direction: 1, min_effect: 0.02}\n  - id: trains",
        "direction: 1, min_effect: 0.02, ci: bootstrap, score: mean_last_k, k: 2}\n  - id: trains",
    )
    (tables / SLUG / "claimed.yaml").write_text(claimed)
    report = write_tables(SLUG, results, tables)
    r = {x.claim.id: x for x in report.results}["improves"]
    assert r.ci_method == "item × seed bootstrap"
    row = claim_row(report.path.read_text(), "improves")
    assert "<sub>item × seed bootstrap</sub>" in row and "(mean of last 2)" in row
    # mean of the last 2 curve points per seed, paired: the curve is linspace(0.3, final, 5).
    curve = lambda final: np.linspace(0.3, final, 5)  # noqa: E731
    expected = np.mean(
        [curve(n)[-2:].mean() - curve(b)[-2:].mean() for b, n in ((0.60, 0.70), (0.62, 0.71), (0.58, 0.69))]
    )
    assert r.estimate.mean == pytest.approx(expected)
    lo, hi = r.estimate.ci
    assert lo < 0.1 < hi and hi - lo > 0.02  # 200 items per eval: item noise widens the interval
    # Records without items fall back to t, and say so.
    set_field(results, "base", 1, lambda r: r.pop("items"))
    r = {x.claim.id: x for x in write_tables(SLUG, results, tables).results}["improves"]
    assert r.ci_method == "t" and any("bootstrap asked for, t used" in n for n in r.notes)


def test_a_single_seed_row_shows_the_interval_of_its_eval_items_alone(dirs):
    """One seed has no CI; where its records keep per-item results the row says how far the
    estimate moves when only the eval items are resampled (a note: the verdict stays inconclusive)."""
    results, tables = dirs
    for path in (results / SLUG / "micro").glob("*/seed[23].json"):
        path.unlink()
    rng = np.random.default_rng(0)
    for arm, p in (("base", 0.6), ("base_new", 0.7)):
        evals = [[step, items_text(rng.random(200) < p)] for step in (0, 10, 20)]
        set_field(
            results, arm, 1, lambda r, e=evals: r.update({"schema": 2, "items": {"eval/id/greedy_acc": e}})
        )
    report = write_tables(SLUG, results, tables, force=True)
    r = {x.claim.id: x for x in report.results}["improves"]
    assert r.verdict == "inconclusive" and r.estimate.ci is None
    note = next(n for n in r.notes if n.startswith("eval items alone"))
    lo, hi = (float(x) for x in re.findall(r"[-+]\d\.\d+", note))
    a, b = (
        item_values(
            json.loads((results / SLUG / "micro" / arm / "seed1.json").read_text()),
            "eval/id/greedy_acc",
            "final",
        )
        for arm in ("base_new", "base")
    )
    assert (lo, hi) == pytest.approx(item_bootstrap(a - b), abs=5e-4) and lo < (a - b).mean() < hi
    # Without items: no interval, the single-seed label only.
    set_field(results, "base", 1, lambda r: r.pop("items"))
    r = {x.claim.id: x for x in write_tables(SLUG, results, tables, force=True).results}["improves"]
    assert not any(n.startswith("eval items alone") for n in r.notes)
    assert any(n.startswith("single-seed row (n=1)") for n in r.notes)


def test_effects_figure_colours_the_new_verdicts_and_leaves_out_rows_without_an_effect(dirs, monkeypatch):
    from matplotlib.colors import to_rgba

    from repro.tables import figures

    results, tables = dirs
    claimed = CLAIMED.replace("metrics: [train/toy_share]", "metrics: [train/toy_share, run/rescued]")
    # A paper effect in the metric's units for `improves`; a failing gate for `gated`.
    claimed = claimed.replace(
        "direction: 1, min_effect: 0.02}\n  - id: trains",
        "direction: 1, min_effect: 0.02,\n              range: [0.05, 0.08]}\n  - id: trains",
        1,
    )
    (tables / SLUG / "claimed.yaml").write_text(claimed + GATED)
    for seed in (1, 2, 3):
        set_field(results, "base_new", seed, lambda r: r["final"].update({"run/rescued": 0.0}))
    for seed, acc in ((1, 0.64), (2, 0.61), (3, 0.58)):
        write_record(results, make_record("other", seed, acc))
    captured = {}

    def keep(fig, path):
        captured[path.name] = fig
        return path

    monkeypatch.setattr(figures, "_save", keep)
    report = write_tables(SLUG, results, tables)
    verdicts = {r.claim.id: r.verdict for r in report.results}
    assert verdicts["gated"] == "untestable at this scale" and verdicts["other_helps"] == "underpowered"
    ax = captured["fig_micro_effects.png"].axes[0]
    labels = [t.get_text().split("\n")[0] for t in ax.get_yticklabels()]
    # Effect and change claims with an estimate, top to bottom; the value claim `share` is not an effect.
    assert labels == ["improves", "trains", "push_no_help", "other_helps", "gated"]
    bars = [p for p in ax.patches if p.get_height() == pytest.approx(0.6)]
    colour = {lab: p.get_facecolor() for lab, p in zip(labels[::-1], sorted(bars, key=lambda p: p.get_y()))}
    assert colour["gated"][:3] == to_rgba(figures.VERDICT_COLOURS["untestable at this scale"])[:3]
    assert colour["other_helps"][:3] == to_rgba(figures.VERDICT_COLOURS["underpowered"])[:3]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "paper's effect (claimed range)" in legend and "MDE at 80% power" in legend
    # No claim with an effect size: no figure at all, rather than empty axes.
    no_runs = [r for r in report.results if r.claim.id == "other_helps"]
    no_runs = [type(no_runs[0])(no_runs[0].claim, "micro", "not run", None)]
    assert figures.effects_figure(no_runs, "micro", tables / "x.png") is None


def test_the_power_tier_adds_seeds_only_where_a_gate_over_the_mean_may_still_pass():
    """repro.launch.power_plan: a row untestable by a gate over the mean whose mean meets it gets
    the seeds its effect needs (they narrow the gate's interval too); a failed gate on every seed,
    or a mean on the wrong side, asks for nothing (seeds would not decide it)."""
    from repro.launch import _gates_may_pass

    mean_gate = Gate("a", "run/rescued", ">=", 0.01, over="mean")
    wide = GateResult(mean_gate, {1: 0.02, 2: 0.03, 3: 0.04})  # mean 0.03 >= 0.01, CI end 0.005
    low = GateResult(mean_gate, {1: 0.005, 2: 0.008, 3: 0.012})  # mean 0.0083 < 0.01
    each = GateResult(replace(mean_gate, over="every_seed"), {1: 0.005, 2: 0.03, 3: 0.04})
    met = GateResult(mean_gate, {1: 0.029, 2: 0.030, 3: 0.031})
    assert wide.holds is False and _gates_may_pass((wide, met))
    assert not _gates_may_pass((wide, low))
    assert not _gates_may_pass((wide, each))
    assert not _gates_may_pass((met,))  # nothing failed: not an untestable row
