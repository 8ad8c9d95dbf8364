"""Test-wide settings: offline, no telemetry, caches in a temp dir, one deterministic Hypothesis
profile (CI runs the same examples every time)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]

_tmp = tempfile.mkdtemp(prefix="repro-tests-")
for key, value in {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": os.path.join(_tmp, "hf_home"),
    # The tiny pretrained model is shared by every test in the session.
    "REPRO_CACHE_DIR": os.path.join(_tmp, "cache"),
}.items():
    os.environ[key] = value

settings.register_profile("repro", deadline=None, max_examples=50, derandomize=True)
settings.load_profile("repro")


@pytest.fixture
def root_copy(tmp_path, monkeypatch):
    """A repro root holding a copy of the real experiments/ (arm files may be added or broken
    there), with results and the MLflow store of its own."""
    root = tmp_path / "root"
    shutil.copytree(ROOT / "experiments", root / "experiments", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("REPRO_ROOT", str(root))
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(root / "results"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return root
