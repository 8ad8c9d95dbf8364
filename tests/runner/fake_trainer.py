"""A test-only trainer, `_test_quadratic`: gradient descent on ||x||^2 from a seeded start.

The runner tests copy this file into a temporary paper package (`experiments/demo/`), so parallel
joblib workers register it the way they register a paper's own functions. Set
REPRO_TEST_NONFINITE=<arm>-s<seed>@<step>[,...] to make those runs raise NonFiniteError.
Set REPRO_TEST_HOLD=<folder> to make every run, after logging its first step, write
`<folder>/<arm>-s<seed>.ready` and then wait (up to 10 min) for a signal: the signal tests use it
to stop a real child process mid-run.
For chained-stage tests: `trainer.save: true` writes a stand-in checkpoint (config.json holding the
final loss) where repro.pipeline looks for a stage's output, and a `trainer.teacher` dir is read back
into `final["teacher_loss"]`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Literal

import torch
from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, Field

from repro.config.trainer_schemas import TRAINER_CONFIGS
from repro.errors import NonFiniteError
from repro.trainers.base import TRAINERS, Logger, TrainerSpec

NAME = "_test_quadratic"


class QuadraticConfig(BaseModel):
    """Its typed config. The demo arms ride on the default (grpo) trainer file, so keys this
    trainer does not read are ignored rather than rejected."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)
    name: Literal["_test_quadratic"]
    steps: int = Field(ge=1)
    lr: float = Field(0.1, gt=0)
    teacher: str | None = None
    save: bool = False


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
        hold = os.environ.get("REPRO_TEST_HOLD")
        if hold and step == 0:
            Path(hold, f"{cfg.arm}-s{cfg.seed}.ready").write_text(str(os.getpid()))
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:  # a signal's handler raises out of the sleep
                time.sleep(0.05)
        x = x - lr * 2 * x
    final = {"train/loss": loss, "eval/score": -loss, "steps": cfg.trainer.steps}
    teacher = cfg.trainer.get("teacher")
    if teacher:
        final["teacher_loss"] = json.loads((Path(teacher) / "config.json").read_text())["loss"]
    if cfg.trainer.get("save"):
        from repro.provenance import checkpoint_dir

        out = checkpoint_dir(cfg)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"loss": loss}))
    return final


# Guarded: the tests import this module twice under different names (conftest and the demo package).
if NAME not in TRAINERS:
    TRAINERS.register(NAME)(TrainerSpec(train=train, needs_base=False))
    TRAINER_CONFIGS.register(NAME)(QuadraticConfig)
