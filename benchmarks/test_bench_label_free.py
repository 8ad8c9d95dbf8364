"""Cost of this suite's label-free pieces on CPU (1 thread):

    pytest benchmarks/test_bench_label_free.py -q --benchmark-only

- objective fwd+bwd on 64 x 512: `clip` vs `kl_cov` (original and CIRCA form) vs `clip_cov`
  (what the covariance ranking, a top-k and a randperm cost over hard clipping);
- self-certainty of 112 completions x 24 tokens at the micro vocabulary (~130) and at SmolLM2's
  (49,152), from given logits (the forward pass that produces them is the trainer's);
- GDPO vs GRPO advantages on 1,024 x 2 rewards.
"""

from __future__ import annotations

import pytest
import torch

from repro.algos import ADVANTAGES, AGGREGATIONS, OBJECTIVES
from repro.algos.label_free import sequence_self_certainty

torch.set_num_threads(1)
B, T = 64, 512
OBJ_CASES = [
    ("clip", {}),
    ("kl_cov", {}),
    ("kl_cov", {"kl_cov_ratio": 0.02, "ppo_kl_coef": 0.05, "clip_others": True}),
    ("clip_cov", {}),
]


def _batch():
    gen = torch.Generator().manual_seed(0)
    old = -3 * torch.rand(B, T, generator=gen)
    logp = (old + 0.1 * torch.randn(B, T, generator=gen)).requires_grad_()
    adv = torch.randn(B, generator=gen)
    mask = torch.arange(T)[None, :] < torch.randint(T // 4, T + 1, (B, 1), generator=gen)
    return logp, old, adv, mask


@pytest.mark.parametrize(
    "name,kw",
    OBJ_CASES,
    ids=[f"{n}-{'circa' if kw.get('clip_others') else 'default'}" for n, kw in OBJ_CASES],
)
def test_objective_fwd_bwd(benchmark, name, kw):
    logp, old, adv, mask = _batch()
    gen = torch.Generator().manual_seed(0)

    def step():
        logp.grad = None
        loss_mat, _ = OBJECTIVES[name](logp, old, adv, mask, generator=gen, **kw)
        AGGREGATIONS["token_mean"](loss_mat, mask).backward()

    benchmark(step)


@pytest.mark.parametrize("V", [130, 49152])
def test_self_certainty(benchmark, V):
    gen = torch.Generator().manual_seed(0)
    n = 112 if V < 1000 else 16  # SmolLM2's vocabulary: a 16-row chunk
    logits = torch.randn(n, 24, V, generator=gen)
    mask = torch.ones(n, 24, dtype=torch.bool)
    benchmark(sequence_self_certainty, logits, mask)


@pytest.mark.parametrize("name", ["grpo", "gdpo"])
def test_advantage(benchmark, name):
    gen = torch.Generator().manual_seed(0)
    rewards = torch.rand(1024, 2, generator=gen)
    group = torch.arange(128).repeat_interleave(8)
    benchmark(ADVANTAGES[name], rewards, group, weights=[0.5, 0.5])
