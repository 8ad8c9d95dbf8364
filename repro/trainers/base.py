"""What every trainer provides to the runner, and what the runner hands every trainer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from omegaconf import DictConfig

from repro.registry import Registry


class Logger(Protocol):
    """Per-step metric sink (MLflow + the committed run record) and progress display.

    log(metrics, step)                          metric names use `/` namespaces
    log.progress(step, total, reward=0.41)      where the run is; the logger decides how and how
                                                often to show it (repro.tracking.Run)
    """

    def __call__(self, metrics: dict[str, float], step: int) -> None: ...

    def progress(self, step: int, total: int, **fields: float) -> None: ...


@dataclass(frozen=True)
class TrainerSpec:
    """`train(cfg, log)` runs and returns the final summary metrics (flat dict of floats). The
    config arrives validated (repro.config: the trainer's schema in repro.config.trainer_schemas,
    registered under the same name); `train` itself does not validate. `needs_base`: the runner
    builds the base model `cfg.model` (micro pretraining, GGUF conversion) before `train`, timed
    apart from the run's own time; False for a trainer that never loads it."""

    train: Callable[[DictConfig, Logger], dict[str, Any]]
    needs_base: bool = True


TRAINERS = Registry("trainer")
