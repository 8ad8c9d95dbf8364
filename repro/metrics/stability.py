"""Stability of a training curve: its peak, what is left of it at the end, and when it collapsed.

    stability_summary(steps, values) -> {stability/peak, peak_step, end_over_peak, collapsed, collapse_step}

Collapse, as CIRCA's stability figure reads it (Joarder et al. 2026): the first evaluation after the
peak below half of the peak. Retention = last value / peak.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def stability_summary(
    steps: Sequence[int], values: Sequence[float], prefix: str = "stability"
) -> dict[str, float]:
    """Peak (max over every evaluation, step 0 included), its step, end/peak (NaN when the peak is
    0), whether and when the curve first fell below half its peak after it (collapse_step NaN if never)."""
    pts = [(s, v) for s, v in zip(steps, values) if v is not None and math.isfinite(v)]
    if not pts:
        nan = float("nan")
        return {
            f"{prefix}/{k}": nan for k in ("peak", "peak_step", "end_over_peak", "collapsed", "collapse_step")
        }
    peak_step, peak = max(pts, key=lambda p: (p[1], -p[0]))  # the earliest of equal peaks
    after = [s for s, v in pts if s > peak_step and v < peak / 2]
    return {
        f"{prefix}/peak": peak,
        f"{prefix}/peak_step": float(peak_step),
        f"{prefix}/end_over_peak": pts[-1][1] / peak if peak > 0 else float("nan"),
        f"{prefix}/collapsed": float(bool(after)),
        f"{prefix}/collapse_step": float(after[0]) if after else float("nan"),
    }
