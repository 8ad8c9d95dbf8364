"""What the states_not_tokens measurements cost (CPU, 1 thread):

    pytest benchmarks/test_bench_states.py -q --benchmark-only

- drift_report on 2 x 320 prefix states (64 prompts x ~5 states, the micro default): run at every
  evaluation of every trainer, so it must stay small next to generation.
- the distillation losses fwd+bwd on a 16 x 24 x V batch at the micro vocabulary and at SmolLM2's
  (49152): one-step KL OPD materialises two full (B, T, V) distributions, continuation CE does not.
"""

from __future__ import annotations

import random

import pytest
import torch

from repro.algos import DISTILL_LOSSES
from repro.metrics import drift_report

torch.set_num_threads(1)
WORDS = "first second third tom gets loses finds gives 1 2 3 4 5 6 7 8 9 + - = is : . ####".split()


def _states(seed: int, n: int = 320) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(8, 30))) for _ in range(n)]


def test_drift_report(benchmark):
    base, post = _states(0), _states(1)
    out = benchmark(drift_report, base, post)
    assert out["drift/mmd2"] > -1.0


@pytest.mark.parametrize("vocab", [130, 49152], ids=["micro_vocab", "smollm2_vocab"])
@pytest.mark.parametrize("loss", ["continuation", "forward_kl", "reverse_kl"])
def test_distill_loss_fwd_bwd(benchmark, loss, vocab):
    gen = torch.Generator().manual_seed(0)
    B, T = 16, 24
    logits = torch.randn(B, T, vocab, generator=gen, requires_grad=True)  # (B, T, V)
    teacher = torch.randn(B, T, vocab, generator=gen)  # (B, T, V)
    mask = torch.ones(B, T, dtype=torch.bool)  # (B, T)
    ids = torch.randint(0, vocab, (B, T), generator=gen)  # (B, T)

    def step():
        if loss == "continuation":
            logp = logits.log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)  # (B, T)
            out = DISTILL_LOSSES[loss](logp, mask)
        else:
            out = DISTILL_LOSSES[loss](logits, teacher, mask)
        out.sum().backward()
        logits.grad = None

    benchmark(step)
