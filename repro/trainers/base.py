"""What every trainer provides to the runner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from omegaconf import DictConfig

from repro.registry import Registry


class Logger(Protocol):
    """Per-step metric sink (MLflow + the committed run record). Metric names use `/` namespaces."""

    def __call__(self, metrics: dict[str, float], step: int) -> None: ...


@dataclass(frozen=True)
class TrainerSpec:
    """`validate(cfg)` raises ConfigError naming the bad key, cheaply, before any compute.
    `train(cfg, log)` runs and returns the final summary metrics (flat dict of floats)."""

    validate: Callable[[DictConfig], None]
    train: Callable[[DictConfig, Logger], dict[str, Any]]


TRAINERS = Registry("trainer")
