"""Trainers, registered by name in TRAINERS (importing this package registers the built-ins)."""

from repro.trainers import grpo  # noqa: F401  (registers "grpo")
from repro.trainers.base import TRAINERS, TrainerSpec

__all__ = ["TRAINERS", "TrainerSpec"]
