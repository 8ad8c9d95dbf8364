"""Forward + backward cost of the clipped objective on a 64 x 512 batch (CPU; stats included), at
both levels, with each rescue rule of experiments/clipping_bottleneck/nsr.py.

    pytest benchmarks/test_bench_objectives.py -q --benchmark-only

The question it answers: what does a rescue rule (NSR) cost over hard clipping (target: within 1.15x)?
"""

from __future__ import annotations

import pytest
import torch

import experiments.clipping_bottleneck.nsr  # noqa: F401  (registers the NSR rescue rules and stats)
from repro.algos import AGGREGATIONS, OBJECTIVES

B, T = 64, 512
# One thread: the dev machines are shared, and intra-op threads on 32k-element ops mostly add noise.
torch.set_num_threads(1)

GSPO = {"level": "sequence", "eps_low": 3e-4, "eps_high": 4e-4}
NEAR_BOUNDARY = {"stats": ["near_boundary"]}  # the paper's arms log it, baselines included
CASES = [
    ("clip", {"eps_high": 0.28}),  # hard clip (DAPO), generic stats only
    ("clip", {"eps_high": 0.28, **NEAR_BOUNDARY}),
    ("clip", {"eps_high": 0.28, "rescue": "perturb", **NEAR_BOUNDARY}),
    ("clip", {"eps_high": 0.28, "rescue": "band", **NEAR_BOUNDARY}),
    ("clip", {"eps_high": 0.28, "rescue": "decay", **NEAR_BOUNDARY}),
    ("clip", {"eps_high": 0.28, "rescue": "push_only", **NEAR_BOUNDARY}),
    ("clip", {**GSPO, **NEAR_BOUNDARY}),
    ("clip", {**GSPO, "rescue": "perturb", **NEAR_BOUNDARY}),
]
IDS = [
    f"{kw.get('level', 'token')}-{kw.get('rescue', 'hard')}{'+nbm' if 'stats' in kw else ''}"
    for _, kw in CASES
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


@pytest.mark.parametrize(("name", "kw"), CASES, ids=IDS)
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
