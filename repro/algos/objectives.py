"""Stage 4 of the policy-gradient step: the per-token surrogate loss and its clip diagnostics.

    loss_mat, stats = OBJECTIVES[name](logp, old_logp, adv, mask, generator=gen, **kw)
    # logp, old_logp (B, T); adv (B,); mask (B, T) bool -> loss_mat (B, T), stats {name: 0-d}

`loss_mat` is the per-token loss to minimise (minus the surrogate), exactly 0 at padding, with
gradient flowing only through `logp`. Aggregation is the next stage, not this one.

One formula covers PPO/GRPO/DAPO hard clipping, GSPO, and Near-boundary Stochastic Rescue (NSR,
`clipping_bottleneck`) with all its ablations. With r the ratio, A the advantage, clip(r) =
clamp(r, 1 - eps_low, 1 + eps_high) and g in [0, 1] a per-token "gradient weight",

    loss_t = -( g * r * A + (1 - g) * sg(min(r * A, clip(r) * A)) )

Hard clipping is g = 0 on the tokens PPO's min zeroes (A > 0 and r > 1 + eps_high, or A < 0 and
r < 1 - eps_low) and g = 1 elsewhere; this gives PPO-clip's value and gradient exactly. A rescue
spec (the RESCUES registry) decides g. The gradient is always -g * r * A * d(logp); where the min
picks r * A anyway both terms are equal, so g there changes only the gradient, and on a zeroed
token g = 1 restores the unclipped term -r * A.

    RESCUES[spec](ratio, adv, eps_low, eps_high, generator, **kw) -> g   # all (B, T) or (B, 1)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache

import torch
from torch import Tensor

from repro.errors import ConfigError
from repro.registry import Registry

OBJECTIVES = Registry("objective")
RESCUES = Registry("rescue")


# --------------------------------------------------------------------------------------------
# Validation: cheap Python checks at the top of every call; messages name the config key.
# --------------------------------------------------------------------------------------------


def _check_eps(eps_low: float, eps_high: float) -> None:
    if not 0 < eps_low < 1:
        raise ConfigError(f"objective.kw.eps_low must be in (0, 1), got {eps_low}")
    if not eps_high > 0:
        raise ConfigError(f"objective.kw.eps_high must be > 0, got {eps_high}")


def _check_nbm(nbm_abs_width: float, nbm_rel_mult: float) -> None:
    if not nbm_abs_width > 0:
        raise ConfigError(f"objective.kw.nbm_abs_width must be > 0, got {nbm_abs_width}")
    if not nbm_rel_mult >= 1:
        raise ConfigError(f"objective.kw.nbm_rel_mult must be >= 1, got {nbm_rel_mult}")


def _check_delta(delta: float) -> None:
    if not 0 <= delta < 1:
        raise ConfigError(f"objective.kw.delta must be in [0, 1), got {delta}")


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
def _kw_names(fn: Callable[..., Tensor]) -> frozenset[str]:
    """Keyword-only parameters of a rescue function: the kw a config may pass it."""
    params = inspect.signature(fn).parameters.values()
    return frozenset(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _rescue(spec: str, spec_kw: dict[str, float]) -> Callable[..., Tensor]:
    fn = RESCUES[spec]  # unknown spec: the registry's error lists the registered ones
    accepted = _kw_names(fn)
    for key in spec_kw:
        if key not in accepted:
            raise ConfigError(
                f"objective.kw.{key} is not a parameter of rescue '{spec}' "
                f"(it takes: {', '.join(sorted(accepted)) or 'no kw'})"
            )
    return fn


# --------------------------------------------------------------------------------------------
# Rescue specs: which tokens get gradient (g). Inputs are detached; shapes (B, T) or (B, 1).
# Stochastic specs draw exactly one torch.rand(ratio.shape, generator=generator) per call.
# --------------------------------------------------------------------------------------------


def zeroed_by_clip(ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float) -> Tensor:
    """Tokens hard clipping gives zero gradient: A > 0 and r > 1 + eps_high, or A < 0 and r < 1 - eps_low."""
    return ((adv > 0) & (ratio > 1 + eps_high)) | ((adv < 0) & (ratio < 1 - eps_low))


def perturb_keep_prob(ratio: Tensor, eps_low: float, eps_high: float, delta: float) -> Tensor:
    """P(u * r lands in [1 - eps_low, 1 + eps_high]) for u ~ U(1 - delta, 1 + delta).

    = clip((min(1 + delta, (1 + eps_high) / r) - max(1 - delta, (1 - eps_low) / r)) / (2 delta), 0, 1).
    For a zeroed token above the upper boundary this is the paper note's p(r) = clip(((1 + eps_high) / r -
    (1 - delta)) / (2 delta), 0, 1) as long as the noise cannot overshoot past the other boundary,
    i.e. (1 - delta) * r >= 1 - eps_low; with GSPO's tiny eps it can, and this form stays exact.
    """
    if delta == 0:
        return ((ratio >= 1 - eps_low) & (ratio <= 1 + eps_high)).to(ratio.dtype)
    lo = ((1 - eps_low) / ratio).clamp(min=1 - delta)
    hi = ((1 + eps_high) / ratio).clamp(max=1 + delta)
    return ((hi - lo) / (2 * delta)).clamp(0, 1)


def _uniform_noise(ratio: Tensor, delta: float, generator: torch.Generator | None) -> Tensor:
    """u ~ U(1 - delta, 1 + delta), one draw per entry of `ratio`."""
    u01 = torch.rand(ratio.shape, generator=generator, device=ratio.device, dtype=ratio.dtype)
    return (1 - delta) + (2 * delta) * u01


@RESCUES.register("none")
def none(
    ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float, generator: torch.Generator | None = None
) -> Tensor:
    """Hard clipping (PPO/GRPO/DAPO/GSPO): g = 0 on zeroed tokens, 1 elsewhere."""
    return (~zeroed_by_clip(ratio, adv, eps_low, eps_high)).to(ratio.dtype)


@RESCUES.register("perturb")
def perturb(
    ratio: Tensor,
    adv: Tensor,
    eps_low: float,
    eps_high: float,
    generator: torch.Generator | None = None,
    *,
    delta: float = 0.1,  # ours: paper silent
) -> Tensor:
    """NSR as the secondary digest describes it (clipping_bottleneck, "implement both", spec 1).

    Each zeroed token draws u ~ U(1 - delta, 1 + delta) and is kept (g = 1) if u * r lands back in
    [1 - eps_low, 1 + eps_high]; expected keep rate `perturb_keep_prob`. Deep violations
    (r > (1 + eps_high) / (1 - delta), or r < (1 - eps_low) / (1 + delta)) are never kept.
    delta = 0 is hard clipping. delta's default 0.1 is ours: the paper is silent.
    """
    _check_delta(delta)
    zeroed = zeroed_by_clip(ratio, adv, eps_low, eps_high)
    moved = _uniform_noise(ratio, delta, generator) * ratio
    back_inside = (moved >= 1 - eps_low) & (moved <= 1 + eps_high)
    return (~zeroed | back_inside).to(ratio.dtype)


@RESCUES.register("band")
def band(
    ratio: Tensor,
    adv: Tensor,
    eps_low: float,
    eps_high: float,
    generator: torch.Generator | None = None,
    *,
    band_mult: float = 1.5,  # popular summary (no paper source)
    keep_prob: float = 0.2,  # popular summary (no paper source)
) -> Tensor:
    """NSR as the popular summary describes it (clipping_bottleneck, "implement both", spec 2).

    A zeroed token within band_mult x the threshold (r <= 1 + band_mult * eps_high, or
    r >= 1 - band_mult * eps_low) is kept with probability keep_prob; deeper ones stay zeroed.
    keep_prob = 0 is hard clipping.
    """
    if not band_mult >= 1:
        raise ConfigError(f"objective.kw.band_mult must be >= 1, got {band_mult}")
    if not 0 <= keep_prob <= 1:
        raise ConfigError(f"objective.kw.keep_prob must be in [0, 1], got {keep_prob}")
    zeroed = zeroed_by_clip(ratio, adv, eps_low, eps_high)
    # A zeroed token lies beyond one boundary, so the two-sided test checks just that side.
    near = (ratio <= 1 + band_mult * eps_high) & (ratio >= 1 - band_mult * eps_low)
    lucky = torch.rand(ratio.shape, generator=generator, device=ratio.device, dtype=ratio.dtype) < keep_prob
    return (~zeroed | (near & lucky)).to(ratio.dtype)


@RESCUES.register("decay")
def decay(
    ratio: Tensor,
    adv: Tensor,
    eps_low: float,
    eps_high: float,
    generator: torch.Generator | None = None,
    *,
    delta: float = 0.1,  # ours: paper silent
) -> Tensor:
    """Ablation "deterministic decay": zeroed tokens get g = perturb's expected keep rate, no sampling."""
    _check_delta(delta)
    zeroed = zeroed_by_clip(ratio, adv, eps_low, eps_high)
    return torch.where(zeroed, perturb_keep_prob(ratio, eps_low, eps_high, delta), 1.0)


@RESCUES.register("push_only")
def push_only(
    ratio: Tensor,
    adv: Tensor,
    eps_low: float,
    eps_high: float,
    generator: torch.Generator | None = None,
    *,
    delta: float = 0.1,  # ours: paper silent
) -> Tensor:
    """Ablation "push only": the other half of the perturbation (reported not to help [secondary]).

    Zeroed tokens stay zeroed. Each in-bound token draws u ~ U(1 - delta, 1 + delta); it is
    pushed out (g = 0) if u * r crosses the boundary its advantage pushes towards (upper for
    A > 0, lower for A < 0).
    """
    _check_delta(delta)
    zeroed = zeroed_by_clip(ratio, adv, eps_low, eps_high)
    in_bound = (ratio >= 1 - eps_low) & (ratio <= 1 + eps_high)
    moved = _uniform_noise(ratio, delta, generator) * ratio
    pushed = in_bound & (((adv > 0) & (moved > 1 + eps_high)) | ((adv < 0) & (moved < 1 - eps_low)))
    return (~(zeroed | pushed)).to(ratio.dtype)


# --------------------------------------------------------------------------------------------
# Diagnostics, computed on the unit the clip decision is made on (token, or GSPO's sequence).
# --------------------------------------------------------------------------------------------

# Per-sequence sums the diagnostics are built from, in the order `clip_stats` stacks them; each is
# summed over sequences as is ("tok") and weighted by |A| ("sig").
_SUMS = (
    "zeroed", "abs_band", "rel_band", "high_pos", "high_neg", "low_pos", "low_neg",
    "rescued", "pushed", "abs_dev", "k3", "valid",
)  # fmt: skip
# name: (numerator, denominator); a fraction with a 0 denominator is reported as 0.
_FRACTIONS = {
    "clipfrac": ("zeroed", "valid"),
    "clipfrac_high_pos_adv": ("high_pos", "valid"),
    "clipfrac_high_neg_adv": ("high_neg", "valid"),
    "clipfrac_low_pos_adv": ("low_pos", "valid"),
    "clipfrac_low_neg_adv": ("low_neg", "valid"),
    "nbm_abs_tok": ("abs_band", "valid"),
    "nbm_abs_tok_of_clipped": ("abs_band", "zeroed"),
    "nbm_abs_sig": ("abs_band_sig", "valid_sig"),
    "nbm_abs_sig_of_clipped": ("abs_band_sig", "zeroed_sig"),
    "nbm_rel_tok": ("rel_band", "valid"),
    "nbm_rel_tok_of_clipped": ("rel_band", "zeroed"),
    "nbm_rel_sig": ("rel_band_sig", "valid_sig"),
    "nbm_rel_sig_of_clipped": ("rel_band_sig", "zeroed_sig"),
    "rescued_frac": ("rescued", "valid"),
    "rescued_frac_of_clipped": ("rescued", "zeroed"),
    "pushed_frac": ("pushed", "valid"),
    "ratio_dev": ("abs_dev", "valid"),
    "kl_k3": ("k3", "valid"),
}
_TOTALS = (*_SUMS, *(f"{name}_sig" for name in _SUMS))
STAT_NAMES = (*_FRACTIONS, "ratio_max")


@cache
def _fraction_index(device: torch.device) -> tuple[Tensor, Tensor]:
    """Positions of each fraction's numerator and denominator in the totals, kept on `device`."""
    num = [_TOTALS.index(num) for num, _ in _FRACTIONS.values()]
    den = [_TOTALS.index(den) for _, den in _FRACTIONS.values()]
    return torch.tensor(num, device=device), torch.tensor(den, device=device)


@torch.no_grad()
def clip_stats(
    ratio: Tensor,
    log_ratio: Tensor,
    adv: Tensor,
    g: Tensor,
    weight: Tensor,
    eps_low: float,
    eps_high: float,
    nbm_abs_width: float,
    nbm_rel_mult: float,
) -> dict[str, Tensor]:
    """Clip fractions by side and advantage sign, near-boundary mass, rescue/push rates, ratio drift.

    ratio, log_ratio, g: (B, U); adv: (B, 1); weight: (B, U) float, the number of valid tokens each
    entry stands for. Token level: U = T, weight = the 0/1 mask. GSPO: U = 1, weight = the
    sequence length, so every share is over valid tokens with the sequence ratio broadcast to its
    tokens. "Zeroed" entries are those hard clipping gives no gradient; near-boundary mass counts
    the zeroed ones within `nbm_abs_width` beyond the boundary (absolute band) or within
    `nbm_rel_mult` x the threshold (relative band). kl_k3 = mean of (r - 1) - log r, KL(old || new).
    Everything stays on ratio's device (no host sync).
    """
    # A is constant within a sequence, so one pass counts each sequence's tokens past the boundary
    # and past each band's outer edge, on both sides; signs and |A| weights are then (B,)-sized.
    above = torch.stack(
        [ratio > 1 + eps_high, ratio > 1 + eps_high + nbm_abs_width, ratio > 1 + nbm_rel_mult * eps_high]
    )  # (3, B, U)
    below = torch.stack(
        [ratio < 1 - eps_low, ratio < 1 - eps_low - nbm_abs_width, ratio < 1 - nbm_rel_mult * eps_low]
    )  # (3, B, U)
    n_above = (above * weight).sum(-1)  # (3, B)
    n_below = (below * weight).sum(-1)  # (3, B)
    # 1 - g is the gradient weight an entry gives up: on zeroed entries what is left of it is
    # rescued, on the others it is pushed out.
    lost = 1 - g  # (B, U)
    per_entry = torch.stack(
        [lost, lost * above[0], lost * below[0], (ratio - 1).abs(), ratio - 1 - log_ratio]
    )
    lost_all, lost_above, lost_below, abs_dev, k3 = (per_entry * weight).sum(-1)  # (B,) each
    valid = weight.sum(-1)  # (B,)

    A = adv.reshape(-1)  # (B,)
    pos, neg = (A > 0).to(A.dtype), (A < 0).to(A.dtype)  # (B,)
    # Zeroed: past the upper boundary with A > 0, or past the lower one with A < 0; the same
    # count at each band's outer edge gives the zeroed tokens beyond the band.
    zeroed, beyond_abs, beyond_rel = n_above * pos + n_below * neg  # (B,) each
    not_rescued = lost_above * pos + lost_below * neg  # (B,)
    per_seq = torch.stack(
        [
            zeroed,
            zeroed - beyond_abs,  # abs_band
            zeroed - beyond_rel,  # rel_band
            n_above[0] * pos,  # high_pos
            n_above[0] * neg,  # high_neg
            n_below[0] * pos,  # low_pos
            n_below[0] * neg,  # low_neg
            zeroed - not_rescued,  # rescued: Σ g over zeroed tokens
            lost_all - not_rescued,  # pushed: Σ (1 - g) over the other tokens
            abs_dev,
            k3,
            valid,
        ]
    )  # (12, B) in _SUMS order
    totals = torch.cat([per_seq.sum(-1), per_seq @ A.abs()])  # (24,) in _TOTALS order
    num_index, den_index = _fraction_index(totals.device)
    num, den = totals[num_index], totals[den_index]  # (18,) each
    fractions = torch.where(den > 0, num / den, 0.0)  # (18,)
    stats = dict(zip(_FRACTIONS, fractions.unbind()))
    # weight.clamp(max=1) is 1 on valid entries and 0 on padding; ratios are > 0, so 0 never wins.
    stats["ratio_max"] = (ratio * weight.clamp(max=1)).amax()
    return stats


# --------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------


def _token_level(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    generator: torch.Generator | None,
    eps_low: float,
    eps_high: float,
    rescue: Callable[..., Tensor],
    rescue_kw: dict[str, float],
    nbm_abs_width: float,
    nbm_rel_mult: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token ratio r_t = exp(logp_t - old_logp_t); clip and rescue decided per token."""
    # log r = 0 at padding keeps exp finite whatever the padding holds.
    log_ratio = torch.where(mask, logp - old_logp, 0.0)  # (B, T)
    ratio = log_ratio.exp()  # (B, T)
    with torch.no_grad():
        r = ratio.detach()  # (B, T)
        A = adv.detach().unsqueeze(1)  # (B, 1)
        m = mask.to(r.dtype)  # (B, T)
        g = rescue(r, A.expand_as(r), eps_low, eps_high, generator, **rescue_kw)  # (B, T)
        hard = torch.minimum(r * A, r.clamp(1 - eps_low, 1 + eps_high) * A)  # (B, T) PPO's min, value only
        grad_weight = g * A * m  # (B, T): d loss_t / d logp_t = -grad_weight * r
        constant = (1 - g) * hard * m  # (B, T)
        stats = clip_stats(r, log_ratio.detach(), A, g, m, eps_low, eps_high, nbm_abs_width, nbm_rel_mult)
    loss_mat = -(grad_weight * ratio + constant)  # (B, T), 0 at padding
    return loss_mat, stats


def _sequence_level(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    generator: torch.Generator | None,
    eps_low: float,
    eps_high: float,
    rescue: Callable[..., Tensor],
    rescue_kw: dict[str, float],
    nbm_abs_width: float,
    nbm_rel_mult: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO's sequence ratio s_i = exp(mean_t log r_t); clip and rescue decided per sequence."""
    log_ratio = torch.where(mask, logp - old_logp, 0.0)  # (B, T)
    with torch.no_grad():
        m = mask.to(logp.dtype)  # (B, T)
        n_tok = m.sum(1, keepdim=True)  # (B, 1) valid tokens per sequence
        seq_log_ratio = log_ratio.detach().sum(1, keepdim=True) / n_tok.clamp(min=1)  # (B, 1)
        s = seq_log_ratio.exp()  # (B, 1)
        A = adv.detach().unsqueeze(1)  # (B, 1)
        g = rescue(s, A, eps_low, eps_high, generator, **rescue_kw)  # (B, 1): one draw per sequence
        hard = torch.minimum(s * A, s.clamp(1 - eps_low, 1 + eps_high) * A)  # (B, 1)
        grad_weight = (g * s * A) * m  # (B, T)
        constant = ((1 - g) * hard) * m  # (B, T)
        stats = clip_stats(s, seq_log_ratio, A, g, n_tok, eps_low, eps_high, nbm_abs_width, nbm_rel_mult)
    # GSPO-token: s_it = sg(s_i) * exp(log r_t - sg(log r_t)); value s_i, gradient s_i * d(logp_t).
    # sg(s_i) sits in grad_weight, so only the exp factor (value 1) stays live.
    unit = (log_ratio - log_ratio.detach()).exp()  # (B, T)
    loss_mat = -(grad_weight * unit + constant)  # (B, T), 0 at padding
    return loss_mat, stats


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
    nbm_abs_width: float = 0.05,  # popular summary's band
    nbm_rel_mult: float = 1.5,  # ours
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO/GRPO clipped surrogate, per token: -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A).

    Schulman et al. 2017, eq. 7; GRPO uses eps_low = eps_high = 0.2; DAPO's clip-higher
    (Yu et al. 2025, §3.1) is the config value eps_high = 0.28.
    """
    _check_eps(eps_low, eps_high)
    _check_nbm(nbm_abs_width, nbm_rel_mult)
    _check_inputs(logp, old_logp, adv, mask)
    return _token_level(
        logp, old_logp, adv, mask, generator, eps_low, eps_high, none, {}, nbm_abs_width, nbm_rel_mult
    )


@OBJECTIVES.register("gspo")
def gspo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    generator: torch.Generator | None = None,
    eps_low: float = 3e-4,  # GSPO paper (v2) §5.1
    eps_high: float = 4e-4,  # GSPO paper (v2) §5.1
    nbm_abs_width: float = 0.05,  # popular summary's band
    nbm_rel_mult: float = 1.5,  # ours
) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO (Zheng et al. 2025), token form: -min(s_it A, clip(s_it) A) with s_it = sg(s_i) r_t / sg(r_t).

    s_i = exp(mean over valid tokens of log r_t) is the length-normalised sequence ratio; the clip
    decision is made on it. With `seq_mean_token_mean` aggregation the gradient is GSPO's
    sequence-level one; with T = 1 this is `clip`.
    """
    _check_eps(eps_low, eps_high)
    _check_nbm(nbm_abs_width, nbm_rel_mult)
    _check_inputs(logp, old_logp, adv, mask)
    return _sequence_level(
        logp, old_logp, adv, mask, generator, eps_low, eps_high, none, {}, nbm_abs_width, nbm_rel_mult
    )


@OBJECTIVES.register("clip_nsr")
def clip_nsr(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    generator: torch.Generator | None = None,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    spec: str = "perturb",
    nbm_abs_width: float = 0.05,  # popular summary's band
    nbm_rel_mult: float = 1.5,  # ours
    **spec_kw: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """`clip` + Near-boundary Stochastic Rescue per token (clipping_bottleneck, arXiv 2605.22703).

    Departs from `clip` only on the tokens it zeroes: RESCUES[spec] gives them gradient weight g
    (loss_t = -(g r A + (1 - g) sg(min(r A, clip(r) A)))). spec_kw go to the spec (perturb/decay/
    push_only: delta; band: band_mult, keep_prob); spec "none" is `clip`.
    """
    _check_eps(eps_low, eps_high)
    _check_nbm(nbm_abs_width, nbm_rel_mult)
    _check_inputs(logp, old_logp, adv, mask)
    rescue = _rescue(spec, spec_kw)
    return _token_level(
        logp, old_logp, adv, mask, generator, eps_low, eps_high, rescue, spec_kw, nbm_abs_width, nbm_rel_mult
    )


@OBJECTIVES.register("gspo_nsr")
def gspo_nsr(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    generator: torch.Generator | None = None,
    eps_low: float = 3e-4,  # GSPO paper (v2) §5.1
    eps_high: float = 4e-4,  # GSPO paper (v2) §5.1
    spec: str = "perturb",
    nbm_abs_width: float = 0.05,  # popular summary's band
    nbm_rel_mult: float = 1.5,  # ours
    **spec_kw: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """`gspo` + Near-boundary Stochastic Rescue per sequence (clipping_bottleneck, arXiv 2605.22703).

    Eligibility and the random draw use the sequence ratio s_i, one per sequence, and apply to all
    of its tokens. Same spec/spec_kw as `clip_nsr`; spec "none" is `gspo`.
    """
    _check_eps(eps_low, eps_high)
    _check_nbm(nbm_abs_width, nbm_rel_mult)
    _check_inputs(logp, old_logp, adv, mask)
    rescue = _rescue(spec, spec_kw)
    return _sequence_level(
        logp, old_logp, adv, mask, generator, eps_low, eps_high, rescue, spec_kw, nbm_abs_width, nbm_rel_mult
    )
