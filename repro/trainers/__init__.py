"""Trainers, registered by name in TRAINERS (importing this package registers the built-ins)."""

from repro.trainers import distill, eval_only, grpo, sft  # noqa: F401  (registers the built-in trainers)
from repro.trainers.base import TRAINERS, TrainerSpec

__all__ = ["TRAINERS", "TrainerSpec"]
