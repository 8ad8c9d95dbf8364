"""The tiny GSM8K data root and tiny saved HF model of tests/tasks, for the real-scale ftis tests."""

from tasks.conftest import task_root, tiny_hf_dir  # noqa: F401  (fixtures)
