"""Measures over many runs at once, for claims that no single pair of arms decides.

    points = run_points(universe, ("drift/mmd2", "final"), ("retention/forgetting", "final"))
    est = rank_correlation(points)                    # Spearman rho, cluster-bootstrap 95% CI
    est = rank_correlation(points, versus=other)      # |rho(x, y)| - |rho(versus, y)|: x predicts y better?
    seeds, changed = config_diff(treatment_records, control_records)

`universe` is paper -> arm -> seed -> record at one scale (every package's canonical records).
A run is one point; runs of one (paper, arm) are not independent draws (they share the arm's
config), so the bootstrap resamples arms, each with all its seeds (a cluster bootstrap), with a
fixed generator: the interval is the same on every machine.

Derived values (`value_of`): `at: change` is final - initial within the run; `retention/forgetting`
of a record that did not log it is computed from its retention curves as eq. 12 defines it (the
mean over retention tasks of step-0 score - final score), so older records enter the analysis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from repro.tables.stats import Estimate

MetricAt = tuple[str, str]  # (metric, at): at in final | change | mean
Record = Mapping[str, Any]
Universe = Mapping[str, Mapping[str, Mapping[int, Record]]]  # paper -> arm -> seed -> record

N_BOOT = 2000
BOOT_SEED = 0
_RETENTION_PREFIX = "eval/retention/"
# Config keys that do not change what a run computes (as repro.provenance's hash leaves them out):
# top-level groups, and dotted leaves (changed_keys; build's mixed-config check uses both).
NOT_COMPUTATION = ("paper", "arm", "paths", "tracking", "hydra", "seed")
NOT_COMPUTATION_LEAVES = ("trainer.threads",)


def _curve(record: Record, metric: str) -> list[float]:
    points = sorted((record.get("curves") or {}).get(metric) or [], key=lambda p: p[0])
    return [float(v) for _, v in points if v is not None and math.isfinite(v)]


def value_of(record: Record, metric: str, at: str) -> float | None:
    """One run's value: `final` (the record's final value, else the curve's last point), `mean`
    over the curve, or `change` = last - first curve point; None when it cannot be computed."""
    curve = _curve(record, metric)
    final = (record.get("final") or {}).get(metric)
    value: float | None = None
    if at == "change":
        value = curve[-1] - curve[0] if len(curve) >= 2 else None
    elif at == "mean":
        value = float(np.mean(curve)) if curve else None
    elif isinstance(final, int | float) and math.isfinite(final):
        value = float(final)
    elif curve:
        value = curve[-1]
    if value is None and metric == "retention/forgetting" and at == "final":
        names = [m for m in (record.get("curves") or {}) if m.startswith(_RETENTION_PREFIX)]
        drops = [c[0] - c[-1] for c in (_curve(record, m) for m in names) if len(c) >= 2]
        value = float(np.mean(drops)) if drops else None
    return value


@dataclass(frozen=True)
class Point:
    """One run in a cross-run analysis."""

    paper: str
    arm: str
    seed: int
    values: tuple[float, ...]  # one per requested metric, in order


def run_points(universe: Universe, *metrics: MetricAt) -> list[Point]:
    """Every run of `universe` that has all of `metrics` (finite), in paper/arm/seed order."""
    out = []
    for paper in sorted(universe):
        for arm in sorted(universe[paper]):
            for seed in sorted(universe[paper][arm]):
                rec = universe[paper][arm][seed]
                values = [value_of(rec, m, at) for m, at in metrics]
                if all(v is not None and math.isfinite(v) for v in values):
                    out.append(Point(paper, arm, seed, tuple(float(v) for v in values)))
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho; NaN for fewer than 3 points or a constant variable."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def _statistic(v: np.ndarray, versus: bool) -> float:
    """rho(x, y) for columns (x, y); |rho(x, y)| - |rho(w, y)| for columns (x, y, w)."""
    rho = spearman(v[:, 0], v[:, 1])
    return abs(rho) - abs(spearman(v[:, 2], v[:, 1])) if versus else rho


def rank_correlation(
    points: Sequence[Point], versus: bool = False, confidence: float = 0.95, n_boot: int = N_BOOT
) -> Estimate:
    """Spearman rho of (x, y) over `points` (values (x, y)), or with `versus` (values (x, y, w))
    |rho(x, y)| - |rho(w, y)|, with a percentile CI from a bootstrap over (paper, arm) clusters.
    `mean` is the statistic on all points, `sd` the bootstrap sd, `n` the number of runs."""
    v = np.array([p.values for p in points], dtype=float).reshape(len(points), 3 if versus else 2)  # (n, k)
    clusters: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(points):
        clusters.setdefault((p.paper, p.arm), []).append(i)
    groups = list(clusters.values())
    point = _statistic(v, versus) if len(points) else math.nan
    if len(groups) < 3 or not math.isfinite(point):
        return Estimate(point, math.nan, len(points), None, ())
    gen = np.random.default_rng(BOOT_SEED)
    boot = []
    for _ in range(n_boot):
        pick = gen.integers(0, len(groups), len(groups))
        rows = np.concatenate([groups[g] for g in pick])
        boot.append(_statistic(v[rows], versus))
    boot = np.array(boot)
    boot = boot[np.isfinite(boot)]  # a resample whose values are all tied has no rank correlation
    if len(boot) < n_boot // 2:
        return Estimate(point, math.nan, len(points), None, ())
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return Estimate(point, float(boot.std(ddof=1)), len(points), (float(lo), float(hi)), (), confidence)


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out |= _leaves(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: node}


def changed_keys(treatment: Mapping[str, Any], control: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Leaf keys (dotted) whose values differ between two recorded configs, with (control value,
    treatment value); keys that do not change the computation (names, paths, seed) are left out."""
    a = _leaves({k: v for k, v in control.items() if k not in NOT_COMPUTATION})
    b = _leaves({k: v for k, v in treatment.items() if k not in NOT_COMPUTATION})
    for key in NOT_COMPUTATION_LEAVES:
        a.pop(key, None), b.pop(key, None)
    missing = object()
    diff = {}
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key, missing), b.get(key, missing)
        if before != after:
            diff[key] = (None if before is missing else before, None if after is missing else after)
    return diff


def config_diff(
    treatment: Mapping[int, Record], control: Mapping[int, Record]
) -> tuple[dict[int, float], dict[str, tuple[Any, Any]]]:
    """Per seed both arms ran: the number of config values that differ between their records
    (`changed_keys`), and the changed keys of the lowest such seed."""
    counts, first = {}, {}
    for seed in sorted(set(treatment) & set(control)):
        diff = changed_keys(treatment[seed].get("config") or {}, control[seed].get("config") or {})
        counts[seed] = float(len(diff))
        first = first or diff
    return counts, first


def fact_estimate(values: Mapping[int, float]) -> Estimate:
    """An estimate of a quantity that is a fact of the configuration, not a draw: its 'interval'
    is the range of the per-seed values (a point when they agree), defined from one seed on."""
    seeds = tuple(sorted(values))
    if not seeds:
        return Estimate(math.nan, math.nan, 0, None, ())
    x = np.array([values[s] for s in seeds])
    return Estimate(float(x.mean()), float(x.std()), len(seeds), (float(x.min()), float(x.max())), seeds)
