"""Several reward channels: per-channel group normalisation (GDPO) and each channel's share of |A|.

    adv = ADVANTAGES["gdpo"](rewards, group, weights=[0.5, 0.5])    # rewards (B, K) -> (B,)
    terms = channel_terms("grpo", rewards, group, **kw)             # (B, K), sum over K = adv
    shares = channel_shares("gdpo", rewards, group, names, **kw)    # {adv_share/<name>: share}

With K channels on different scales, GRPO's z-score of the weighted *sum* lets the channel with
the largest within-group spread dominate the advantage; GDPO z-scores each channel first. Both are
sums of one term per channel, which is what `channel_shares` reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from repro.algos.advantages import ADVANTAGES, _group_centered, grpo
from repro.errors import ConfigError


def _weights(K: int, weights: Sequence[float] | None, dtype, device) -> Tensor:
    if weights is None:
        return torch.full((K,), 1.0 / K, dtype=dtype, device=device)
    w = torch.as_tensor(list(weights), dtype=dtype, device=device).flatten()  # (K,)
    if w.numel() != K:
        raise ConfigError(
            f"advantage.kw.weights must have one entry per reward channel (K={K}), got {w.numel()}"
        )
    return w


@ADVANTAGES.register("gdpo")
def gdpo(
    rewards: Tensor, group: Tensor, *, weights: Sequence[float] | None = None, eps: float = 1e-6
) -> Tensor:
    """Group reward-decoupled normalisation (GDPO, Liu et al. 2026, arXiv 2601.05242; CIRCA's
    combination of its two channels): z-score each channel within its prompt group as GRPO does
    (unbiased std; constant groups give 0), then A = sum_k w_k z_k (default w_k = 1/K; CIRCA 0.5/0.5).
    With K = 1 it equals `grpo`."""
    if rewards.ndim != 2:
        raise ValueError(f"advantage: rewards must be (B, K), got shape {tuple(rewards.shape)}")
    return channel_terms("gdpo", rewards, group, weights=weights, eps=eps).sum(1)  # (B,)


def channel_terms(name: str, rewards: Tensor, group: Tensor, **kw) -> Tensor:
    """Each channel's additive term of the advantage `name` computes, (B, K), summing to it over K.

    gdpo: w_k z_k (its own z-score); grpo: w_k (r_k - mean_g r_k) / (std_g(sum_k w_k r_k) + eps),
    i.e. the channels share the sum's std (Dr. GRPO, `scale_std: false` or `mean_only`: no std).
    Raises KeyError for an advantage with no such decomposition."""
    B, K = rewards.shape
    eps = kw.get("eps", 1e-6)
    w = _weights(K, kw.get("weights"), rewards.dtype, rewards.device)  # (K,)
    if name == "gdpo":
        cols = [grpo(rewards[:, k : k + 1], group, weights=[1.0], eps=eps) for k in range(K)]
        return torch.stack(cols, 1) * w  # (B, K)
    if name in ("grpo", "mean_only"):
        centered = torch.stack([_group_centered(rewards[:, k], group)[0] for k in range(K)], 1) * w  # (B, K)
        if name == "mean_only" or not kw.get("scale_std", True):
            return centered
        # The sum's group std, as `grpo` computes it: one scale per group, shared by the channels.
        centered_sum, gi, count, constant = _group_centered(rewards @ w, group)  # (B,) each
        sq = torch.zeros_like(count).index_add_(0, gi, centered_sum.square())  # (G,)
        std = (sq / (count - 1).clamp(min=1)).sqrt()  # (G,) unbiased
        scale = torch.where(constant, 0.0, 1.0 / (std[gi] + eps))  # (B,)
        return centered * scale[:, None]
    raise KeyError(name)


def channel_shares(name: str, rewards: Tensor, group: Tensor, names: Sequence[str], **kw) -> dict[str, float]:
    """{adv_share/<names[k]>: sum_i |term_ik| / sum_ik |term_ik|}: how much of the advantage's
    magnitude each channel carries (empty for an advantage without a decomposition, or no signal)."""
    try:
        terms = channel_terms(name, rewards, group, **kw).abs().sum(0)  # (K,)
    except KeyError:
        return {}
    total = terms.sum()
    if total <= 0:
        return {}
    return {f"adv_share/{n}": (t / total).item() for n, t in zip(names, terms)}
