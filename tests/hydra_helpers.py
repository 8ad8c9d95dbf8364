"""Shared by tests that compose real configs and train in-process (no subprocess, no MLflow)."""

from __future__ import annotations

from pathlib import Path

from repro import config
from repro.trainers import TRAINERS

ROOT = Path(__file__).resolve().parents[1]


def compose(*overrides: str):
    """The job config `repro run <overrides>` would build, with the experiment group resolved."""
    config.prepare_environment(ROOT)
    with config.hydra_app() as hydra:
        return config.compose(hydra, list(overrides))


def train(cfg):
    """Run the configured trainer; returns (final metrics, {metric: [(step, value), ...]})."""
    curves: dict[str, list[tuple[int, float]]] = {}

    def log(metrics, step):
        for k, v in metrics.items():
            curves.setdefault(k, []).append((step, v))

    final = TRAINERS[cfg.trainer.name].train(cfg, log)
    return final, curves


def train_chain(cfg, overrides):
    """`train`, after training (in-process, untracked) any upstream stage whose output is missing:
    what repro.pipeline does for `repro run`, minus MLflow and run records."""
    from repro import pipeline

    stages = pipeline.plan(cfg, overrides)
    for st in stages:
        if not st.done:
            train_chain(st.cfg, list(st.overrides))
    return train(pipeline.apply(cfg, stages))
