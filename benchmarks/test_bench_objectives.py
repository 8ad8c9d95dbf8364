"""Forward + backward cost of each objective on a 64 x 512 batch (CPU; stats included).

    pytest benchmarks/test_bench_objectives.py -q --benchmark-only

The question it answers: what does NSR cost over hard clipping (target: within 1.15x)?
"""

from __future__ import annotations

import pytest
import torch

from repro.algos import AGGREGATIONS, OBJECTIVES

B, T = 64, 512
# One thread: the dev machines are shared, and intra-op threads on 32k-element ops mostly add noise.
torch.set_num_threads(1)

CASES = [
    ("clip", {"eps_high": 0.28}),  # hard clip (DAPO)
    ("clip_nsr", {"eps_high": 0.28, "spec": "none"}),
    ("clip_nsr", {"eps_high": 0.28, "spec": "perturb"}),
    ("clip_nsr", {"eps_high": 0.28, "spec": "band"}),
    ("clip_nsr", {"eps_high": 0.28, "spec": "decay"}),
    ("clip_nsr", {"eps_high": 0.28, "spec": "push_only"}),
    ("gspo", {}),
    ("gspo_nsr", {"spec": "perturb"}),
]


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    old_logp = -3 * torch.rand(B, T, generator=gen)  # (B, T)
    # log-ratio spread 0.2: ~15% of tokens past eps_high/eps_low, as after a few PPO mini-batches.
    logp = (old_logp + 0.2 * torch.randn(B, T, generator=gen)).requires_grad_()  # (B, T)
    adv = torch.randn(B, generator=gen)  # (B,)
    length = torch.randint(T // 4, T + 1, (B,), generator=gen)  # (B,)
    mask = torch.arange(T)[None, :] < length[:, None]  # (B, T)
    return logp, old_logp, adv, mask


@pytest.mark.parametrize(("name", "kw"), CASES, ids=[f"{n}-{kw.get('spec', 'hard')}" for n, kw in CASES])
def test_objective_forward_backward(benchmark, name, kw):
    logp, old_logp, adv, mask = _batch()
    gen = torch.Generator().manual_seed(0)
    fn = OBJECTIVES[name]

    def step() -> None:
        logp.grad = None
        loss_mat, _ = fn(logp, old_logp, adv, mask, generator=gen, **kw)
        AGGREGATIONS["token_mean"](loss_mat, mask).backward()

    benchmark.group = "objective fwd+bwd 64x512"
    benchmark(step)
    assert logp.grad is not None and torch.isfinite(logp.grad).all()
