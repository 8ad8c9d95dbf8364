"""Costs of collaborative GRPO's additions (CPU, 1 thread): encoding and decoding one peer's rollout
message, and the TIS weight and advantage-or-KL filter on a 64 x 512 batch.

    pytest benchmarks/test_bench_collab.py -q --benchmark-only

The questions: is the message format ever a cost next to generation (seconds per step at micro
scale)? What do the IS weight and filter add to a step?
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repro.algos import IS_FILTERS, IS_WEIGHTS
from repro.trainers.collab_wire import RolloutMessage, decode, encode

torch.set_num_threads(1)
B, T = 64, 512


def message(groups: int, G: int, prompt_len: int, comp_len: int, vocab: int) -> RolloutMessage:
    rng = np.random.default_rng(0)
    S = groups * G
    return RolloutMessage(
        generator="m1",
        step=1,
        policy_version=0,
        group_ids=np.arange(groups),
        prompts=[rng.integers(0, vocab, prompt_len) for _ in range(groups)],
        seq_group=np.repeat(np.arange(groups), G),
        completions=[rng.integers(0, vocab, comp_len) for _ in range(S)],
        logps=[-rng.random(comp_len).astype(np.float32) for _ in range(S)],
        masks=[np.ones(comp_len, bool) for _ in range(S)],
        rewards=rng.random((S, 1)).astype(np.float32),
    )


# One micro peer's step (3 prompts x 12, ~8 tokens) and one paper-scale node's (16 x 12, 300 tokens).
SIZES = {"micro": (3, 12, 25, 8, 130), "paper": (16, 12, 100, 300, 151_936)}


@pytest.mark.parametrize("size", list(SIZES))
def test_encode(benchmark, size):
    msg = message(*SIZES[size])
    benchmark(encode, msg)


@pytest.mark.parametrize("size", list(SIZES))
def test_decode(benchmark, size):
    blob = encode(message(*SIZES[size]))
    benchmark(decode, blob, SIZES[size][-1])


def _batch():
    gen = torch.Generator().manual_seed(0)
    sampler_logp = -3 * torch.rand(B, T, generator=gen)
    logp = sampler_logp + 0.5 * torch.randn(B, T, generator=gen)
    return logp, sampler_logp, torch.randn(B, generator=gen), torch.ones(B, T, dtype=torch.bool)


def test_tis_weight(benchmark):
    logp, sampler_logp, _, mask = _batch()
    benchmark(IS_WEIGHTS["tis"], logp, sampler_logp, mask, cap=2.0)


@pytest.mark.parametrize("kl", ["seq", "token_mean"])
def test_adv_or_kl_filter(benchmark, kl):
    logp, sampler_logp, adv, mask = _batch()
    benchmark(IS_FILTERS["adv_or_kl"], logp, sampler_logp, mask, adv, kl=kl, threshold=50.0)
