"""Sweeps beyond one process, for real: the Ray launcher on a local Ray instance, and jobs logging
to a real `mlflow server` on 127.0.0.1. Run with `nox -s scale_out` (installs the `ui` and `ray`
extras); skipped where those packages are missing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from runner.conftest import mlflow_runs  # noqa: I001  (tests/ is on sys.path: runner is its package)

from repro.cli import main


def _records(root: Path) -> list[str]:
    return sorted(p.relative_to(root / "results").as_posix() for p in (root / "results").rglob("*.json"))


def test_reproduce_on_a_local_ray_instance(repro_root, capsys):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="needs the ray extra: nox -s scale_out")
    import ray

    try:
        assert main(["reproduce", "demo", "--launcher", "ray", "--seeds", "1", "scale=tiny"]) == 0
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    assert "demo: 2 runs: 2 finished, 0 failed" in out and "on ray" in out
    # The same records and MLflow runs as joblib writes (tests/runner/test_cli.py).
    assert _records(repro_root) == ["demo/tiny/a/seed1.json", "demo/tiny/b/seed1.json"]
    runs = {r.info.run_name: r for r in mlflow_runs(repro_root)}
    assert {n: r.info.status for n, r in runs.items()} == {"a-s1": "FINISHED", "b-s1": "FINISHED"}
    for arm in ("a", "b"):
        rec = json.loads((repro_root / f"results/demo/tiny/{arm}/seed1.json").read_text())
        assert rec["overrides"] == [] and rec["run_id"] == runs[f"{arm}-s1"].info.run_id
        # Each job ran in a Ray worker process, not in this one.
        assert runs[f"{arm}-s1"].data.tags["hostname"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real `mlflow server` on 127.0.0.1 at a free port: SQLite backend, served artefact root."""
    pytest.importorskip("mlflow.server", reason="needs the full mlflow package (ui extra): nox -s scale_out")
    port = _free_port()
    artifacts = tmp_path / "artifacts"
    log = (tmp_path / "server.log").open("w")
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(artifacts), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(1)
        yield uri, artifacts
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_a_sweep_logs_to_an_mlflow_server(repro_root, mlflow_server, monkeypatch, capsys):
    uri, artifacts = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # Two jobs in parallel processes (joblib), both talking HTTP to the one server.
    assert main(["run", "-m", "experiment=demo/a,demo/b", "seed=1", "hydra/launcher=joblib",
                 "hydra.launcher.n_jobs=2"]) == 0  # fmt: skip
    assert "2 runs: 2 finished" in capsys.readouterr().out

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("demo")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert {n: r.info.status for n, r in runs.items()} == {"a-s1": "FINISHED", "b-s1": "FINISHED"}
    for name, run in runs.items():
        rec = json.loads((repro_root / f"results/demo/micro/{name[0]}/seed1.json").read_text())
        assert rec["run_id"] == run.info.run_id
        # Every step's metric arrived, with the record's values.
        history = client.get_metric_history(run.info.run_id, "train/loss")
        want = rec["curves"]["train/loss"]
        assert [m.step for m in history] == [s for s, _ in want]
        assert [m.value for m in history] == pytest.approx([v for _, v in want], rel=1e-5)
        assert {t: run.data.tags[t] for t in ("paper", "arm", "seed")} == {
            "paper": "demo",
            "arm": name[0],
            "seed": "1",
        }
        # Artefacts go through the server into its artefact root.
        assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == [
            "config.yaml",
            "summary.json",
        ]
    assert len(list(artifacts.rglob("summary.json"))) == 2
