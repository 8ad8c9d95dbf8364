"""Trainers, registered by name in TRAINERS (importing this package registers the built-ins)."""

from repro.trainers import distill, eval_only, grpo, sft  # noqa: F401  (registers opd, offline_distill, eval_only, grpo, sft)
from repro.trainers.base import TRAINERS, TrainerSpec

__all__ = ["TRAINERS", "TrainerSpec"]
