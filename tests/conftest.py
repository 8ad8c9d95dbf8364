"""Test-wide settings: offline, no telemetry, caches in a temp dir, one deterministic Hypothesis
profile (CI runs the same examples every time)."""

import os
import tempfile

from hypothesis import settings

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
