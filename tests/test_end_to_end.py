"""run -> MLflow -> run records -> comparison table, through the real CLI on the tiny scale."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from repro import cli

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

    recs = sorted((results / "clipping_bottleneck" / "tiny").glob("*/seed*.json"))
    assert [p.relative_to(results).as_posix() for p in recs] == [
        f"clipping_bottleneck/tiny/{arm}/seed{s}.json" for arm in ("dapo", "dapo_nsr") for s in (1, 2)
    ]
    rec = json.loads(recs[0].read_text())
    assert rec["status"] == "FINISHED" and rec["scale"] == "tiny" and rec["overrides"] == []
    assert rec["curves"]["eval/id/greedy_acc"][0][0] == 0 and "train/reward_mean" in rec["curves"]

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("clipping_bottleneck").experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["arm"] for r in runs} == {"dapo", "dapo_nsr"}
    assert rec["run_id"] in {r.info.run_id for r in runs}

    table = (tables / "clipping_bottleneck" / "comparison.md").read_text()
    assert "<!-- repro:runs=4 -->" in table
    assert "not run" in table  # gspo etc. were not run
    assert rec["run_id"][:8] in table
