"""Seed-level statistics for claim tables: mean ± sd, paired-by-seed effects, one-sample summaries.

Every estimate is a mean over seeds with a Student-t confidence interval (scipy.stats.t). With
fewer than two seeds the sd and the interval are undefined (NaN / None), never zero. `mean_sd`
is the one place a mean ± sd over seeds is computed, `format_mean_sd` the one place it is written.

    >>> round(paired_effect({1: 0.8, 2: 0.7, 3: 0.9}, {1: 0.6, 2: 0.6, 4: 0.5}).mean, 3)  # seeds 1, 2
    0.15
    >>> format_mean_sd(*mean_sd([0.5, 0.7]), fmt="{:.2f}".format)
    '0.60 ± 0.14'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample sd (ddof=1) of per-seed values; (nan, nan) for none, sd nan for one."""
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    mean = float(x.mean())
    return mean, float(x.std(ddof=1)) if x.size > 1 else math.nan


def format_mean_sd(
    mean: float,
    sd: float,
    fmt: Callable[[float], str],
    sd_fmt: Callable[[float], str] | None = None,
    n: int | None = None,
) -> str:
    """`mean ± sd`, the mean through `fmt` and the sd through `sd_fmt` (default `fmt`), then
    ` (n=N)` when `n` is given. What an undefined (nan) sd prints as is up to the formatter."""
    text = f"{fmt(mean)} ± {(sd_fmt or fmt)(sd)}"
    return text if n is None else f"{text} (n={n})"


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
    n = len(seeds)
    mean, sd = mean_sd(values[s] for s in seeds)
    if n < 2:
        return Estimate(mean, sd, n, None, seeds, confidence)
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
