"""Covariance-based entropy control (Cui et al. 2025, "The Entropy Mechanism of Reinforcement
Learning for Reasoning Language Models", arXiv 2505.22617): KL-Cov and Clip-Cov, as objectives.

    loss_mat, stats = OBJECTIVES["kl_cov"](logp, old_logp, adv, mask, generator=gen, **kw)
    loss_mat, stats = OBJECTIVES["clip_cov"](logp, old_logp, adv, mask, generator=gen, **kw)
    # logp, old_logp (B, T); adv (B,); mask (B, T) bool -> loss_mat (B, T), stats {name: 0-d}

Both rank tokens by the covariance of their centred log-prob and centred advantage,
    cov_t = (logp_t - mean logp) * (A_t - mean A),
means over all valid tokens of the batch the objective is called on (a mini-batch here, a
micro-batch in verl), A_t the sequence's advantage broadcast to its tokens. They follow verl's
`compute_policy_loss_kl_cov` / `compute_policy_loss_clip_cov` (verl/trainer/ppo/core_algos.py;
the bodies are unchanged from v0.4 to 0.9.x) on the same tensors: tests/algos/reference.py has a
line-by-line transcription and tests/algos/test_cov_objectives.py compares; when verl is
importable the test compares against it too. Two departures, both numerically neutral:
the loss matrix is returned unaggregated (AGGREGATIONS is the next stage), and Clip-Cov's random
choice draws from the run's `generator` instead of torch's global generator.
"""

from __future__ import annotations

import torch
from torch import Tensor

from repro.algos.objectives import OBJECTIVES, Share, _check_eps, _check_inputs, clip_stats, zeroed_by_clip
from repro.errors import ConfigError


def token_cov(logp: Tensor, adv_tok: Tensor, mask: Tensor) -> Tensor:
    """(logp_t - mean logp) * (A_t - mean A) over valid tokens (means over valid tokens, detached);
    (B, T), 0 at padding."""
    m = mask.to(logp.dtype)
    n = m.sum().clamp(min=1)
    lp = logp.detach()
    mean_lp = (lp * m).sum() / n
    mean_a = (adv_tok * m).sum() / n
    return torch.where(mask, (lp - mean_lp) * (adv_tok - mean_a), 0.0)


def _stats(ratio, log_ratio, adv, mask, eps_low, eps_high, extra: dict[str, Tensor]) -> dict[str, Tensor]:
    m = mask.to(ratio.dtype)
    out = clip_stats(ratio, log_ratio, adv.unsqueeze(1), m, eps_low, eps_high)
    return out | extra


@OBJECTIVES.register("kl_cov")
def kl_cov(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    generator: torch.Generator | None = None,
    kl_cov_ratio: float = 0.0002,
    ppo_kl_coef: float = 1.0,
    clip_others: bool = False,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """KL-Cov (Cui et al. 2025, §4.3 eq. 14; verl `compute_policy_loss_kl_cov`): the
    max(1, int(kl_cov_ratio x n_valid)) tokens of largest `token_cov` get
        loss_t = -r_t A + ppo_kl_coef * |log r_t|,
    every other token the plain -r_t A: no clipping anywhere (verl defaults: ratio 0.0002, coef 1).

    `clip_others: true` is CIRCA's form (Joarder et al. 2026): the selected tokens as above, the
    others keep the PPO-clipped loss -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) (CIRCA:
    ratio 0.02, coef 0.05). eps_low / eps_high are read only then.
    Stats: the generic clip diagnostics (what clipping *would* zero), cov/frac (share of valid
    tokens selected), cov/penalty_share (the penalty's gradient magnitude, coef per selected token
    with r != 1, over that plus sum |r A| of all valid tokens: how much of the update it steers).
    """
    if not 0 < kl_cov_ratio <= 1:
        raise ConfigError(f"objective.kw.kl_cov_ratio must be in (0, 1], got {kl_cov_ratio}")
    if not ppo_kl_coef >= 0:
        raise ConfigError(f"objective.kw.ppo_kl_coef must be >= 0, got {ppo_kl_coef}")
    if clip_others:
        _check_eps(eps_low, eps_high)
    _check_inputs(logp, old_logp, adv, mask)
    log_ratio = torch.where(mask, logp - old_logp, 0.0)  # (B, T), 0 at padding keeps exp finite
    ratio = log_ratio.exp()  # (B, T), live
    A = adv.detach().unsqueeze(1).expand_as(logp)  # (B, T)
    pg = -A * ratio  # (B, T)
    if clip_others:
        pg = torch.maximum(pg, -A * ratio.clamp(1 - eps_low, 1 + eps_high))
    selected = torch.zeros_like(mask)  # (B, T) bool
    n_valid = int(mask.sum())
    if n_valid > 0:
        cov = token_cov(logp, A, mask)[mask]  # (n_valid,) in row-major order, as verl's masking
        k = max(1, int(n_valid * kl_cov_ratio))
        top = torch.topk(cov, k, largest=True).indices
        selected.view(-1)[mask.view(-1).nonzero().squeeze(1)[top]] = True
    penalised = -A * ratio + ppo_kl_coef * log_ratio.abs()  # (B, T)
    loss_mat = torch.where(selected, penalised, pg).where(mask, 0.0)  # (B, T)
    with torch.no_grad():
        r = ratio.detach()
        sel_f = selected.to(r.dtype)
        pen = ppo_kl_coef * (sel_f * (log_ratio.detach() != 0)).sum()
        signal = (r * A.abs() * mask).sum()
        extra = {
            "cov/frac": Share(sel_f.sum(), mask.sum().to(r.dtype)),
            "cov/penalty_share": Share(pen, pen + signal),
        }
        stats = _stats(r, log_ratio.detach(), adv.detach(), mask, eps_low, eps_high, extra)
    return loss_mat, stats


@OBJECTIVES.register("clip_cov")
def clip_cov(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    generator: torch.Generator | None = None,
    clip_cov_ratio: float = 0.0002,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clip-Cov (Cui et al. 2025, §4.3 eq. 13; verl `compute_policy_loss_clip_cov`): PPO-clip,
    except that among valid tokens PPO's clip leaves alone whose `token_cov` lies in
    (clip_cov_lb, clip_cov_ub), a random max(1, int(clip_cov_ratio x n_valid)) (or all, if fewer)
    get loss 0 and no gradient. Defaults are verl's (0.0002, 1, 5). With an empty band
    (lb >= ub) it is `clip` exactly. The choice is one `torch.randperm` from `generator`.
    Stats: the generic clip diagnostics, cov/frac (share of valid tokens detached)."""
    if not 0 < clip_cov_ratio <= 1:
        raise ConfigError(f"objective.kw.clip_cov_ratio must be in (0, 1], got {clip_cov_ratio}")
    _check_eps(eps_low, eps_high)
    _check_inputs(logp, old_logp, adv, mask)
    log_ratio = torch.where(mask, logp - old_logp, 0.0)  # (B, T)
    ratio = log_ratio.exp()  # (B, T), live
    A = adv.detach().unsqueeze(1).expand_as(logp)  # (B, T)
    pg = torch.maximum(-A * ratio, -A * ratio.clamp(1 - eps_low, 1 + eps_high))  # (B, T) PPO-clip
    with torch.no_grad():
        # verl: clip_by_origin = (pg_losses2 > pg_losses1), i.e. the tokens PPO's min zeroes.
        eligible = (
            mask
            & ~zeroed_by_clip(ratio.detach(), A, eps_low, eps_high)
            & (token_cov(logp, A, mask) > clip_cov_lb)
            & (token_cov(logp, A, mask) < clip_cov_ub)
        )  # (B, T)
        idx = eligible.nonzero()  # (n, 2) row-major, as verl's torch.nonzero
        n_valid = int(mask.sum())
        detached = torch.zeros_like(mask)
        if len(idx) > 0:
            k = max(int(clip_cov_ratio * n_valid), 1)
            pick = idx[torch.randperm(len(idx), generator=generator)[: min(k, len(idx))]]
            detached[pick[:, 0], pick[:, 1]] = True
    loss_mat = torch.where(detached | ~mask, 0.0, pg)  # (B, T)
    with torch.no_grad():
        extra = {"cov/frac": Share(detached.sum().to(ratio.dtype), mask.sum().to(ratio.dtype))}
        stats = _stats(ratio.detach(), log_ratio.detach(), adv.detach(), mask, eps_low, eps_high, extra)
    return loss_mat, stats
