"""Shared by tests that compose real configs and train in-process (no subprocess, no MLflow)."""

from __future__ import annotations

from pathlib import Path

from repro import cli, runner
from repro.trainers import TRAINERS

ROOT = Path(__file__).resolve().parents[1]


def compose(*overrides: str):
    """The job config `repro run <overrides>` would build, with the experiment group resolved."""
    search_dir = cli.prepare_environment(ROOT)
    with cli.hydra_app() as hydra:
        return cli.compose(hydra, cli.with_searchpath(list(overrides), search_dir))


def validate(cfg) -> None:
    """The configured trainer's checks, after importing the paper's registered functions (as every
    `repro run` job does)."""
    runner.import_paper_modules(ROOT, cfg.get("paper"))
    TRAINERS[cfg.trainer.name].validate(cfg)


def train(cfg):
    """Run the configured trainer; returns (final metrics, {metric: [(step, value), ...]}).
    Imports the paper's registered functions first, as every `repro run` job does."""
    runner.import_paper_modules(ROOT, cfg.get("paper"))
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
