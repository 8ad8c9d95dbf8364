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
