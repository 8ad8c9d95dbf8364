"""Seed-level statistics for claim tables: mean ± sd, paired-by-seed effects, one-sample summaries,
power, and an item × seed bootstrap.

Every estimate is a mean over seeds with a Student-t confidence interval (scipy.stats.t). With
fewer than two seeds the sd and the interval are undefined (NaN / None), never zero. `mean_sd`
is the one place a mean ± sd over seeds is computed, `format_mean_sd` the one place it is written.

Power (statsmodels' TTestPower, a one-sample t-test on the paired differences, one-sided at
ALPHA = 0.025, POWER = 0.8): `mde(sd, n)` is the smallest true effect n pairs detect with 80%
power, `seeds_needed(effect, sd)` the pairs needed to detect `effect`; `mde_normal(se)` is the
MDE of an estimate whose standard error is known (a rank correlation's bootstrap sd).
`item_seed_bootstrap` is a crossed (items × seeds) percentile bootstrap of a mean difference, via
scipy.stats.bootstrap: with few seeds, a t interval over seeds ignores that the eval items are a
sample too.

    >>> round(paired_effect({1: 0.8, 2: 0.7, 3: 0.9}, {1: 0.6, 2: 0.6, 4: 0.5}).mean, 3)  # seeds 1, 2
    0.15
    >>> format_mean_sd(*mean_sd([0.5, 0.7]), fmt="{:.2f}".format)
    '0.60 ± 0.14'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import stats

ALPHA = 0.025  # one-sided (= the 95% two-sided interval's tail on the predicted side)
POWER = 0.8
MAX_SEEDS = 2**20  # seeds_needed beyond this: inf


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
    ` (n=N)` when `n` is given; one value (n=1) has no sd and prints as `mean (n=1)`. What an
    undefined (nan) sd prints as otherwise is up to the formatter."""
    if n == 1:
        return f"{fmt(mean)} (n=1)"
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


@cache
def _detectable_d(n: int, alpha: float, power: float) -> float:
    from statsmodels.stats.power import TTestPower

    return float(TTestPower().solve_power(nobs=n, alpha=alpha, power=power, alternative="larger"))


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable effect of n paired seeds whose differences have sd `sd`: the effect a
    one-sided paired t-test at `alpha` detects with probability `power` (NaN below 2 pairs)."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return _detectable_d(n, alpha, power) * sd


def mde_normal(se: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable effect of an estimate with standard error `se` under a normal test,
    (z_{1-alpha} + z_power) * se: for statistics whose se is a bootstrap sd (rank correlations),
    where no paired t-test applies. NaN without an se."""
    if not math.isfinite(se):
        return math.nan
    return float(stats.norm.ppf(1 - alpha) + stats.norm.ppf(power)) * se


def seeds_needed(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Pairs a one-sided paired t-test needs to detect `effect` with `power` when the differences
    have sd `sd`: the smallest integer n >= 2 whose power (statsmodels) reaches `power`; inf beyond
    MAX_SEEDS; NaN when undefined (no effect to detect, or no sd)."""
    from statsmodels.stats.power import TTestPower

    if not (effect > 0 and math.isfinite(sd)):
        return math.nan
    if sd == 0:
        return 2

    def enough(n: int) -> bool:
        return TTestPower().power(effect / sd, nobs=float(n), alpha=alpha, alternative="larger") >= power

    hi = 2
    while not enough(hi):  # doubling, then bisection: power grows with n
        hi *= 2
        if hi > MAX_SEEDS:
            return math.inf
    lo = hi // 2 if hi > 2 else 1  # enough(hi), not enough(lo) (or lo < 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def item_bootstrap(
    diffs: np.ndarray, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of the mean of one seed's per-item `diffs` (items,), resampling items only:
    the eval set's share of the uncertainty of a single-seed estimate (the seed's is not in it)."""
    diffs = np.asarray(diffs, dtype=float)
    if diffs.ndim != 1 or diffs.size < 2:
        raise ValueError(f"item_bootstrap: needs one seed's >= 2 item values, got shape {diffs.shape}")
    res = stats.bootstrap(
        (diffs,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def item_seed_bootstrap(
    diffs: np.ndarray, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of the mean of `diffs` (seeds, items) resampling seeds and items independently
    (a crossed bootstrap: both are samples from larger populations). Needs >= 2 of each."""
    diffs = np.asarray(diffs, dtype=float)  # (S, I)
    S, I = diffs.shape
    if S < 2 or I < 2:
        raise ValueError(f"item_seed_bootstrap: needs >= 2 seeds and >= 2 items, got {S} x {I}")

    def statistic(seeds: np.ndarray, items: np.ndarray) -> float:
        return float(diffs[np.ix_(seeds.astype(int), items.astype(int))].mean())

    res = stats.bootstrap(
        (np.arange(S), np.arange(I)),
        statistic,
        paired=False,
        vectorized=False,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)
