"""Stage 3 of the policy-gradient step: per-token importance weights against the sampler.

    w, stats = IS_WEIGHTS[name](logp.detach(), sampler_logp, mask, **kw)  # w: (B, T)
    loss = AGGREGATIONS[agg](loss_mat * w, mask)

The rollout engine (sampler) and the learner can disagree on log-probs (vLLM vs training
kernels, or a different model altogether); functions here correct for that with one multiply.
Truncated / filtered IS variants register here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from repro.registry import Registry

IS_WEIGHTS = Registry("is_weight")


@IS_WEIGHTS.register("none")
def none(logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """No correction: weight 1 on every position, padding included (loss_mat is already 0 there)."""
    return torch.ones_like(logp), {}  # (B, T)


@IS_WEIGHTS.register("tis")
def tis(
    logp: Tensor, sampler_logp: Tensor, mask: Tensor, *, cap: float = 2.0
) -> tuple[Tensor, dict[str, Tensor]]:
    """Truncated IS against the sampler: w_t = min(pi_learner(y_t) / pi_sampler(y_t), cap), no gradient.

    Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training"
    (vLLM sampler vs FSDP learner; their recipe caps at C = 2, the default here). `logp` is the
    learner's log-prob at the sampling temperature, detached; w = 1 at padding.
    """
    if not cap > 0:
        raise ValueError(f"is_weight.kw.cap must be > 0, got {cap}")
    log_w = torch.where(mask, logp - sampler_logp, 0.0)  # (B, T)
    w = torch.where(mask, log_w.exp().clamp(max=cap), 1.0).detach()  # (B, T)
    n = mask.sum().clamp(min=1)
    stats = {
        "w_mean": w.where(mask, 0.0).sum() / n,
        "truncated_frac": ((log_w.exp() > cap) & mask).sum() / n,
    }
    return w, stats
