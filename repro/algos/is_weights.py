"""Stage 3 of the policy-gradient step: per-token importance weights against the sampler, and
per-completion filters of off-policy samples.

    w, stats = IS_WEIGHTS[name](logp.detach(), sampler_logp, mask, **kw)        # w: (B, T)
    keep, stats = IS_FILTERS[name](logp.detach(), sampler_logp, mask, adv, **kw)  # keep: (B,) 0/1
    loss = AGGREGATIONS[agg](loss_mat * w * keep[:, None], mask)

The rollout engine (sampler) and the learner can disagree on log-probs (vLLM vs training
kernels, an older checkpoint, or a different model altogether); functions here correct for that
with one multiply. rho_t = pi_learner(a_t | .) / pi_sampler(a_t | .) per token, from the learner's
log-probs and the log-probs the sampler reported when it generated the tokens.

A filter drops whole completions from the loss (keep = 0) but leaves the advantages alone: a
dropped completion still counted in its group's mean and std, which the advantage stage computed
before. Stats are `Share`s (numerator and denominator over the call's valid tokens or
completions), so that a trainer pools them over mini-batches, peers and steps as ratios of sums.
"""

from __future__ import annotations

import torch
from torch import Tensor

from repro.algos.objectives import Share
from repro.errors import ConfigError
from repro.registry import Registry

IS_WEIGHTS = Registry("is_weight")
IS_FILTERS = Registry("is_filter")
KL_DEFINITIONS = ("seq", "token_mean")


def log_ratio(logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> Tensor:
    """log rho_t = logp_t - sampler_logp_t on valid tokens, 0 at padding (B, T)."""
    return torch.where(mask, logp - sampler_logp, 0.0)


def k3(logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> Tensor:
    """Per-token KL estimate between learner and sampler, 0 at padding (B, T):
    k3_t = exp(sampler_logp_t - logp_t) - (sampler_logp_t - logp_t) - 1 = 1/rho - 1 + log rho.

    The k3 estimator (Schulman 2020, "Approximating KL divergence") in the form GRPO trainers use
    for KL(pi_theta || pi_ref) (TRL's per_token_kl), with the sampler in the reference's place:
    >= 0, and 0 exactly where the two log-probs agree."""
    d = torch.where(mask, sampler_logp - logp, 0.0)  # (B, T) = -log rho
    return torch.where(mask, d.exp() - d - 1, 0.0)


def sequence_kl(logp: Tensor, sampler_logp: Tensor, mask: Tensor, kl: str) -> Tensor:
    """Learner-sampler KL per completion (B,): `seq` = sum of k3 over the completion's tokens (a
    per-sequence KL), `token_mean` = its mean per valid token (0 for an empty completion)."""
    if kl not in KL_DEFINITIONS:
        raise ConfigError(f"trainer.filter.kw.kl must be one of {', '.join(KL_DEFINITIONS)}, got {kl!r}")
    total = k3(logp, sampler_logp, mask).sum(1)  # (B,)
    if kl == "seq":
        return total
    return total / mask.sum(1).clamp(min=1)


@IS_WEIGHTS.register("none")
def none(logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """No correction: weight 1 on every position, padding included (loss_mat is already 0 there)."""
    return torch.ones_like(logp), {}  # (B, T)


@IS_WEIGHTS.register("tis")
def tis(
    logp: Tensor, sampler_logp: Tensor, mask: Tensor, *, cap: float = 2.0
) -> tuple[Tensor, dict[str, Share]]:
    """Truncated importance sampling: w_t = sg(min(rho_t, C)), rho_t = pi_learner / pi_sampler.

    Truncated IS (Ionides 2008, "Truncated importance sampling"), as used against rollout-engine
    mismatch by Yao et al. 2025 ("Your efficient RL framework secretly brings you off-policy RL
    training": vLLM sampler vs FSDP learner; their recipe caps at C = 2, the default here) and
    against other peers' samples by F-TIS: the weight corrects for the sampler only up to C, so one
    token the learner finds far likelier than the sampler did cannot dominate the batch. `logp` is
    the learner's log-prob at the sampling temperature. Detached: it scales the objective's
    gradient, it is not differentiated. 1 at padding. Stats over valid tokens: `trunc_frac`, the
    share with rho > C (where truncation acts); `ratio_mean`, the mean rho; `w_mean`, the mean w."""
    if not cap > 0:
        raise ConfigError(f"is_weight.kw.cap must be > 0, got {cap}")
    ratio = log_ratio(logp, sampler_logp, mask).detach().exp()  # (B, T), 1 at padding
    w = torch.where(mask, ratio.clamp(max=cap), 1.0)  # (B, T)
    n = mask.sum().to(ratio.dtype)
    stats = {
        "trunc_frac": Share(((ratio > cap) & mask).sum().to(ratio.dtype), n),
        "ratio_mean": Share(ratio.where(mask, 0.0).sum(), n),
        "w_mean": Share(w.where(mask, 0.0).sum(), n),
    }
    return w, stats


@IS_FILTERS.register("none")
def keep_all(
    logp: Tensor, sampler_logp: Tensor, mask: Tensor, adv: Tensor
) -> tuple[Tensor, dict[str, Share]]:
    """Every completion counts (keep = 1)."""
    return torch.ones(logp.shape[0], dtype=logp.dtype), {}  # (B,)


@IS_FILTERS.register("adv_or_kl")
def adv_or_kl(
    logp: Tensor,
    sampler_logp: Tensor,
    mask: Tensor,
    adv: Tensor,
    *,
    kl: str = "seq",
    threshold: float = 50.0,
) -> tuple[Tensor, dict[str, Share]]:
    """Keep a completion if its advantage is positive or its learner-sampler KL is below the
    threshold: keep_i = 1[A_i > 0 or KL_i < g]; otherwise it is dropped from the loss.

    Samples the learner already agrees with (small KL) count whatever their sign; samples it finds
    far off its own distribution count only when they pull it towards better answers, so strongly
    off-policy negatives cannot push probability mass around arbitrarily. `kl` picks the definition
    (`sequence_kl`): `seq` (summed over the completion) or `token_mean` (mean per token); `threshold`
    is g in the same units. Stats: `filtered_frac` (share of completions dropped), `kl_mean` (mean
    KL per completion, in the chosen definition)."""
    if not threshold > 0:
        raise ConfigError(f"trainer.filter.kw.threshold must be > 0, got {threshold}")
    kl_i = sequence_kl(logp.detach(), sampler_logp, mask, kl)  # (B,)
    keep = ((adv > 0) | (kl_i < threshold)).to(logp.dtype)  # (B,)
    B = torch.tensor(float(logp.shape[0]), dtype=logp.dtype)
    stats = {"filtered_frac": Share((1 - keep).sum(), B), "kl_mean": Share(kl_i.sum(), B)}
    return keep, stats
