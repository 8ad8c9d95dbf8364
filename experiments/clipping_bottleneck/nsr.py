"""Near-boundary Stochastic Rescue (NSR; Yang et al., arXiv 2605.22703): the paper's rescue rules
and its near-boundary diagnostics, registered on repro's clipped objective (repro.algos.objectives).

An arm departs from its baseline (grpo / dapo / gspo) only by naming a rescue rule in its YAML:

    objective:
      name: clip                      # level token (GRPO/DAPO) or sequence (GSPO), from the baseline
      kw: {rescue: perturb, delta: 0.1}

and every arm of the paper, baselines included, reports the near-boundary diagnostics with
`objective.kw.stats: [near_boundary]`. `repro run` imports this module for the paper's jobs
(repro.runner.import_paper_modules); tests import `experiments.clipping_bottleneck.nsr`.

The paper's exact rule is not public in full (shared/papers/clipping_bottleneck.md, "implement
both candidate specs"); equations below are those of the notes. Which units are eligible is
exactly what hard clipping zeroes (`zeroed_by_clip`: A > 0 and r > 1 + eps_high, or A < 0 and
r < 1 - eps_low), per token on DAPO, per sequence (GSPO's sequence ratio) on GSPO. A rescue
rule returns the gradient weight g of the clipped objective's
    loss_t = -( g r A + (1 - g) sg(min(r A, clip(r) A)) ),
so g = 1 on a zeroed unit restores the unclipped -r A and its gradient; g = 0 everywhere it
zeroes is hard clipping (the baseline).
"""

from __future__ import annotations

import torch
from torch import Tensor

from repro.algos.objectives import CLIP_STATS, RESCUES, Share, Shares, zeroed_by_clip
from repro.errors import ConfigError

# --------------------------------------------------------------------------------------------
# Rescue rules. Inputs are detached; shapes (B, T) (token level) or (B, 1) (sequence level).
# Stochastic rules draw exactly one torch.rand(ratio.shape, generator=generator) per call.
# --------------------------------------------------------------------------------------------


def _check_delta(delta: float) -> None:
    if not 0 <= delta < 1:
        raise ConfigError(f"objective.kw.delta must be in [0, 1), got {delta}")


def perturb_keep_prob(ratio: Tensor, eps_low: float, eps_high: float, delta: float) -> Tensor:
    """P(u * r lands in [1 - eps_low, 1 + eps_high]) for u ~ U(1 - delta, 1 + delta).

    = clip((min(1 + delta, (1 + eps_high) / r) - max(1 - delta, (1 - eps_low) / r)) / (2 delta), 0, 1).
    For a zeroed token above the upper boundary this is the notes' spec 1 keep probability
    p(r) = clip(((1 + eps_high) / r - (1 - delta)) / (2 delta), 0, 1) as long as the noise cannot
    overshoot past the other boundary, i.e. (1 - delta) * r >= 1 - eps_low; with GSPO's tiny eps
    it can, and this form stays exact.
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
    """NSR as the secondary digest describes it (notes, "implement both", spec 1).

    Each zeroed unit draws u ~ U(1 - delta, 1 + delta) and is kept (g = 1) if u * r lands back in
    [1 - eps_low, 1 + eps_high]; expected keep rate `perturb_keep_prob` (the notes' p(r)). Deep
    violations (r > (1 + eps_high) / (1 - delta), or r < (1 - eps_low) / (1 + delta)) are never
    kept. delta = 0 is hard clipping. delta's default 0.1 is ours: the paper is silent.
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
    """NSR as the popular summary describes it (notes, "implement both", spec 2).

    A zeroed unit within band_mult x the threshold (r <= 1 + band_mult * eps_high, or
    r >= 1 - band_mult * eps_low) is kept with probability keep_prob; deeper ones stay zeroed.
    keep_prob = 0 is hard clipping.
    """
    if not band_mult >= 1:
        raise ConfigError(f"objective.kw.band_mult must be >= 1, got {band_mult}")
    if not 0 <= keep_prob <= 1:
        raise ConfigError(f"objective.kw.keep_prob must be in [0, 1], got {keep_prob}")
    zeroed = zeroed_by_clip(ratio, adv, eps_low, eps_high)
    # A zeroed unit lies beyond one boundary, so the two-sided test checks just that side.
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
    """Ablation "deterministic decay" [secondary]: zeroed units get g = p(r), perturb's expected
    keep rate (`perturb_keep_prob`), with no sampling: NSR's implicit gradient decay made explicit."""
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

    Zeroed units stay zeroed. Each in-bound unit draws u ~ U(1 - delta, 1 + delta); it is
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
# Diagnostics the notes ask for: near-boundary mass, rescued and pushed shares.
# --------------------------------------------------------------------------------------------

# The sums whose |A|-weighted totals are used come first: BLAS gemv (MKL) sums rows in blocks of
# 4 and the leftover rows another way, so this order keeps these totals bit-identical to the
# records made when they were rows of one 12-row block.
_NEAR_BOUNDARY = Shares(
    sums=("zeroed", "abs_band", "rel_band", "valid", "rescued", "pushed"),
    fractions={
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
        "rescued_sig": ("rescued_sig", "valid_sig"),
        "rescued_sig_of_clipped": ("rescued_sig", "zeroed_sig"),
        "pushed_frac": ("pushed", "valid"),
    },
)
STAT_NAMES = _NEAR_BOUNDARY.names


@CLIP_STATS.register("near_boundary")
def near_boundary(
    ratio: Tensor,
    log_ratio: Tensor,
    adv: Tensor,
    g: Tensor,
    weight: Tensor,
    eps_low: float,
    eps_high: float,
    *,
    nbm_abs_width: float = 0.05,  # popular summary's "0.05 band"
    nbm_rel_mult: float = 1.5,  # ours
) -> dict[str, Share]:
    """Near-boundary mass (notes, "Diagnostics"): the share of tokens, and of |A|-weighted signal,
    that hard clipping discards within a band just outside the boundary, over all valid tokens and
    over the zeroed ones (`_of_clipped`); plus the rescued and pushed shares of the rule's g.

    Bands: `abs` within nbm_abs_width beyond the boundary (the summary's "28-35% of useful gradient
    signal lies in the 0.05 band"), `rel` within nbm_rel_mult x the threshold. rescued = Σ g over
    zeroed tokens (`rescued_sig`: |A|-weighted, of all signal; `rescued_sig_of_clipped`: of the
    zeroed signal), pushed = Σ (1 - g) over the others. Shapes as `repro.algos.objectives.clip_stats`.
    Each stat is a `Share` (numerator, denominator): the trainer pools them as ratios of sums.
    """
    if not nbm_abs_width > 0:
        raise ConfigError(f"objective.kw.nbm_abs_width must be > 0, got {nbm_abs_width}")
    if not nbm_rel_mult >= 1:
        raise ConfigError(f"objective.kw.nbm_rel_mult must be >= 1, got {nbm_rel_mult}")
    # A is constant within a sequence, so one pass counts each sequence's entries past the boundary
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
    per_entry = torch.stack([lost, lost * above[0], lost * below[0]])  # (3, B, U)
    lost_all, lost_above, lost_below = (per_entry * weight).sum(-1)  # (B,) each
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
            weight.sum(-1),  # valid
            zeroed - not_rescued,  # rescued: Σ g over zeroed tokens
            lost_all - not_rescued,  # pushed: Σ (1 - g) over the other tokens
        ]
    )  # (6, B) in _NEAR_BOUNDARY.sums order
    return _NEAR_BOUNDARY(per_seq, A)
