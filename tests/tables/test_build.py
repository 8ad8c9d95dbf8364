"""write_tables end to end on synthetic run records (no real runs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from repro.errors import ConfigError
from repro.tables import load_records, write_all, write_tables

SLUG = "toy"
CLAIMED = """
paper: "Toy Paper (Doe et al.)"
arxiv: "2600.00001"
arms: [base, base_new, base_push, other]
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
    measure: {kind: value, metric: train/nbm_abs_sig, arm: base, at: mean, range: [0.28, 0.35]}
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
            "train/nbm_abs_sig": [[s, 0.3] for s in range(1, 21)],
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
    assert "base_new: bb000001, bb000002, bb000003<br>base: aa000001, aa000002, aa000003" in claim_row(
        md, "improves"
    )
    for verdict in ("reproduced", "direction only", "not reproduced", "inconclusive", "not run"):
        assert f"- **{verdict}**:" in md  # footer documents every verdict
    assert re.search(r"\| micro \| other \| — \| not run \|", md)


def test_figures_written_and_embedded(dirs):
    results, tables = dirs
    report = write_tables(SLUG, results, tables)
    names = {p.name for p in report.figures}
    # train/clipfrac and train/nbm_abs_sig_of_clipped are in no record: skipped.
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
    assert "`micro/base_new` seed 4" in md and "NonFiniteError: loss is nan at step 7" in md
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


def test_bad_claim_fails_before_writing(dirs):
    results, tables = dirs
    (tables / SLUG / "claimed.yaml").write_text(CLAIMED.replace("treatment: other", "treatment: othr"))
    with pytest.raises(ConfigError, match=r"claim 'other_helps'.*treatment.*'othr'"):
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
