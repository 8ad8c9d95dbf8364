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


def test_progress_off_a_terminal_prints_a_plain_line_at_most_every_n_seconds(monkeypatch):
    import io

    clock = iter([0.0, 5.0, 12.0, 25.0, 30.0])
    monkeypatch.setattr(tracking.time, "monotonic", lambda: next(clock))
    out = io.StringIO()  # not a TTY
    report = tracking.ProgressReport("dapo-s1", every_s=10.0, stream=out)
    for step in range(1, 6):
        report(step, 5, reward=0.4123, acc=0.37)
    assert out.getvalue().splitlines() == [
        "dapo-s1: step 1/5 reward 0.41 acc 0.37",  # first report: no rate yet
        "dapo-s1: step 3/5 reward 0.41 acc 0.37 (ETA 12 s)",  # 12 s for 2 steps, 2 to go
        "dapo-s1: step 4/5 reward 0.41 acc 0.37 (ETA 8 s)",
        "dapo-s1: step 5/5 reward 0.41 acc 0.37 (ETA 0 s)",  # the last step always shows
    ]
