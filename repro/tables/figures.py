"""PNG figures for a paper's comparison table (matplotlib, Agg backend).

Per scale: one curve plot per training curve claimed.yaml names (`curves:`, default
DEFAULT_CURVES) that some run logged (arms as lines: mean over seeds, band = min–max over seeds),
one bar chart of every effect/change claim's mean with its 95% CI (coloured by verdict, with the
paper's effect, min_effect and the MDE where known), and the figures claimed.yaml
declares (`figures:`: scatter of two final values, or bars of final values per arm).
Arms sharing a base name (`sft`, `sft_lora`, ...) share a colour; the suffix sets the line style.
Called by `repro.tables.build.write_tables`; files are `fig_<scale>_<name>.png`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from repro.io import atomic_path  # noqa: E402
from repro.tables.claims import DEFAULT_CURVES, ArmRecords, ClaimResult, FigureSpec, metric_value  # noqa: E402
from repro.tables.stats import mean_sd  # noqa: E402

VERDICT_COLOURS = {
    "reproduced": "tab:green",
    "direction only": "tab:olive",
    "not reproduced": "tab:red",
    "inconclusive": "tab:gray",
    "underpowered": "tab:purple",
    "untestable at this scale": "tab:brown",
}
_FAMILIES = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys", "GnBu", "PuRd")
_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 1)), (0, (3, 1, 1, 1, 1, 1)))


def arm_styles(arms: Sequence[str]) -> dict[str, dict]:
    """Colour family by base name (the part before the first `_`), shade by position within the
    family (the plain arm darkest), line style by suffix: `sft` and `sft_lora` share a hue,
    `rl_lora` and `sft_lora` share a dash. Stable for a given set of arm names."""
    arms = sort_arms(arms)
    bases = sorted({a.split("_", 1)[0] for a in arms})
    suffixes = sorted({a.partition("_")[2] for a in arms})
    styles = {}
    for arm in arms:
        base, _, suffix = arm.partition("_")
        family = [a for a in arms if a.split("_", 1)[0] == base]
        cmap = plt.get_cmap(_FAMILIES[bases.index(base) % len(_FAMILIES)])
        shade = 0.9 - 0.45 * family.index(arm) / max(len(family) - 1, 1)
        styles[arm] = {
            "color": cmap(shade),
            "linestyle": _LINESTYLES[suffixes.index(suffix) % len(_LINESTYLES)],
        }
    return styles


def sort_arms(arms: Sequence[str]) -> list[str]:
    """Base name first, the plain arm before its variants."""
    return sorted(arms, key=lambda a: (a.split("_", 1)[0], "_" in a, a))


def _save(fig: plt.Figure, path: Path) -> Path:
    # Atomic: render to a temp file in the same folder, then rename over the target.
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return path


def _seed_curves(records: Mapping[int, Mapping], metric: str) -> dict[int, dict[int, float]]:
    out = {}
    for seed, rec in records.items():
        points = (rec.get("curves") or {}).get(metric)
        if points:
            out[seed] = {int(s): float(v) for s, v in points if v is not None and math.isfinite(v)}
    return out


def curve_figure(records: ArmRecords, metric: str, scale: str, path: Path) -> Path | None:
    """Mean over seeds per arm with a min–max band; None (nothing written) if no record has `metric`."""
    per_arm = {arm: _seed_curves(recs, metric) for arm, recs in records.items()}
    per_arm = {arm: c for arm, c in per_arm.items() if c}
    if not per_arm:
        return None
    styles = arm_styles(list(records))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for arm in sort_arms(list(per_arm)):
        curves = per_arm[arm]
        steps = sorted(set().union(*curves.values()))
        # Seeds may log different steps; each step aggregates the seeds that have it.
        vals = [[c[s] for c in curves.values() if s in c] for s in steps]
        mean = np.array([np.mean(v) for v in vals])
        lo = np.array([np.min(v) for v in vals])
        hi = np.array([np.max(v) for v in vals])
        st = styles[arm]
        ax.plot(steps, mean, label=f"{arm} (n={len(curves)})", lw=1.6, **st)
        if len(curves) > 1:
            ax.fill_between(steps, lo, hi, color=st["color"], alpha=0.12, lw=0)
    ax.set_title(f"{metric} — scale {scale}\nline: mean over seeds; band: min–max over seeds")
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _save(fig, path)


def run_curves_figure(
    curves: Mapping[str, Sequence[Sequence[float]]], title: str, path: Path, max_panels: int = 6
) -> Path | None:
    """One run's curves, one small panel per metric (DEFAULT_CURVES first, then by name, at most
    `max_panels`): the figure attached to a run in MLflow. None if nothing was logged. Plain
    layout, low resolution: it is drawn for every run, so it must be cheap."""
    names = [m for m in DEFAULT_CURVES if curves.get(m)]
    names += sorted(m for m in curves if curves[m] and m not in names)
    names = names[:max_panels]
    if not names:
        return None
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.4 * rows + 0.4), squeeze=False)
    for ax, name in zip(axes.flat, names):
        points = [(s, v) for s, v in curves[name] if v is not None and math.isfinite(v)]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, marker="." if len(points) < 30 else None, color="tab:blue")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(
        left=0.08, right=0.98, bottom=0.1, top=1 - 0.5 / (2.4 * rows + 0.4), hspace=0.5, wspace=0.3
    )
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=72, format="png")
    finally:
        plt.close(fig)
    return path


def _predicted(r: ClaimResult) -> str:
    m = r.claim.measure
    if m.direction == 0:
        return "pred. ≈ 0" if m.better == 0 else "pred. no gain"
    return "pred. > 0" if m.direction > 0 else "pred. < 0"


def effects_figure(results: Sequence[ClaimResult], scale: str, path: Path) -> Path | None:
    """Horizontal bars: each effect/change claim's mean with its 95% CI, coloured by verdict; the
    paper's effect where the claim gives one in the metric's units (`range`, a shaded span); the
    claim's min_effect (a tick on the predicted side) and the design's MDE (a dotted line).
    Claims without an effect size (not run, no finite estimate) are left out; None if none remain."""
    rows = [
        r
        for r in results
        if r.claim.measure.kind in ("effect", "change")
        and r.estimate is not None
        and r.estimate.n > 0
        and math.isfinite(r.estimate.mean)
    ]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 0.55 * len(rows) + 1.8))
    y = np.arange(len(rows))[::-1]
    drawn = {"paper": False, "min": False, "mde": False}
    for yi, r in zip(y, rows):
        est, m = r.estimate, r.claim.measure
        if m.range is not None:
            ax.fill_betweenx([yi - 0.4, yi + 0.4], *m.range, color="tab:blue", alpha=0.15, lw=0)
            drawn["paper"] = True
        colour = VERDICT_COLOURS.get(r.verdict, "tab:gray")
        hatch = "//" if r.verdict == "untestable at this scale" else None
        ax.barh(yi, est.mean, color=colour, alpha=0.6, height=0.6, hatch=hatch)
        if est.ci is not None:
            lo, hi = est.ci
            xerr = [[est.mean - lo], [hi - est.mean]]
            ax.errorbar(est.mean, yi, xerr=xerr, fmt="none", ecolor="k", capsize=3)
        side = m.direction if m.direction != 0 else (m.better or 1)
        if m.min_effect > 0:
            ax.plot([side * m.min_effect] * 2, [yi - 0.35, yi + 0.35], color="k", lw=1.2)
            drawn["min"] = True
        if r.power is not None and math.isfinite(r.power.mde):
            ax.plot([side * r.power.mde] * 2, [yi - 0.35, yi + 0.35], color="k", lw=1, ls=":")
            drawn["mde"] = True
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_yticks(y)
    labels = [
        f"{r.claim.id}\n{r.claim.measure.metric_at(r.scale)}, {_predicted(r)} (n={r.estimate.n})"
        for r in rows
    ]
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("effect (treatment − control, or final − init), in each metric's own units")
    ax.set_title(f"Claimed effects — scale {scale}\nbar: mean over paired seeds; whisker: 95% CI")
    present = [v for v in VERDICT_COLOURS if any(r.verdict == v for r in rows)]
    handles = [
        plt.Rectangle(
            (0, 0), 1, 1, color=VERDICT_COLOURS[v], alpha=0.6, hatch="//" if "untestable" in v else None
        )
        for v in present
    ]
    labels = list(present)
    if drawn["paper"]:
        handles.append(plt.Rectangle((0, 0), 1, 1, color="tab:blue", alpha=0.15))
        labels.append("paper's effect (claimed range)")
    if drawn["min"]:
        handles.append(plt.Line2D([], [], color="k", lw=1.2))
        labels.append("min_effect (predicted side)")
    if drawn["mde"]:
        handles.append(plt.Line2D([], [], color="k", lw=1, ls=":"))
        labels.append("MDE at 80% power")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _finals(records: Mapping[int, Mapping], metric: str) -> dict[int, float]:
    """seed -> final value of `metric`, for the seeds that have one."""
    values = {seed: metric_value(rec, metric, "final") for seed, rec in records.items()}
    return {seed: v for seed, v in values.items() if v is not None}


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sd (ddof=1) for error bars; a single seed draws no bar (sd 0)."""
    mean, sd = mean_sd(values)
    return mean, sd if len(values) > 1 else 0.0


def scatter_figure(records: ArmRecords, x: str, y: str, scale: str, path: Path) -> Path | None:
    """Final y against final x: a translucent dot per seed, the arm's mean ± sd (both axes) as a
    cross, arm names annotated. Seeds lacking either value are left out; None if no arm remains."""
    points = {}
    for arm, recs in records.items():
        xs, ys = _finals(recs, x), _finals(recs, y)
        seeds = sorted(set(xs) & set(ys))
        if seeds:
            points[arm] = (np.array([xs[s] for s in seeds]), np.array([ys[s] for s in seeds]))  # (n,), (n,)
    if not points:
        return None
    styles = arm_styles(list(records))
    fig, ax = plt.subplots(figsize=(7, 5))
    for arm in sort_arms(list(points)):
        px, py = points[arm]
        colour = styles[arm]["color"]
        ax.scatter(px, py, s=16, color=colour, alpha=0.4, lw=0, zorder=3)
        (mx, sx), (my, sy) = _mean_sd(px), _mean_sd(py)
        ax.errorbar(
            mx,
            my,
            xerr=sx,
            yerr=sy,
            fmt="o",
            ms=6,
            color=colour,
            capsize=3,
            label=f"{arm} (n={len(px)})",
        )
        ax.annotate(arm, (mx, my), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.set_title(f"{y} vs {x} — scale {scale}\ndots: seeds; marker and whiskers: arm mean ± sd")
    ax.set_xlabel(f"{x} (final)")
    ax.set_ylabel(f"{y} (final)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _save(fig, path)


def bars_figure(records: ArmRecords, metrics: Sequence[str], scale: str, path: Path) -> Path | None:
    """One panel per metric: each arm's final mean ± sd as a bar, seeds as dots. An arm without a
    value of a metric gets no bar in that panel; None if no arm has any of the metrics."""
    per_metric = {m: {arm: _finals(recs, m) for arm, recs in records.items()} for m in metrics}
    arms = sort_arms([a for a in records if any(per_metric[m][a] for m in metrics)])
    if not arms:
        return None
    styles = arm_styles(list(records))
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(0.6 * len(arms) * len(metrics) + 2.5, 4.2), squeeze=False
    )
    for ax, m in zip(axes[0], metrics):
        for i, arm in enumerate(arms):
            values = list(per_metric[m][arm].values())
            if not values:
                continue
            colour = styles[arm]["color"]
            mean, sd = _mean_sd(values)
            ax.bar(i, mean, yerr=sd, color=colour, alpha=0.7, capsize=3)
            ax.scatter(np.full(len(values), i), values, s=12, color="k", alpha=0.6, zorder=3)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks(range(len(arms)))
        ax.set_xticklabels(arms, rotation=45, ha="right", fontsize=8)
        ax.set_title(m, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Final values per arm — scale {scale}; bar: mean ± sd over seeds, dots: seeds", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def metric_slug(metric: str) -> str:
    return metric.replace("/", "_")


def write_figures(
    records: ArmRecords,
    results: Sequence[ClaimResult],
    scale: str,
    out_dir: Path,
    specs: Sequence[FigureSpec] = (),
    curves: Sequence[str] | None = None,
) -> list[tuple[str, Path]]:
    """All figures of one scale into out_dir: training `curves` (None: DEFAULT_CURVES), claimed
    effects, then the declared ones (`specs`); returns (caption, path) for those written (a figure
    with no data is skipped)."""
    written = []
    for metric in DEFAULT_CURVES if curves is None else curves:
        p = curve_figure(records, metric, scale, out_dir / f"fig_{scale}_{metric_slug(metric)}.png")
        if p is not None:
            written.append((f"{metric} per arm ({scale})", p))
    p = effects_figure(results, scale, out_dir / f"fig_{scale}_effects.png")
    if p is not None:
        written.append((f"claimed effects with 95% CI ({scale})", p))
    for spec in specs:
        path = out_dir / f"fig_{scale}_{spec.name}.png"
        if spec.kind == "scatter":
            x, y = spec.metrics
            p = scatter_figure(records, x, y, scale, path)
            caption = f"{spec.name}: {y} vs {x} per seed and arm ({scale})"
        else:
            p = bars_figure(records, spec.metrics, scale, path)
            caption = f"{spec.name}: {', '.join(spec.metrics)} per arm ({scale})"
        if p is not None:
            written.append((caption, p))
    return written
