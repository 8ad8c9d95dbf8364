"""Stage 4 of the policy-gradient step: the clipped surrogate, its rescue hook and its diagnostics.

    loss_mat, stats = OBJECTIVES["clip"](logp, old_logp, adv, mask, generator=gen, **kw)
    # logp, old_logp (B, T); adv (B,); mask (B, T) bool -> loss_mat (B, T), stats {name: 0-d | Share}

`loss_mat` is the per-token loss to minimise (minus the surrogate), exactly 0 at padding, with
gradient flowing only through `logp`. Aggregation is the next stage, not this one.

One objective, `clip`, covers PPO/GRPO/DAPO (`level: token`, the clip decision per token) and
GSPO (`level: sequence`, the decision on the length-normalised sequence ratio), in the spirit of
TRL's `importance_sampling_level`. With r the ratio of the clip unit (a token or a sequence),
A the advantage, clip(r) = clamp(r, 1 - eps_low, 1 + eps_high) and g in [0, 1] a per-unit
gradient weight,

    loss_t = -( g * r * A + (1 - g) * sg(min(r * A, clip(r) * A)) )

Hard clipping is g = 0 on the units PPO's min zeroes (A > 0 and r > 1 + eps_high, or A < 0 and
r < 1 - eps_low) and g = 1 elsewhere (rescue `none`); this gives PPO-clip's value and gradient
exactly. The gradient is always -g * r * A * d(logp); where the min picks r * A anyway both terms
are equal, so g there changes only the gradient, and on a zeroed unit g = 1 restores the
unclipped term -r * A.

Two plug points, registries a paper fills from its own package (`experiments/<slug>/`):

    RESCUES[name](ratio, adv, eps_low, eps_high, generator, **kw) -> g      # (B, U) each, U = T or 1
    CLIP_STATS[name](ratio, log_ratio, adv, g, weight, eps_low, eps_high, **kw) -> {stat: 0-d | Share}

A stat that is a share of something (clip fractions, near-boundary shares) is a `Share`
(numerator, denominator), so the trainer pools it over a step and a run as a ratio of sums.

An arm picks them in `objective.kw`: `rescue: <name>` (default `none`), `stats: [<name>, ...]`
(default none beyond the generic clip diagnostics, `STAT_NAMES`), and every other key goes to
whichever of them takes it as a keyword-only parameter (a key none takes is a ConfigError).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

from repro.errors import ConfigError
from repro.registry import Registry, UnknownNameError

OBJECTIVES = Registry("objective")
RESCUES = Registry("rescue")
CLIP_STATS = Registry("clip stats")
LEVELS = ("token", "sequence")


# --------------------------------------------------------------------------------------------
# Validation: cheap Python checks at the top of every call; messages name the config key.
# --------------------------------------------------------------------------------------------


def _check_eps(eps_low: float, eps_high: float) -> None:
    if not 0 < eps_low < 1:
        raise ConfigError(f"objective.kw.eps_low must be in (0, 1), got {eps_low}")
    if not eps_high > 0:
        raise ConfigError(f"objective.kw.eps_high must be > 0, got {eps_high}")


def _check_inputs(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor) -> None:
    if logp.ndim != 2 or old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(
            f"objective: logp, old_logp, mask must all be (B, T); got {tuple(logp.shape)}, "
            f"{tuple(old_logp.shape)}, {tuple(mask.shape)}"
        )
    if adv.shape != logp.shape[:1]:
        raise ValueError(f"objective: adv must be (B,) = ({logp.shape[0]},), got {tuple(adv.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"objective: mask must be bool, got {mask.dtype}")


@cache
def _kw_names(fn: Callable[..., object]) -> frozenset[str]:
    """Keyword-only parameters of a rescue or stats function: the kw a config may pass it."""
    params = inspect.signature(fn).parameters.values()
    return frozenset(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _lookup(registry: Registry, name: str, key: str) -> Callable[..., object]:
    try:
        return registry[name]
    except UnknownNameError as e:
        raise ConfigError(f"objective.kw.{key}: {e}") from None


Hook = tuple[Callable[..., object], dict[str, object]]


def _hooks(rescue: str, stats: Sequence[str], kw: Mapping[str, object]) -> tuple[Hook, list[Hook]]:
    """The rescue and stats functions an arm names, each with the kw it takes."""
    if isinstance(stats, str):
        raise ConfigError(f"objective.kw.stats must be a list of names, got {stats!r}")
    fns = {f"rescue '{rescue}'": _lookup(RESCUES, rescue, "rescue")}
    fns |= {f"stats '{name}'": _lookup(CLIP_STATS, name, "stats") for name in stats}
    for key in kw:
        if not any(key in _kw_names(fn) for fn in fns.values()):
            takes = "; ".join(
                f"{who}: {', '.join(sorted(_kw_names(fn))) or 'no kw'}" for who, fn in fns.items()
            )
            raise ConfigError(
                f"objective.kw.{key} is a parameter of neither the objective nor its hooks ({takes})"
            )
    hooks = [(fn, {k: v for k, v in kw.items() if k in _kw_names(fn)}) for fn in fns.values()]
    return hooks[0], hooks[1:]


# --------------------------------------------------------------------------------------------
# Rescue rules: which units get gradient (g). Inputs are detached; shapes (B, T) or (B, 1).
# A stochastic rule draws from `generator` only (e.g. one torch.rand(ratio.shape) per call).
# --------------------------------------------------------------------------------------------


def zeroed_by_clip(ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float) -> Tensor:
    """Units hard clipping gives zero gradient: A > 0 and r > 1 + eps_high, or A < 0 and r < 1 - eps_low."""
    return ((adv > 0) & (ratio > 1 + eps_high)) | ((adv < 0) & (ratio < 1 - eps_low))


@RESCUES.register("none")
def none(
    ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float, generator: torch.Generator | None = None
) -> Tensor:
    """Hard clipping (PPO/GRPO/DAPO/GSPO): g = 0 on zeroed units, 1 elsewhere."""
    return (~zeroed_by_clip(ratio, adv, eps_low, eps_high)).to(ratio.dtype)


# --------------------------------------------------------------------------------------------
# Diagnostics, computed on the unit the clip decision is made on (token, or sequence).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """A share kept as its numerator and denominator (0-d tensors), so that shares pool as ratios
    of sums: over mini-batches, steps or a run, Σ num / Σ den, divided once. A share with nothing
    eligible (den 0) adds nothing to a pool, and on its own is NaN (undefined), never 0.

        float(share)          # num / den, NaN when den == 0
        sum(shares, Share.zero())
    """

    num: Tensor
    den: Tensor

    @staticmethod
    def zero() -> Share:
        return Share(torch.zeros(()), torch.zeros(()))

    def __add__(self, other: Share) -> Share:
        return Share(self.num + other.num, self.den + other.den)

    def __radd__(self, other: object) -> Share:  # sum() starts from 0
        return self if other == 0 else NotImplemented  # type: ignore[return-value]

    def __float__(self) -> float:
        den = float(self.den)
        return float(self.num) / den if den > 0 else math.nan

    def item(self) -> float:
        return float(self)


class Shares:
    """Fractions of per-sequence sums over the batch, by token count and |A|-weighted.

    `sums` names the rows of the (K, B) tensor a call gets; `fractions` maps each stat to its
    (numerator, denominator): a sum's name for its total over sequences, or `<name>_sig` for its
    total weighted by |A|. Each stat is a `Share` (numerator and denominator kept apart, so the
    trainer pools mini-batches as a ratio of sums). One pass, no host sync.
    """

    def __init__(self, sums: Sequence[str], fractions: Mapping[str, tuple[str, str]]) -> None:
        totals = (*sums, *(f"{name}_sig" for name in sums))
        self.sums = tuple(sums)
        self.names = tuple(fractions)
        self._num = [totals.index(num) for num, _ in fractions.values()]
        self._den = [totals.index(den) for _, den in fractions.values()]
        self._index: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def __call__(self, per_seq: Tensor, adv: Tensor) -> dict[str, Share]:
        """per_seq: (K, B) in `sums` order; adv: (B,). -> {stat: Share}, in `fractions` order."""
        if per_seq.device not in self._index:  # index tensors kept on the data's device
            self._index[per_seq.device] = (
                torch.tensor(self._num, device=per_seq.device),
                torch.tensor(self._den, device=per_seq.device),
            )
        num_index, den_index = self._index[per_seq.device]
        totals = torch.cat([per_seq.sum(-1), per_seq @ adv.abs()])  # (2K,)
        num, den = totals[num_index], totals[den_index]  # (F,) each
        return {name: Share(n, d) for name, n, d in zip(self.names, num.unbind(), den.unbind())}


_CLIP_SHARES = Shares(
    sums=("zeroed", "high_pos", "high_neg", "low_pos", "low_neg", "abs_dev", "k3", "valid"),
    fractions={
        "clipfrac": ("zeroed", "valid"),
        "clipfrac_high_pos_adv": ("high_pos", "valid"),
        "clipfrac_high_neg_adv": ("high_neg", "valid"),
        "clipfrac_low_pos_adv": ("low_pos", "valid"),
        "clipfrac_low_neg_adv": ("low_neg", "valid"),
        "ratio_dev": ("abs_dev", "valid"),
        "kl_k3": ("k3", "valid"),
    },
)
STAT_NAMES = (*_CLIP_SHARES.names, "ratio_max")


def clip_stats(
    ratio: Tensor, log_ratio: Tensor, adv: Tensor, weight: Tensor, eps_low: float, eps_high: float
) -> dict[str, Share | Tensor]:
    """Clip fractions by side and advantage sign, ratio drift: the generic diagnostics (STAT_NAMES).

    ratio, log_ratio: (B, U); adv: (B, 1); weight: (B, U) float, the number of valid tokens each
    entry stands for. Token level: U = T, weight = the 0/1 mask. Sequence level: U = 1, weight =
    the sequence length, so every share is over valid tokens with the sequence ratio broadcast to
    its tokens. kl_k3 = mean of (r - 1) - log r, an estimate of KL(old || new).
    """
    # A is constant within a sequence, so count each sequence's entries past each boundary once;
    # signs are then (B,)-sized.
    n_above = ((ratio > 1 + eps_high) * weight).sum(-1)  # (B,)
    n_below = ((ratio < 1 - eps_low) * weight).sum(-1)  # (B,)
    abs_dev, k3 = (torch.stack([(ratio - 1).abs(), ratio - 1 - log_ratio]) * weight).sum(-1)  # (B,) each
    A = adv.reshape(-1)  # (B,)
    pos, neg = (A > 0).to(A.dtype), (A < 0).to(A.dtype)  # (B,)
    # Zeroed: past the upper boundary with A > 0, or past the lower one with A < 0.
    zeroed = n_above * pos + n_below * neg  # (B,)
    per_seq = torch.stack(
        [zeroed, n_above * pos, n_above * neg, n_below * pos, n_below * neg, abs_dev, k3, weight.sum(-1)]
    )  # (8, B) in _CLIP_SHARES.sums order
    stats = _CLIP_SHARES(per_seq, A)
    # weight.clamp(max=1) is 1 on valid entries and 0 on padding; ratios are > 0, so 0 never wins.
    stats["ratio_max"] = (ratio * weight.clamp(max=1)).amax()
    return stats


# --------------------------------------------------------------------------------------------
# The objective
# --------------------------------------------------------------------------------------------


@OBJECTIVES.register("clip")
def clip(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    generator: torch.Generator | None = None,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    level: str = "token",
    rescue: str = "none",
    stats: Sequence[str] = (),
    **kw: object,
) -> tuple[Tensor, dict[str, Share | Tensor]]:
    """Clipped surrogate -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), with a rescue hook.

    PPO: Schulman et al. 2017, eq. 7; GRPO uses eps_low = eps_high = 0.2; DAPO's clip-higher
    (Yu et al. 2025, §3.1) is the config value eps_high = 0.28.
    level "token": r_t = exp(logp_t - old_logp_t), clip and rescue decided per token.
    level "sequence": GSPO (Zheng et al. 2025, eq. 7), s_i = exp(mean over valid tokens of
    log r_t), decided per sequence, in GSPO-token form s_it = sg(s_i) r_t / sg(r_t); with
    `seq_mean_token_mean` aggregation the gradient is GSPO's sequence-level one, and with T = 1
    it equals level "token". GSPO's own eps are 3e-4 / 4e-4 (§5.1): set them in the arm.
    rescue: RESCUES name deciding g (module docstring); stats: CLIP_STATS names whose stats are
    added to STAT_NAMES; kw: their keyword-only parameters.
    """
    _check_eps(eps_low, eps_high)
    if level not in LEVELS:
        raise ConfigError(f"objective.kw.level must be one of {', '.join(LEVELS)}, got {level!r}")
    _check_inputs(logp, old_logp, adv, mask)
    (rescue_fn, rescue_kw), stats_hooks = _hooks(rescue, stats, kw)

    # log r = 0 at padding keeps exp finite whatever the padding holds.
    log_ratio = torch.where(mask, logp - old_logp, 0.0)  # (B, T)
    m = mask.to(logp.dtype)  # (B, T)
    if level == "token":
        live = log_ratio.exp()  # (B, T): value r_t, gradient r_t d(logp_t)
        unit_log_ratio, weight = log_ratio.detach(), m  # (B, T), (B, T)
        r = live.detach()  # (B, T)
    else:
        # sg(s_i) goes into the coefficient below, so only exp(log r_t - sg(log r_t)) stays live:
        # value 1, gradient d(logp_t).
        live = (log_ratio - log_ratio.detach()).exp()  # (B, T)
        weight = m.sum(1, keepdim=True)  # (B, 1) valid tokens per sequence
        unit_log_ratio = log_ratio.detach().sum(1, keepdim=True) / weight.clamp(min=1)  # (B, 1)
        r = unit_log_ratio.exp()  # (B, 1)
    with torch.no_grad():
        A = adv.detach().unsqueeze(1)  # (B, 1)
        g = rescue_fn(r, A.expand_as(r), eps_low, eps_high, generator, **rescue_kw)  # (B, U)
        hard = torch.minimum(r * A, r.clamp(1 - eps_low, 1 + eps_high) * A)  # (B, U) PPO's min, value only
        # d loss_t / d logp_t = -g r A: r is in `live` at token level, in the coefficient at sequence level.
        coef = (g if level == "token" else g * r) * A * m  # (B, T)
        constant = (1 - g) * hard * m  # (B, T)
        out = clip_stats(r, unit_log_ratio, A, weight, eps_low, eps_high)
        for fn, fn_kw in stats_hooks:
            extra = fn(r, unit_log_ratio, A, g, weight, eps_low, eps_high, **fn_kw)
            if clash := out.keys() & extra.keys():
                raise ValueError(f"objective: stats {sorted(clash)} reported twice")
            out |= extra
    loss_mat = -(coef * live + constant)  # (B, T), 0 at padding
    return loss_mat, out
