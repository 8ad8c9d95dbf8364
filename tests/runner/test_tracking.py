"""MLflow wrapper: retries on a locked SQLite store, param/metric batching, artefact location."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from repro import tracking


def test_flatten():
    assert tracking.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}, "f": None}) == {
        "a.b": 1,
        "a.c.d": [1, 2],
        "e": {},
        "f": None,
    }


def test_retry_backs_off_only_while_locked(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert tracking.retry(flaky) == "ok" and len(calls) == 3

    def broken():
        calls.append(1)
        raise ValueError("bad value")

    calls.clear()
    with pytest.raises(ValueError):
        tracking.retry(broken)
    assert len(calls) == 1


def test_artifact_location_beside_sqlite_file(tmp_path):
    assert tracking.artifact_location(f"sqlite:///{tmp_path}/m.db") == (tmp_path / "mlruns").as_uri()
    assert tracking.artifact_location("http://127.0.0.1:5000") is None


def test_run_batches_params_and_metrics(tmp_path, mlflow_template):
    import shutil

    db = tmp_path / "m.db"
    shutil.copy(mlflow_template, db)
    uri = f"sqlite:///{db}"
    run = tracking.Run(uri, "exp", run_name="a-s1", tags={"paper": "p"}, flush_every=1000)
    params = {f"p{i}": i for i in range(250)} | {"long": "x" * 7000}
    run.log_params(params)
    for step in range(3):
        run({f"m{i}": float(step) for i in range(450)}, step)  # 1350 values: one flush of > 1000
    run.log_final({"score": 2.0, "name": "not a number"})
    run.end("FINISHED")

    client = MlflowClient(uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "a-s1"
    assert len(got.data.params) == 251 and len(got.data.params["long"]) == tracking.MAX_PARAM_VALUE
    assert [m.step for m in client.get_metric_history(run.run_id, "m7")] == [0, 1, 2]
    assert got.data.metrics["final/score"] == 2.0
    assert run.curves["m7"] == [[0, 0.0], [1, 1.0], [2, 2.0]]
