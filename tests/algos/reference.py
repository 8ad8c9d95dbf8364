"""Slow, obvious reference implementations of repro.algos, one element at a time.

Each reference follows the textbook formula with Python loops (and scalar autograd where a
gradient is compared), so a fast vectorised function can be checked against it with allclose.
Also holds `make_batch`, the random objective inputs the tests share.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# ------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------


def make_batch(
    seed: int, B: int, T: int, spread: float, zero_adv_frac: float = 0.2
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Right-padded random objective inputs: logp (leaf, requires grad), old_logp, adv (B,), mask.

    log-ratios are N(0, spread^2); row lengths are uniform in 0..T, so empty rows occur; a share
    of the advantages is exactly 0.
    """
    gen = torch.Generator().manual_seed(seed)
    old_logp = -3 * torch.rand(B, T, generator=gen)  # (B, T)
    logp = (old_logp + spread * torch.randn(B, T, generator=gen)).requires_grad_()  # (B, T)
    adv = torch.randn(B, generator=gen)  # (B,)
    adv = torch.where(torch.rand(B, generator=gen) < zero_adv_frac, 0.0, adv)
    length = torch.randint(0, T + 1, (B,), generator=gen)  # (B,)
    mask = torch.arange(T)[None, :] < length[:, None]  # (B, T)
    return logp, old_logp, adv, mask


# ------------------------------------------------------------------------------------------
# Advantages
# ------------------------------------------------------------------------------------------


def grpo_advantage(
    rewards: Tensor, group: Tensor, weights: list[float] | None, eps: float, scale_std: bool
) -> Tensor:
    """(r - mean_g) / (std_g + eps) with the unbiased std, one group at a time."""
    B, K = rewards.shape
    w = [1.0 / K] * K if weights is None else list(weights)
    r = [sum(w[k] * float(rewards[i, k]) for k in range(K)) for i in range(B)]
    out = [0.0] * B
    for gid in set(group.tolist()):
        members = [i for i in range(B) if int(group[i]) == gid]
        vals = [r[i] for i in members]
        if max(vals) == min(vals):
            continue  # constant group: advantage 0
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        for i in members:
            out[i] = (r[i] - mean) / (std + eps) if scale_std else r[i] - mean
    return torch.tensor(out, dtype=torch.float64)


# ------------------------------------------------------------------------------------------
# Aggregations
# ------------------------------------------------------------------------------------------


def token_mean(loss_mat: Tensor, mask: Tensor) -> float:
    vals = [float(loss_mat[b, t]) for b in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[b, t]]
    return sum(vals) / len(vals) if vals else 0.0


def seq_mean_token_mean(loss_mat: Tensor, mask: Tensor) -> float:
    seq_means = []
    for b in range(mask.shape[0]):
        vals = [float(loss_mat[b, t]) for t in range(mask.shape[1]) if mask[b, t]]
        if vals:
            seq_means.append(sum(vals) / len(vals))
    return sum(seq_means) / len(seq_means) if seq_means else 0.0


def seq_mean_token_sum_norm(loss_mat: Tensor, mask: Tensor, norm_len: int | None) -> float:
    B, T = mask.shape
    total = sum(float(loss_mat[b, t]) for b in range(B) for t in range(T) if mask[b, t])
    return total / (B * (T if norm_len is None else norm_len))


# ------------------------------------------------------------------------------------------
# Objectives (scalar autograd, so gradients are compared too)
# ------------------------------------------------------------------------------------------


def ppo_clip_loss(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, eps_low: float, eps_high: float):
    """PPO-clip per token, -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), 0 at padding. (B, T)."""
    B, T = mask.shape
    rows = []
    for b in range(B):
        row = []
        for t in range(T):
            if not mask[b, t]:
                row.append(torch.zeros((), dtype=logp.dtype))
                continue
            r = torch.exp(logp[b, t] - old_logp[b, t])
            A = adv[b]
            row.append(-torch.minimum(r * A, torch.clamp(r, 1 - eps_low, 1 + eps_high) * A))
        rows.append(torch.stack(row))
    return torch.stack(rows)


def gspo_sequence_loss(
    logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, eps_low: float, eps_high: float
) -> Tensor:
    """GSPO in its sequence form: 1/#seqs Σ_i -min(s_i A_i, clip(s_i) A_i), s_i = (π/π_old)^(1/|y_i|).

    Sequences with no valid token are skipped. Returns a scalar with its autograd graph.
    """
    B, T = mask.shape
    terms = []
    for b in range(B):
        log_ratios = [logp[b, t] - old_logp[b, t] for t in range(T) if mask[b, t]]
        if not log_ratios:
            continue
        s = torch.exp(torch.stack(log_ratios).sum() / len(log_ratios))
        A = adv[b]
        terms.append(-torch.minimum(s * A, torch.clamp(s, 1 - eps_low, 1 + eps_high) * A))
    return torch.stack(terms).mean() if terms else torch.zeros((), dtype=logp.dtype)


def general_loss(
    ratio_value: Tensor,
    ratio_live: Tensor,
    adv: Tensor,
    mask: Tensor,
    g: Tensor,
    eps_low: float,
    eps_high: float,
) -> Tensor:
    """loss_t = -(g r A + (1 - g) sg(min(r A, clip(r) A))), per token, 0 at padding. (B, T).

    ratio_value: the (B, T) ratio whose value enters (token ratio, or sequence ratio broadcast);
    ratio_live: a (B, T) tensor with that value carrying the gradient.
    """
    B, T = mask.shape
    rows = []
    for b in range(B):
        row = []
        for t in range(T):
            if not mask[b, t]:
                row.append(torch.zeros(()))
                continue
            r, A, gt = float(ratio_value[b, t]), float(adv[b]), float(g[b, t])
            hard = min(r * A, min(max(r, 1 - eps_low), 1 + eps_high) * A)
            row.append(-(gt * ratio_live[b, t] * A + (1 - gt) * hard))
        rows.append(torch.stack(row))
    return torch.stack(rows)


# ------------------------------------------------------------------------------------------
# Hard clipping's gradient weight and the generic clip diagnostics
# ------------------------------------------------------------------------------------------


def zeroed(r: float, A: float, eps_low: float, eps_high: float) -> bool:
    return (A > 0 and r > 1 + eps_high) or (A < 0 and r < 1 - eps_low)


def hard_clip_g(ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float) -> Tensor:
    """Rescue `none`: g = 0 where hard clipping zeroes the gradient, 1 elsewhere, element by element."""
    flat = [
        0.0 if zeroed(r, A, eps_low, eps_high) else 1.0
        for r, A in zip(ratio.reshape(-1).tolist(), adv.reshape(-1).tolist())
    ]
    return torch.tensor(flat, dtype=ratio.dtype).reshape(ratio.shape)


def clip_stats(ratio: Tensor, adv: Tensor, mask: Tensor, eps_low: float, eps_high: float) -> dict[str, float]:
    """Every diagnostic of `repro.algos.objectives.clip_stats`, over the valid tokens one by one.

    ratio is per token (B, T) (at sequence level: the sequence's value on each of its tokens).
    """
    n = dict.fromkeys("valid zeroed hp hn lp ln dev k3".split(), 0.0)
    r_max = 0.0
    B, T = mask.shape
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            r, A = float(ratio[b, t]), float(adv[b])
            n["valid"] += 1
            n["hp"] += r > 1 + eps_high and A > 0
            n["hn"] += r > 1 + eps_high and A < 0
            n["lp"] += r < 1 - eps_low and A > 0
            n["ln"] += r < 1 - eps_low and A < 0
            n["zeroed"] += zeroed(r, A, eps_low, eps_high)
            n["dev"] += abs(r - 1)
            n["k3"] += (r - 1) - math.log(r)
            r_max = max(r_max, r)

    def frac(num: str) -> float:
        return n[num] / n["valid"] if n["valid"] > 0 else math.nan  # nothing valid: undefined

    return {
        "clipfrac": frac("zeroed"),
        "clipfrac_high_pos_adv": frac("hp"),
        "clipfrac_high_neg_adv": frac("hn"),
        "clipfrac_low_pos_adv": frac("lp"),
        "clipfrac_low_neg_adv": frac("ln"),
        "ratio_dev": frac("dev"),
        "kl_k3": frac("k3"),
        "ratio_max": r_max,
    }


# ------------------------------------------------------------------------------------------
# IS weights and filters against the sampler (collaborative / off-policy training)
# ------------------------------------------------------------------------------------------


def tis_weight(logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float) -> Tensor:
    """min(exp(logp - sampler_logp), cap) per valid token, 1 at padding."""
    B, T = logp.shape
    out = torch.ones(B, T, dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            if mask[b, t]:
                out[b, t] = min(math.exp(float(logp[b, t]) - float(sampler_logp[b, t])), cap)
    return out


def k3_token(lp: float, sp: float) -> float:
    """exp(sampler - learner) - (sampler - learner) - 1 for one token."""
    d = sp - lp
    return math.exp(d) - d - 1


def sequence_kl(logp: Tensor, sampler_logp: Tensor, mask: Tensor, kl: str) -> list[float]:
    """Per completion: the sum ("seq") or the mean per valid token ("token_mean") of k3."""
    out = []
    for b in range(logp.shape[0]):
        vals = [
            k3_token(float(logp[b, t]), float(sampler_logp[b, t])) for t in range(logp.shape[1]) if mask[b, t]
        ]
        total = sum(vals)
        out.append(total if kl == "seq" else (total / len(vals) if vals else 0.0))
    return out


def adv_or_kl_keep(logp, sampler_logp, mask, adv, kl: str, threshold: float) -> list[float]:
    """1 if A > 0 or KL < threshold, else 0, one completion at a time."""
    kls = sequence_kl(logp, sampler_logp, mask, kl)
    return [1.0 if float(adv[b]) > 0 or kls[b] < threshold else 0.0 for b in range(len(kls))]


def ftis_loss(
    logp: Tensor,
    sampler_logp: Tensor,
    mask: Tensor,
    rewards: Tensor,
    group: Tensor,
    cap: float,
    kl: str,
    threshold: float,
) -> Tensor:
    """The F-TIS loss of a batch, term by term (one optimizer step per batch, so R = pi/sg(pi) = 1
    and the clipped term is R * A):
        L = 1/N sum_i keep_i 1/|a_i| sum_t -sg(min(rho_it, C)) * A_i * R_it
    A_i: the group z-score over *all* members of i's group (filtered ones included); keep_i from
    A_i and the learner-sampler KL; N: completions with at least one valid token."""
    adv = grpo_advantage(rewards[:, None], group, None, 1e-6, True)
    keep = adv_or_kl_keep(logp.detach(), sampler_logp, mask, adv, kl, threshold)
    w = tis_weight(logp.detach(), sampler_logp, mask, cap)
    B, T = logp.shape
    terms, n = [], 0
    for b in range(B):
        length = int(mask[b].sum())
        if length == 0:
            continue
        n += 1
        for t in range(T):
            if mask[b, t]:
                ratio = torch.exp(logp[b, t] - logp[b, t].detach())  # value 1, gradient d logp
                terms.append(-keep[b] * float(w[b, t]) * float(adv[b]) * ratio / length)
    if not terms:
        return torch.zeros((), dtype=logp.dtype)
    return torch.stack(terms).sum() / max(n, 1)
