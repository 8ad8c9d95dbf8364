"""Fixtures for the runner tests: a throwaway repro root holding a two-arm paper package `demo`.

`demo` trains the test-only trainer `_test_quadratic` (fake_trainer.py, copied into the package so
parallel joblib workers register it too). Nothing here touches the network or the real checkout's
results, MLflow store or tables.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import fake_trainer  # noqa: F401  (registers _test_quadratic in this process)

HERE = Path(__file__).resolve().parent

ARM_A = """\
# @package _global_
trainer:
  name: _test_quadratic
  steps: 5
  lr: 0.1
"""
ARM_B = """\
# @package _global_
defaults:
  - /experiment/demo/a
  - _self_
trainer:
  lr: 0.3
"""
SUITE = "arms: [a, b]\nseeds: [1, 2]\njobs: 2\n"
CLAIMED = """\
paper: "Demo paper (Test authors)"
arxiv: "0000.00000"
arms: [a, b]
metrics: [eval/score]
claims:
  - id: b_lowers_loss
    text: A larger step size lowers the final loss.
    claimed: "lower loss"
    source: "[test]"
    measure: {kind: effect, metric: train/loss, treatment: b, control: a, direction: -1, min_effect: 0.0}
"""


@pytest.fixture(scope="session", autouse=True)
def _offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No network, no telemetry, caches in a temp dir."""
    hf_home = tmp_path_factory.mktemp("hf_home")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HOME": str(hf_home),
        }.items():
            mp.setenv(key, value)
        yield


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite store; tests copy it (migrating takes seconds)."""
    from repro import tracking

    db = tmp_path_factory.mktemp("mlflow") / "template.db"
    tracking.ensure_store(f"sqlite:///{db}")
    return db


@pytest.fixture
def repro_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_template: Path) -> Path:
    """A repro root with experiments/demo/{a,b}.yaml, suite.yaml and paper_tables/demo/claimed.yaml,
    its own MLflow store, and the environment the CLI reads pointed at it."""
    root = tmp_path / "root"
    demo = root / "experiments" / "demo"
    demo.mkdir(parents=True)
    (demo / "a.yaml").write_text(ARM_A)
    (demo / "b.yaml").write_text(ARM_B)
    (demo / "suite.yaml").write_text(SUITE)
    shutil.copy(HERE / "fake_trainer.py", demo / "quadratic.py")
    tables = root / "paper_tables" / "demo"
    tables.mkdir(parents=True)
    (tables / "claimed.yaml").write_text(CLAIMED)
    shutil.copy(mlflow_template, root / "mlflow.db")

    monkeypatch.setenv("REPRO_ROOT", str(root))
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(root / "results"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    for key in ("REPRO_CACHE_DIR", "REPRO_TABLES_DIR", "REPRO_TEST_NONFINITE"):
        monkeypatch.delenv(key, raising=False)
    return root


def mlflow_runs(root: Path, experiment: str = "demo") -> list:
    """All MLflow runs of `experiment` in the root's store (empty if the experiment does not exist)."""
    from mlflow import MlflowClient

    client = MlflowClient(os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}"))
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


HF_ARM = """\
# @package _global_
defaults:
  - override /model: hf
  - _self_
model:
  path: ${paths.root}/base_model
trainer:
  name: _test_quadratic
  steps: 5
  lr: 0.1
"""


def git(root: Path, *args: str) -> None:
    """Run git in `root` as a throwaway user."""
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True, capture_output=True
    )


@pytest.fixture
def git_root(repro_root: Path) -> Path:
    """The demo root as a git checkout whose arms start from a local base model folder."""
    (repro_root / "experiments/demo/a.yaml").write_text(HF_ARM)
    base = repro_root / "base_model"
    base.mkdir()
    (base / "config.json").write_text("{}")
    (base / "model.safetensors").write_bytes(b"weights v1")
    (repro_root / ".gitignore").write_text("mlflow.db\nresults/\n.cache/\noutputs/\nmultirun/\nbase_model/\n")
    git(repro_root, "init", "-q")
    git(repro_root, "add", ".")
    git(repro_root, "commit", "-q", "-m", "demo")
    return repro_root
