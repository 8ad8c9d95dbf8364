"""Seed-level statistics for claim tables: paired-by-seed effects and one-sample summaries.

Every estimate is a mean over seeds with a Student-t confidence interval (scipy.stats.t). With
fewer than two seeds the sd and the interval are undefined (NaN / None), never zero.

    >>> round(paired_effect({1: 0.8, 2: 0.7, 3: 0.9}, {1: 0.6, 2: 0.6, 4: 0.5}).mean, 3)  # seeds 1, 2
    0.15
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds with sd (ddof=1) and a t confidence interval; `ci` is None when n < 2."""

    mean: float
    sd: float
    n: int
    ci: tuple[float, float] | None
    seeds: tuple[int, ...]
    confidence: float = 0.95

    @property
    def defined(self) -> bool:
        """True when the interval exists (n >= 2)."""
        return self.ci is not None


def summarize(values: Mapping[int, float], confidence: float = 0.95) -> Estimate:
    """One-sample summary of per-seed values {seed: value}: mean ± sd and the t interval."""
    seeds = tuple(sorted(values))
    x = np.array([values[s] for s in seeds], dtype=float)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, 0, None, seeds, confidence)
    mean = float(x.mean())
    if n < 2:
        return Estimate(mean, math.nan, n, None, seeds, confidence)
    sd = float(x.std(ddof=1))
    # CI = mean ± t_{(1+c)/2, n-1} · sd / sqrt(n)
    half = float(stats.t.ppf((1 + confidence) / 2, df=n - 1)) * sd / math.sqrt(n)
    return Estimate(mean, sd, n, (mean - half, mean + half), seeds, confidence)


def paired_effect(
    treatment: Mapping[int, float], control: Mapping[int, float], confidence: float = 0.95
) -> Estimate:
    """Treatment minus control, paired by seed: summarize d_s = treatment[s] - control[s] over the
    seeds present in both (the others are dropped; `Estimate.seeds` says which were used)."""
    common = sorted(set(treatment) & set(control))
    return summarize({s: treatment[s] - control[s] for s in common}, confidence)
