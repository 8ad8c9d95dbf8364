"""Slow, obvious references for the label-free rewards, GDPO and the covariance objectives.

The KL-Cov and Clip-Cov references transcribe verl's `compute_policy_loss_kl_cov` /
`compute_policy_loss_clip_cov` (verl/trainer/ppo/core_algos.py, 0.4 to 0.9.x, same bodies) line by
line on (B, T) token advantages, with verl's masked_mean (sum / (count + 1e-8)) and its aggregation
`token-mean`; only the random permutation of Clip-Cov takes a generator (verl: torch's global one).
"""

from __future__ import annotations

import math
from collections import Counter

import torch
from torch import Tensor

# ------------------------------------------------------------------------------------------
# Votes and self-certainty
# ------------------------------------------------------------------------------------------


def soft_vote(answers: list[str | None], group: list[int]) -> list[float]:
    out = []
    for a, g in zip(answers, group):
        mates = [b for b, h in zip(answers, group) if h == g and b is not None]
        out.append(0.0 if a is None or not mates else sum(b == a for b in mates) / len(mates))
    return out


def majority_vote(answers: list[str | None], group: list[int]) -> list[float]:
    out = []
    for a, g in zip(answers, group):
        mates = [b for b, h in zip(answers, group) if h == g and b is not None]
        winner = Counter(mates).most_common(1)[0][0] if mates else None
        out.append(1.0 if a is not None and a == winner else 0.0)
    return out


def self_certainty(logits: Tensor, mask: Tensor) -> list[float]:
    """Per sequence: mean over valid tokens of KL(U || p) = sum_j (1/V) log((1/V) / p_j)."""
    B, T, V = logits.shape
    out = []
    for b in range(B):
        kls = []
        for t in range(T):
            if not mask[b, t]:
                continue
            z = [float(x) for x in logits[b, t]]
            m = max(z)
            lse = m + math.log(sum(math.exp(x - m) for x in z))
            kls.append(sum((1 / V) * (math.log(1 / V) - (x - lse)) for x in z))
        out.append(sum(kls) / len(kls) if kls else 0.0)
    return out


# ------------------------------------------------------------------------------------------
# Several reward channels
# ------------------------------------------------------------------------------------------


def zscore(values: list[float], group: list[int], eps: float) -> list[float]:
    out = [0.0] * len(values)
    for g in set(group):
        idx = [i for i, h in enumerate(group) if h == g]
        vals = [values[i] for i in idx]
        if max(vals) == min(vals):
            continue
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        for i in idx:
            out[i] = (values[i] - mean) / (std + eps)
    return out


def gdpo(rewards: Tensor, group: list[int], weights: list[float], eps: float) -> list[float]:
    B, K = rewards.shape
    cols = [zscore([float(rewards[i, k]) for i in range(B)], group, eps) for k in range(K)]
    return [sum(weights[k] * cols[k][i] for k in range(K)) for i in range(B)]


# ------------------------------------------------------------------------------------------
# verl's covariance losses, transcribed
# ------------------------------------------------------------------------------------------


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / (mask.sum() + 1e-8)


def _token_mean(loss_mat: Tensor, mask: Tensor) -> Tensor:
    return _masked_mean(loss_mat, mask)


def verl_kl_cov(old_log_prob, log_prob, advantages, response_mask, kl_cov_ratio, ppo_kl_coef):
    negative_approx_kl = log_prob - old_log_prob
    abs_kl = negative_approx_kl.abs()
    ratio = torch.exp(negative_approx_kl)
    pg_losses1 = -advantages * ratio
    pg_losses_kl = -advantages * ratio + ppo_kl_coef * abs_kl
    pg_losses = pg_losses1
    all_valid = response_mask > 0
    all_valid_idx = torch.nonzero(all_valid.reshape(-1), as_tuple=True)[0]
    all_valid_adv = advantages[all_valid].detach().reshape(-1).cpu()
    all_valid_logp = log_prob[all_valid].detach().reshape(-1).cpu()
    k = min(kl_cov_ratio, len(all_valid_adv))
    if k != 0:
        cov_lst_all = (all_valid_adv - all_valid_adv.mean()) * (all_valid_logp - all_valid_logp.mean())
        k_percent_nums = max(1, int(len(cov_lst_all) * kl_cov_ratio))
        large_cov_idxs = torch.topk(cov_lst_all, k_percent_nums, largest=True).indices
        if len(large_cov_idxs) != 0:
            large_cov_idxs = all_valid_idx[large_cov_idxs]
            rows, cols = large_cov_idxs // advantages.shape[1], large_cov_idxs % advantages.shape[1]
            pg_losses[rows, cols] = pg_losses_kl[rows, cols]
    return _token_mean(pg_losses, response_mask)


def verl_clip_cov(
    old_log_prob, log_prob, advantages, response_mask, clip_cov_ratio, lb, ub, eps_low, eps_high, gen
):
    negative_approx_kl = log_prob - old_log_prob
    ratio = torch.exp(negative_approx_kl)
    pg_losses1 = -advantages * ratio
    corr = torch.ones_like(advantages)
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    clip_by_origin = (pg_losses2 > pg_losses1) & (response_mask > 0)
    cov_all = (advantages - _masked_mean(advantages, response_mask)) * (
        log_prob - _masked_mean(log_prob.detach(), response_mask)
    )
    cov_all[response_mask == 0] = -torch.inf
    cov_all[clip_by_origin] = -torch.inf
    clip_num = max(int(clip_cov_ratio * response_mask.sum().item()), 1)
    top_k_idx = (cov_all < ub) & (cov_all > lb) & (response_mask > 0)
    top_k_idx = torch.nonzero(top_k_idx)
    if len(top_k_idx) > 0:
        perm = torch.randperm(len(top_k_idx), generator=gen)
        top_k_idx = top_k_idx[perm[: min(clip_num, len(top_k_idx))]]
    else:
        top_k_idx = torch.empty((0, 2), dtype=torch.long)
    corr[top_k_idx[:, 0], top_k_idx[:, 1]] = 0
    pg_losses = torch.maximum(pg_losses1, pg_losses2) * corr
    return _token_mean(pg_losses, response_mask)
