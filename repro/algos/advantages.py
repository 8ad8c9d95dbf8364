"""Stage 2 of the policy-gradient step: group-relative advantages, one per sequence.

    adv = ADVANTAGES[name](rewards, group, **kw)  # rewards (B, K), group (B,) -> adv (B,)

`group[i]` is the prompt index of sequence i: ids may be arbitrary, unsorted, and groups may
have different sizes (dynamic sampling drops some). Everything is vectorised with scatter ops.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from repro.errors import ConfigError
from repro.registry import Registry

ADVANTAGES = Registry("advantage")


def _combine(rewards: Tensor, weights: Sequence[float] | Tensor | None) -> Tensor:
    """Weighted sum of the K reward channels: (B, K) -> (B,). Default weights are 1/K each."""
    if rewards.ndim != 2:
        raise ValueError(f"advantage: rewards must be (B, K), got shape {tuple(rewards.shape)}")
    K = rewards.shape[1]
    if weights is None:
        return rewards.mean(dim=1)  # (B,)
    w = torch.as_tensor(weights, dtype=rewards.dtype, device=rewards.device).flatten()  # (K,)
    if w.numel() != K:
        raise ConfigError(
            f"advantage.kw.weights must have one entry per reward channel (K={K}), got {w.numel()}"
        )
    return rewards @ w  # (B,)


def _group_centered(r: Tensor, group: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-sequence r - mean_g, plus group index, group sizes and a per-sequence 'group is constant' flag."""
    # Dense group index 0..G-1 whatever the ids are.
    _, gi = torch.unique(group, return_inverse=True)  # (B,)
    G = int(gi.max()) + 1 if gi.numel() else 0
    count = torch.zeros(G, dtype=r.dtype, device=r.device).index_add_(0, gi, torch.ones_like(r))  # (G,)
    mean = torch.zeros(G, dtype=r.dtype, device=r.device).index_add_(0, gi, r) / count  # (G,)
    hi = torch.zeros(G, dtype=r.dtype, device=r.device).scatter_reduce_(0, gi, r, "amax", include_self=False)
    lo = torch.zeros(G, dtype=r.dtype, device=r.device).scatter_reduce_(0, gi, r, "amin", include_self=False)
    # A float mean of equal values need not equal the value (0.1+0.1+0.1 != 0.3): force exact zeros.
    constant = (hi == lo)[gi]  # (B,)
    centered = torch.where(constant, 0.0, r - mean[gi])  # (B,)
    return centered, gi, count, constant


@ADVANTAGES.register("grpo")
def grpo(
    rewards: Tensor,
    group: Tensor,
    *,
    weights: Sequence[float] | None = None,
    eps: float = 1e-6,
    scale_std: bool = True,
) -> Tensor:
    """GRPO's group z-score (Shao et al. 2024, DeepSeekMath §4.1.2): (r - mean_g) / (std_g + eps).

    r is the weighted sum of the K channels (default 1/K each). std is unbiased (as in TRL);
    groups of one sequence, and groups whose rewards are all equal, get advantage 0 exactly.
    `scale_std=False` leaves r - mean_g (Dr. GRPO, same as `mean_only`).
    """
    if eps < 0:
        raise ConfigError(f"advantage.kw.eps must be >= 0, got {eps}")
    r = _combine(rewards, weights)  # (B,)
    centered, gi, count, constant = _group_centered(r, group)  # (B,)
    if not scale_std:
        return centered
    sq = torch.zeros_like(count).index_add_(0, gi, centered.square())  # (G,)
    std = (sq / (count - 1).clamp(min=1)).sqrt()  # (G,) unbiased
    # `where` keeps constant groups at 0 even with eps=0 (0/0).
    return torch.where(constant, 0.0, centered / (std[gi] + eps))  # (B,)


@ADVANTAGES.register("mean_only")
def mean_only(rewards: Tensor, group: Tensor, *, weights: Sequence[float] | None = None) -> Tensor:
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-like training"): r - mean_g, no std division."""
    r = _combine(rewards, weights)  # (B,)
    centered, _, _, _ = _group_centered(r, group)
    return centered  # (B,)
