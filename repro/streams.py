"""Named random streams of a run: one per purpose (and step), derived from the run seed.

    streams = Streams(cfg.seed)                 # repro.trainers.common.seed_run returns one
    rng = streams.rng("prompts", step, round)   # random.Random
    gen = streams.gen("shuffle", step)          # torch.Generator

Purposes: STREAMS. See `Streams`.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

import numpy as np
import torch

# The purposes a run draws random numbers for, each its own stream (`Streams`).
STREAMS = ("prompts", "rollout", "shuffle", "rescue", "eval", "cuts", "init")


@dataclass(frozen=True)
class Streams:
    """Named random streams derived from the run seed, one per purpose and step, so that two arms
    with the same seed draw the same prompts, rollout noise, mini-batch orders and eval samples
    and differ only where their method differs (an arm that draws rescue noise shifts no other
    stream). Each call returns a fresh generator for (purpose, *keys), e.g. ("shuffle", step):

        rng = streams.rng("prompts", step, round)      # random.Random: prompt sampling
        gen = streams.gen("rollout", step, round)      # torch.Generator: sampling in generate()
        gen = streams.gen("shuffle", step)             # mini-batch order
        gen = streams.gen("rescue", step)              # a stochastic objective's noise
        gen = streams.gen("eval", step)                # sampled eval accuracy
        seed = streams.seed_of("init")                 # new parameters (LoRA adapters)

    Seeds come from numpy's SeedSequence over (run seed, crc32(purpose), *keys): independent
    streams, stable across Python processes and machines."""

    seed: int

    def _seed(self, purpose: str, keys: tuple[int, ...]) -> int:
        if purpose not in STREAMS:
            raise ValueError(f"unknown random stream {purpose!r}; streams: {', '.join(STREAMS)}")
        entropy = [self.seed, zlib.crc32(purpose.encode()), *keys]
        return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)

    def seed_of(self, purpose: str, *keys: int) -> int:
        """The integer seed of (purpose, *keys): for code that draws from torch's global generator
        (e.g. peft's adapter init), run under torch.random.fork_rng with this seed."""
        return self._seed(purpose, keys)

    def gen(self, purpose: str, *keys: int, device: torch.device | str = "cpu") -> torch.Generator:
        """A torch.Generator on `device` (the device of the tensors it will draw: a CUDA model's
        objective noise needs a CUDA generator)."""
        return torch.Generator(device).manual_seed(self._seed(purpose, keys))

    def rng(self, purpose: str, *keys: int) -> random.Random:
        return random.Random(self._seed(purpose, keys))
