"""run -> MLflow -> run records -> comparison table, through the real CLI on the tiny scale (whose
records are smoke records: written, never published)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from repro import cli
from repro.records import decode_items

ROOT = Path(__file__).resolve().parents[1]


def test_reproduce_tiny_then_tables(tmp_path, monkeypatch):
    results, tables, db = tmp_path / "results", tmp_path / "paper_tables", tmp_path / "mlflow.db"
    (tables / "clipping_bottleneck").mkdir(parents=True)
    shutil.copy(ROOT / "paper_tables/clipping_bottleneck/claimed.yaml", tables / "clipping_bottleneck")
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(results))
    monkeypatch.setenv("REPRO_TABLES_DIR", str(tables))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")

    rc = cli.main(
        [
            "reproduce",
            "clipping_bottleneck",
            "scale=tiny",
            "--seeds",
            "1,2",
            "--arms",
            "dapo,dapo_nsr",
            "--jobs",
            "1",
        ]
    )
    assert rc == 0

    # Smoke runs (scale=tiny) never publish: their records go to the git-ignored .smoke/ folder.
    assert not (results / "clipping_bottleneck").exists()
    smoke = results / ".smoke"
    recs = sorted((smoke / "clipping_bottleneck" / "tiny").glob("*/seed*.json"))
    assert [p.relative_to(smoke).as_posix() for p in recs] == [
        f"clipping_bottleneck/tiny/{arm}/seed{s}.json" for arm in ("dapo", "dapo_nsr") for s in (1, 2)
    ]
    rec = json.loads(recs[0].read_text())
    assert rec["status"] == "FINISHED" and rec["scale"] == "tiny" and rec["overrides"] == []
    assert rec["curves"]["eval/id/greedy_acc"][0][0] == 0 and "train/reward_mean" in rec["curves"]
    # Per-item results of every eval, and the run-pooled shares.
    steps = [step for step, _ in rec["curves"]["eval/id/greedy_acc"]]
    assert [step for step, _ in rec["items"]["eval/id/greedy_acc"]] == steps
    bits = decode_items(rec["items"]["eval/id/greedy_acc"][-1][1])
    assert bits.size == rec["config"]["trainer"]["eval_n"]
    assert bits.mean() == pytest.approx(rec["final"]["eval/id/greedy_acc"])
    # Shares pooled over the run exist exactly when some step updated (dynamic sampling may keep
    # no group of the barely pretrained tiny model).
    assert ("run/clipfrac" in rec["final"]) == ("train/clipfrac" in rec["curves"])
    # The weights it started from: seed 1 -> base 0, pretrained here (tiny is not a shipped spec).
    prov = rec["provenance"]
    assert rec["config"]["model"]["base"] == 0 and prov["base"]["source"] == "pretrained"
    assert prov["base_sha256"] == prov["root_base_sha256"] and len(prov["base_sha256"]) == 64

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("clipping_bottleneck").experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["arm"] for r in runs} == {"dapo", "dapo_nsr"}
    assert rec["run_id"] in {r.info.run_id for r in runs}
    by_id = {r.info.run_id: r for r in runs}
    assert by_id[rec["run_id"]].data.tags["base_sha256"] == prov["base_sha256"]
    # Seeds 1 and 2 start from bases 0 and 1: two different tiny bases.
    assert len({r.data.tags["base_sha256"] for r in runs}) == 2

    # The table never reads smoke records: it is built, and counts none of them.
    table = (tables / "clipping_bottleneck" / "comparison.md").read_text()
    assert "<!-- repro:runs=0 -->" in table and "`tiny`" not in table
    assert rec["run_id"][:8] not in table
