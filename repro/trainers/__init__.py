"""Trainers, registered by name in TRAINERS (importing this package registers the built-ins):
grpo, collab_grpo, sft, opd, offline_distill, eval_only.
Their config schemas: repro.config.trainer_schemas."""

from repro.trainers import collab, eval_only, grpo, offline_distill, opd, sft  # noqa: F401  (registers the built-in trainers)
from repro.trainers.base import TRAINERS, TrainerSpec

__all__ = ["TRAINERS", "TrainerSpec"]
