"""Slow, obvious references for the NSR rescue rules and diagnostics (experiments/clipping_bottleneck/
nsr.py), one element at a time, given the U(0, 1) draws the fast version makes."""

from __future__ import annotations

import math

import torch
from algos.reference import zeroed
from torch import Tensor


def keep_prob(r: float, eps_low: float, eps_high: float, delta: float) -> float:
    """|[1 - delta, 1 + delta] ∩ [(1 - eps_low) / r, (1 + eps_high) / r]| / (2 delta)."""
    if delta == 0:
        return 1.0 if 1 - eps_low <= r <= 1 + eps_high else 0.0
    overlap = min(1 + delta, (1 + eps_high) / r) - max(1 - delta, (1 - eps_low) / r)
    return min(max(overlap / (2 * delta), 0.0), 1.0)


def rescue_g(
    spec: str, ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float, u01: Tensor | None, **kw: float
) -> Tensor:
    """g for every element of ratio/adv (same shape) under `spec`, one element at a time."""
    flat_r, flat_a = ratio.reshape(-1).tolist(), adv.reshape(-1).tolist()
    flat_u = u01.reshape(-1).tolist() if u01 is not None else [None] * len(flat_r)
    out = []
    for r, A, u in zip(flat_r, flat_a, flat_u):
        z = zeroed(r, A, eps_low, eps_high)
        delta = kw.get("delta", 0.1)
        if spec == "none":
            g = 0.0 if z else 1.0
        elif spec == "decay":
            g = keep_prob(r, eps_low, eps_high, delta) if z else 1.0
        elif spec == "perturb":
            moved = ((1 - delta) + 2 * delta * u) * r
            g = (1.0 if 1 - eps_low <= moved <= 1 + eps_high else 0.0) if z else 1.0
        elif spec == "band":
            near = 1 - kw.get("band_mult", 1.5) * eps_low <= r <= 1 + kw.get("band_mult", 1.5) * eps_high
            g = (1.0 if near and u < kw.get("keep_prob", 0.2) else 0.0) if z else 1.0
        elif spec == "push_only":
            moved = ((1 - delta) + 2 * delta * u) * r
            in_bound = 1 - eps_low <= r <= 1 + eps_high
            pushed = in_bound and ((A > 0 and moved > 1 + eps_high) or (A < 0 and moved < 1 - eps_low))
            g = 0.0 if z or pushed else 1.0
        else:
            raise KeyError(spec)
        out.append(g)
    return torch.tensor(out, dtype=ratio.dtype).reshape(ratio.shape)


def near_boundary(
    ratio: Tensor,
    adv: Tensor,
    g: Tensor,
    mask: Tensor,
    eps_low: float,
    eps_high: float,
    nbm_abs_width: float = 0.05,
    nbm_rel_mult: float = 1.5,
) -> dict[str, float]:
    """Every stat of nsr.near_boundary, over the valid tokens one by one.

    ratio and g are per token (B, T) (at sequence level: the sequence's value on each of its tokens).
    """
    keys = "valid valid_sig zeroed zeroed_sig abs abs_sig rel rel_sig rescued rescued_sig pushed"
    n = dict.fromkeys(keys.split(), 0.0)
    B, T = mask.shape
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            r, A, gt = float(ratio[b, t]), float(adv[b]), float(g[b, t])
            n["valid"] += 1
            n["valid_sig"] += abs(A)
            if zeroed(r, A, eps_low, eps_high):
                n["zeroed"] += 1
                n["zeroed_sig"] += abs(A)
                n["rescued"] += gt
                n["rescued_sig"] += gt * abs(A)
                if 1 - eps_low - nbm_abs_width <= r <= 1 + eps_high + nbm_abs_width:
                    n["abs"] += 1
                    n["abs_sig"] += abs(A)
                if 1 - nbm_rel_mult * eps_low <= r <= 1 + nbm_rel_mult * eps_high:
                    n["rel"] += 1
                    n["rel_sig"] += abs(A)
            else:
                n["pushed"] += 1 - gt

    def frac(num: str, den: str) -> float:
        return n[num] / n[den] if n[den] > 0 else math.nan  # nothing eligible: undefined

    return {
        "nbm_abs_tok": frac("abs", "valid"),
        "nbm_abs_tok_of_clipped": frac("abs", "zeroed"),
        "nbm_abs_sig": frac("abs_sig", "valid_sig"),
        "nbm_abs_sig_of_clipped": frac("abs_sig", "zeroed_sig"),
        "nbm_rel_tok": frac("rel", "valid"),
        "nbm_rel_tok_of_clipped": frac("rel", "zeroed"),
        "nbm_rel_sig": frac("rel_sig", "valid_sig"),
        "nbm_rel_sig_of_clipped": frac("rel_sig", "zeroed_sig"),
        "rescued_frac": frac("rescued", "valid"),
        "rescued_frac_of_clipped": frac("rescued", "zeroed"),
        "rescued_sig": frac("rescued_sig", "valid_sig"),
        "rescued_sig_of_clipped": frac("rescued_sig", "zeroed_sig"),
        "pushed_frac": frac("pushed", "valid"),
    }
