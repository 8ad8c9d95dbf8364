"""Shared by tests that compose real configs and train in-process (no subprocess, no MLflow)."""

from __future__ import annotations

from pathlib import Path

from repro import config
from repro.trainers import TRAINERS

ROOT = Path(__file__).resolve().parents[1]


def compose(*overrides: str, validate: bool = True):
    """The job config `repro run <overrides>` would build (finalized; validated unless told not to)."""
    config.prepare_environment(ROOT)
    with config.hydra_app() as hydra:
        return config.compose(hydra, list(overrides), validate=validate)


class CurveLogger:
    """The trainers' Logger in tests: keeps {metric: [(step, value), ...]} and shows no progress."""

    def __init__(self) -> None:
        self.curves: dict[str, list[tuple[int, float]]] = {}

    def __call__(self, metrics, step):
        for k, v in metrics.items():
            self.curves.setdefault(k, []).append((step, v))

    def progress(self, step, total, **fields):
        pass


def train(cfg):
    """Run the configured trainer; returns (final metrics, {metric: [(step, value), ...]}).
    Imports the paper's registered functions first, as every `repro run` job does."""
    config.import_paper_modules(ROOT, cfg.get("paper"))
    log = CurveLogger()
    final = TRAINERS[cfg.trainer.name].train(cfg, log)
    return final, log.curves


def train_chain(cfg, overrides):
    """`train`, after training (in-process, untracked) any upstream stage whose output is missing:
    what repro.pipeline does for `repro run`, minus MLflow and run records."""
    from repro import pipeline

    stages = pipeline.plan(cfg, overrides)
    for st in stages:
        if not st.done:
            train_chain(st.cfg, list(st.overrides))
    return train(pipeline.apply(cfg, stages))
