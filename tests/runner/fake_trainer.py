"""A test-only trainer, `_test_quadratic`: gradient descent on ||x||^2 from a seeded start.

The runner tests copy this file into a temporary paper package (`experiments/demo/`), so parallel
joblib workers register it the way they register a paper's own functions. Set
REPRO_TEST_NONFINITE=<arm>-s<seed>@<step>[,...] to make those runs raise NonFiniteError.
"""

from __future__ import annotations

import os

import torch
from omegaconf import DictConfig

from repro.errors import ConfigError, NonFiniteError
from repro.trainers.base import TRAINERS, Logger, TrainerSpec

NAME = "_test_quadratic"


def validate(cfg: DictConfig) -> None:
    steps = cfg.trainer.get("steps")
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"trainer.steps: expected a positive integer, got {steps!r}")
    if not float(cfg.trainer.get("lr", 0.1)) > 0:
        raise ConfigError(f"trainer.lr: must be > 0, got {cfg.trainer.lr!r}")


def _nonfinite_step(cfg: DictConfig) -> int | None:
    for spec in filter(None, os.environ.get("REPRO_TEST_NONFINITE", "").split(",")):
        run, step = spec.split("@")
        if run == f"{cfg.arm}-s{cfg.seed}":
            return int(step)
    return None


def train(cfg: DictConfig, log: Logger) -> dict[str, float]:
    lr = float(cfg.trainer.get("lr", 0.1))
    fail_at = _nonfinite_step(cfg)
    x = torch.randn(4)  # (4,) seeded by the runner
    loss = float("nan")
    for step in range(cfg.trainer.steps):
        loss = float((x**2).sum())
        if step == fail_at:
            raise NonFiniteError(f"loss is nan at step {step}")
        log({"train/loss": loss, "train/grad_norm": float(2 * x.norm())}, step)
        x = x - lr * 2 * x
    return {"train/loss": loss, "eval/score": -loss, "steps": cfg.trainer.steps}


# Guarded: the tests import this module twice under different names (conftest and the demo package).
if NAME not in TRAINERS:
    TRAINERS.register(NAME)(TrainerSpec(validate=validate, train=train))
