"""A paper's claims (`paper_tables/<slug>/claimed.yaml`) and their verdicts against run records.

Schema of claimed.yaml:

    paper: "Title (Authors)"
    arxiv: "2605.22703"
    arms: [grpo, dapo, dapo_nsr]          # every arm a claim, table row or figure may name
    metrics: [eval/gsm8k/acc]             # optional: metric names beyond KNOWN_METRICS
    claims:
      - id: nsr_dapo_id                   # unique; used in figures and error messages
        text: NSR on top of DAPO raises accuracy.          # one sentence
        claimed: "+4.93 Pass@1 points at 7B"               # the paper's number/statement
        source: "[abstract]"              # Table 2 / Fig. 3 / §4.1 / [abstract] / [secondary]
        summary:                          # optional: the popular summary's version, if it differs
          {value: "4-7% gains", source: "popular summary", correction: "no 141B model"}
        measure: {kind: effect, metric: eval/id/greedy_acc, treatment: dapo_nsr, control: dapo,
                  at: final, direction: 1, min_effect: 0.02}
    summary_only:                         # optional: popular-summary statements nothing measures
      - {value: "one SFT epoch, then three RL iterations", source: "popular summary",
         correction: "not in the paper"}   # value and correction required, source optional
    table:                                # optional: the paper's results table vs ours
      title: "Table 2: GSM8K target; TruthfulQA retention"
      source: "Table 2"                   # optional
      columns:                            # unique names; metric per scale, or one string for all
        - {name: GSM8K, metric: {micro: eval/id/greedy_acc, small: eval/gsm8k/acc}}
        - {name: MMD, metric: drift_policy/mmd2}
      rows:                               # arm -> {column name: paper's value or null}, in order
        base: {GSM8K: 0.448, MMD: null}
        rl: {GSM8K: 0.472}
    figures:                              # optional: per scale, fig_<scale>_<name>.png
      - {name: target_vs_retention, kind: scatter, x: retention/ratio, y: eval/id/greedy_acc}
      - {name: forgetting, kind: bars, metrics: [retention/forgetting, retention/ratio]}

Measures (`at`: `final` value, `mean` over the logged curve, or `init` = first logged value;
`metric` is one name, or {scale: name} where a scale's task logs it under another name — a scale
the mapping leaves out is "not run" for that claim):
    effect  treatment − control, paired by seed.  metric, treatment, control, direction,
            min_effect; optional at (default final), range, better.
    change  final − init within one arm, per seed.  metric, arm, direction, min_effect;
            optional range, better.
    value   an arm's mean over seeds vs the claimed `range`.  metric, arm, range; optional at.
`direction` is the sign the claim predicts (+1/−1), or 0 for "no (helpful) effect", where
`better` (default +1, only with direction 0) is the sign that would mean the treatment helps;
`better: 0` makes it an equivalence claim ("no difference either way"): the whole CI within ±min_effect.
`range` is the claimed magnitude in the metric's own units; give it only when comparable.
Verdict rules: see VERDICTS.

The results table shows, per scale with runs, each listed arm's paper value beside `final[metric]`
as mean ± sd over its canonical seeds. Figures read `final[...]` of every seed: `scatter` plots
y against x (a dot per seed, the arm's mean ± sd as a cross); `bars` draws one panel per metric
(arm mean ± sd, seeds as dots).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from repro.errors import ConfigError
from repro.tables.stats import Estimate, paired_effect, summarize

# Metrics the GRPO trainer and the evaluators log, plus the oscillation summaries in `final`.
_TRAIN = (
    "reward_mean reward_std entropy loss grad_norm kl_k3 ratio_dev clipfrac clipfrac_high_pos_adv "
    "clipfrac_high_neg_adv clipfrac_low_pos_adv clipfrac_low_neg_adv nbm_abs_tok nbm_abs_tok_of_clipped "
    "nbm_abs_sig nbm_abs_sig_of_clipped nbm_rel_tok nbm_rel_tok_of_clipped nbm_rel_sig "
    "nbm_rel_sig_of_clipped rescued_frac rescued_frac_of_clipped"
).split()
_EVAL = (
    "id/greedy_acc id/sample_acc ood/greedy_acc ood/sample_acc retention/facts_acc retention/truths_acc"
).split()
# osc/<name> = std (ddof=0) of the step-to-step changes of the curve it summarizes.
OSC_SOURCES = {"osc/reward": "train/reward_mean", "osc/id_acc": "eval/id/greedy_acc"}
# Forgetting/retention vs the step-0 evaluation (eq. 12) and state drift vs the base model's states
# (repro.metrics.drift.drift_report): drift/* of the training states, drift_policy/* of the policy's own.
_RETENTION = ("retention/forgetting", "retention/ratio")
_DRIFT = ("mmd2", "centroid", "sliced_w1", "jaccard")
KNOWN_METRICS = frozenset(
    [f"train/{m}" for m in _TRAIN]
    + ["rollout/len_mean"]
    + [f"eval/{m}" for m in _EVAL]
    + list(OSC_SOURCES)
    + list(_RETENTION)
    + [f"{p}/{m}" for p in ("drift", "drift_policy") for m in _DRIFT]
)

NOT_RUN, INCONCLUSIVE, REPRODUCED, DIRECTION_ONLY, NOT_REPRODUCED = (
    "not run",
    "inconclusive",
    "reproduced",
    "direction only",
    "not reproduced",
)
VERDICTS = {
    REPRODUCED: "the 95% CI excludes 0 on the predicted side, reaches beyond min_effect, and overlaps "
    "the claimed range if one is given; for a value claim, the CI overlaps the claimed range; for a "
    "'no effect' claim (direction 0), the CI rules out a helpful effect of min_effect or more; for a "
    "'no difference' claim (better 0), the CI lies within ±min_effect.",
    DIRECTION_ONLY: "the CI excludes 0 on the predicted side but misses the claimed range.",
    NOT_REPRODUCED: "the CI rules out an effect of min_effect or more in the predicted direction (it lies "
    "on the wrong side of 0, or within ±min_effect); for a value claim, the CI misses the claimed "
    "range; for a 'no effect' claim, the CI excludes 0 on the helping side; for a 'no difference' "
    "claim, the CI lies wholly above +min_effect or wholly below −min_effect.",
    INCONCLUSIVE: "fewer than 2 usable seeds (no CI), or the CI contains 0 and reaches beyond ±min_effect "
    "(for a 'no difference' claim: the CI crosses +min_effect or −min_effect).",
    NOT_RUN: "no finished canonical run at this scale for an arm the claim needs.",
}

KINDS = {
    # kind: (required measure keys, optional measure keys)
    "effect": ({"metric", "treatment", "control", "direction", "min_effect"}, {"at", "range", "better"}),
    "change": ({"metric", "arm", "direction", "min_effect"}, {"range", "better"}),
    "value": ({"metric", "arm", "range"}, {"at"}),
}
AT = {"final", "mean", "init"}
FIGURE_KINDS = {
    # kind: keys besides name and kind
    "scatter": {"x", "y"},
    "bars": {"metrics"},
}
_CLAIM_KEYS = ({"id", "text", "claimed", "source", "measure"}, {"summary"})
_TOP_KEYS = ({"paper", "arxiv", "arms", "claims"}, {"metrics", "summary_only", "table", "figures"})
_FIGURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

Record = Mapping[str, Any]
ArmRecords = Mapping[str, Mapping[int, Record]]  # arm -> seed -> record, one scale


@dataclass(frozen=True)
class Measure:
    """What to compute from the records for one claim (see the module docstring)."""

    kind: str
    metric: str | Mapping[str, str]  # one name for every scale, or scale -> name
    treatment: str | None = None
    control: str | None = None
    arm: str | None = None
    at: str = "final"
    direction: int = 1
    better: int = 1
    min_effect: float = 0.0
    range: tuple[float, float] | None = None

    @property
    def arms(self) -> tuple[str, ...]:
        """The arms whose records the measure needs."""
        if self.kind == "effect":
            return (self.treatment, self.control)  # type: ignore[return-value]
        return (self.arm,)  # type: ignore[return-value]

    def metric_at(self, scale: str) -> str | None:
        """The metric judged at `scale`; None if the claim names none there."""
        return self.metric if isinstance(self.metric, str) else self.metric.get(scale)

    def describe(self, scale: str | None = None) -> str:
        """Short human description, e.g. `Δ eval/id/greedy_acc (final): dapo_nsr − dapo`."""
        metric = self.metric_at(scale) if scale is not None else self.metric
        if not isinstance(metric, str):
            metric = " | ".join(f"{k}: {v}" for k, v in metric.items()) if metric else "–"
        if self.kind == "effect":
            return f"Δ {metric} ({self.at}): {self.treatment} − {self.control}"
        if self.kind == "change":
            return f"{metric}: final − init, {self.arm}"
        return f"{metric} ({self.at}), {self.arm}"


@dataclass(frozen=True)
class SummaryClaim:
    """The popular summary's version of a claim and what the sources say instead."""

    value: str
    source: str = ""
    correction: str = ""


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    claimed: str
    source: str
    measure: Measure
    summary: SummaryClaim | None = None


@dataclass(frozen=True)
class TableColumn:
    """One column of the results table: `metric` is one name for every scale, or scale -> name."""

    name: str
    metric: str | Mapping[str, str]

    def metric_at(self, scale: str) -> str | None:
        """The metric this column shows at `scale`; None if the column has none there."""
        return self.metric if isinstance(self.metric, str) else self.metric.get(scale)


@dataclass(frozen=True)
class ResultsTable:
    """The paper's results table: per arm (in file order), the paper's value of each column or None."""

    title: str
    source: str
    columns: tuple[TableColumn, ...]
    rows: tuple[tuple[str, Mapping[str, float | None]], ...]


@dataclass(frozen=True)
class FigureSpec:
    """A declared figure of `final` values. `metrics`: (x, y) for scatter, one per panel for bars."""

    name: str
    kind: str
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class ClaimedPaper:
    """A parsed claimed.yaml."""

    slug: str
    paper: str
    arxiv: str
    arms: tuple[str, ...]
    metrics: frozenset[str]
    claims: tuple[Claim, ...]
    summary_only: tuple[SummaryClaim, ...] = ()
    table: ResultsTable | None = None
    figures: tuple[FigureSpec, ...] = ()


@dataclass(frozen=True)
class ClaimResult:
    """One claim judged at one scale. `run_ids` maps arm -> run ids of the records used."""

    claim: Claim
    scale: str
    verdict: str
    estimate: Estimate | None
    run_ids: dict[str, list[str]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Parsing and validation


def _check_keys(obj: Any, required: set[str], optional: set[str], where: str) -> None:
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(obj).__name__}")
    missing = sorted(required - set(obj))
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(obj) - required - optional)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {allowed}")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _sign(value: Any, allowed: tuple[int, ...], where: str) -> int:
    if isinstance(value, bool) or value not in allowed:
        raise ConfigError(f"{where}: expected one of {', '.join(map(str, allowed))}, got {value!r}")
    return int(value)


def _check_metric(metric: Any, metrics: frozenset[str], where: str) -> str:
    if not isinstance(metric, str) or metric not in metrics:
        raise ConfigError(
            f"{where}: unknown metric {metric!r}; add it to the file's `metrics:` list if the "
            f"trainer logs it. Known: {', '.join(sorted(metrics))}"
        )
    return metric


def _metric_spec(metric: Any, metrics: frozenset[str], where: str) -> str | dict[str, str]:
    """A metric name, or a mapping scale -> metric name (each checked)."""
    if isinstance(metric, Mapping):
        if not metric:
            raise ConfigError(f"{where}: empty mapping; give scale: metric pairs or one metric")
        return {str(k): _check_metric(v, metrics, f"{where}.{k}") for k, v in metric.items()}
    return _check_metric(metric, metrics, where)


def _parse_measure(raw: Any, cid: str, arms: tuple[str, ...], metrics: frozenset[str], where: str) -> Measure:
    where = f"{where}: claim '{cid}': measure"
    if not isinstance(raw, Mapping) or raw.get("kind") not in KINDS:
        got = raw.get("kind") if isinstance(raw, Mapping) else raw
        raise ConfigError(f"{where}.kind: expected one of {', '.join(KINDS)}, got {got!r}")
    kind = raw["kind"]
    required, optional = KINDS[kind]
    _check_keys(raw, required | {"kind"}, optional, where)

    metric = _metric_spec(raw["metric"], metrics, f"{where}.metric")
    for key in ("treatment", "control", "arm"):
        if key in raw and raw[key] not in arms:
            raise ConfigError(
                f"{where}.{key}: unknown arm {raw[key]!r}; arms declared in `arms:`: {', '.join(arms)}"
            )
    if kind == "effect" and raw["treatment"] == raw["control"]:
        raise ConfigError(f"{where}: treatment and control are the same arm {raw['treatment']!r}")

    at = raw.get("at", "final")
    allowed_at = {"final", "mean"} if kind == "value" else AT
    if at not in allowed_at:
        raise ConfigError(f"{where}.at: expected one of {', '.join(sorted(allowed_at))}, got {at!r}")
    osc = [m for m in ([metric] if isinstance(metric, str) else metric.values()) if m in OSC_SOURCES]
    if osc and at != "final":
        raise ConfigError(f"{where}.at: {osc[0]} summarizes a whole run; only `at: final` is defined")

    direction = _sign(raw.get("direction", 1), (-1, 0, 1), f"{where}.direction")
    if "better" in raw and direction != 0:
        raise ConfigError(f"{where}.better: only used with direction 0 (direction already gives the sign)")
    better = _sign(raw.get("better", 1), (-1, 0, 1), f"{where}.better")
    min_effect = _number(raw.get("min_effect", 0.0), f"{where}.min_effect")
    if min_effect < 0:
        raise ConfigError(f"{where}.min_effect: must be >= 0, got {min_effect}")
    if direction == 0 and min_effect == 0:
        raise ConfigError(f"{where}.min_effect: a 'no effect' claim (direction 0) needs min_effect > 0")

    rng = None
    if "range" in raw:
        r = raw["range"]
        if not isinstance(r, list | tuple) or len(r) != 2:
            raise ConfigError(f"{where}.range: expected [lo, hi], got {r!r}")
        lo, hi = (_number(v, f"{where}.range") for v in r)
        if lo > hi:
            raise ConfigError(f"{where}.range: lo > hi in {r!r}")
        if direction == 0:
            raise ConfigError(f"{where}.range: a 'no effect' claim (direction 0) has no claimed range")
        rng = (lo, hi)

    return Measure(
        kind=kind,
        metric=metric,
        treatment=raw.get("treatment"),
        control=raw.get("control"),
        arm=raw.get("arm"),
        at=at,
        direction=direction,
        better=better,
        min_effect=min_effect,
        range=rng,
    )


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool) or str(value).strip() == "":
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return str(value).strip()


def _summary(raw: Any, required: set[str], where: str) -> SummaryClaim:
    """{value, source, correction}; the `required` ones must be non-empty, the others may be absent."""
    keys = ("value", "source", "correction")
    _check_keys(raw, required, set(keys) - required, where)
    text = {k: _text(raw[k], f"{where}.{k}") if k in required else str(raw.get(k) or "") for k in keys}
    return SummaryClaim(**text)


def _parse_table(raw: Any, arms: tuple[str, ...], metrics: frozenset[str], where: str) -> ResultsTable:
    where = f"{where}: table"
    _check_keys(raw, {"title", "columns", "rows"}, {"source"}, where)
    if not isinstance(raw["columns"], list) or not raw["columns"]:
        raise ConfigError(f"{where}.columns: expected a non-empty list of {{name, metric}}")
    columns: list[TableColumn] = []
    for i, col in enumerate(raw["columns"]):
        cwhere = f"{where}.columns[{i}]"
        _check_keys(col, {"name", "metric"}, set(), cwhere)
        name = _text(col["name"], f"{cwhere}.name")
        if name in (c.name for c in columns):
            raise ConfigError(f"{cwhere}.name: duplicate column name {name!r}")
        columns.append(TableColumn(name, _metric_spec(col["metric"], metrics, f"{cwhere}.metric")))
    names = [c.name for c in columns]

    if not isinstance(raw["rows"], Mapping) or not raw["rows"]:
        raise ConfigError(f"{where}.rows: expected a non-empty mapping arm -> {{column: value}}")
    rows: list[tuple[str, dict[str, float | None]]] = []
    for arm, values in raw["rows"].items():
        rwhere = f"{where}.rows.{arm}"
        if arm not in arms:
            raise ConfigError(f"{rwhere}: unknown arm {arm!r}; arms declared in `arms:`: {', '.join(arms)}")
        values = values or {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{rwhere}: expected a mapping column -> value, got {values!r}")
        unknown = [k for k in values if k not in names]
        if unknown:
            raise ConfigError(
                f"{rwhere}: unknown column(s) {', '.join(map(repr, unknown))}; columns: {', '.join(names)}"
            )
        rows.append((arm, {k: None if v is None else _number(v, f"{rwhere}.{k}") for k, v in values.items()}))
    source = str(raw.get("source") or "")
    return ResultsTable(_text(raw["title"], f"{where}.title"), source, tuple(columns), tuple(rows))


def _parse_figure(raw: Any, i: int, metrics: frozenset[str], where: str) -> FigureSpec:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    where = f"{where}: figure '{name}'" if name else f"{where}: figures[{i}]"
    if not isinstance(raw, Mapping) or raw.get("kind") not in FIGURE_KINDS:
        got = raw.get("kind") if isinstance(raw, Mapping) else raw
        raise ConfigError(f"{where}.kind: expected one of {', '.join(FIGURE_KINDS)}, got {got!r}")
    _check_keys(raw, {"name", "kind"} | FIGURE_KINDS[raw["kind"]], set(), where)
    # Curve and effects figures are fig_<scale>_<metric with / as _>.png and fig_<scale>_effects.png.
    taken = {"effects"} | {m.replace("/", "_") for m in metrics}
    if not isinstance(name, str) or not _FIGURE_NAME.match(name) or name in taken:
        raise ConfigError(
            f"{where}.name: expected letters, digits, _ or - (it names fig_<scale>_<name>.png), not "
            f"'effects' or a metric name with / as _; got {name!r}"
        )
    if raw["kind"] == "scatter":
        chosen = [raw["x"], raw["y"]]
        keys = ["x", "y"]
    else:
        chosen = raw["metrics"]
        if not isinstance(chosen, list) or not chosen:
            raise ConfigError(f"{where}.metrics: expected a non-empty list of metric names, got {chosen!r}")
        keys = [f"metrics[{j}]" for j in range(len(chosen))]
    for key, metric in zip(keys, chosen):
        _check_metric(metric, metrics, f"{where}.{key}")
    return FigureSpec(name, raw["kind"], tuple(chosen))


def parse_claimed(data: Any, slug: str, where: str = "claimed.yaml") -> ClaimedPaper:
    """Validate a loaded claimed.yaml; raises ConfigError naming the claim id and the bad key."""
    _check_keys(data, *_TOP_KEYS, where)
    arms = data["arms"]
    if not isinstance(arms, list) or not arms or not all(isinstance(a, str) for a in arms):
        raise ConfigError(f"{where}: arms: expected a non-empty list of arm names, got {arms!r}")
    extra = data.get("metrics") or []
    if not isinstance(extra, list) or not all(isinstance(m, str) for m in extra):
        raise ConfigError(f"{where}: metrics: expected a list of metric names, got {extra!r}")
    metrics = KNOWN_METRICS | frozenset(extra)
    if not isinstance(data["claims"], list) or not data["claims"]:
        raise ConfigError(f"{where}: claims: expected a non-empty list")

    claims: list[Claim] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["claims"]):
        cid = raw.get("id") if isinstance(raw, Mapping) else None
        cwhere = f"{where}: claim '{cid}'" if cid else f"{where}: claims[{i}]"
        _check_keys(raw, *_CLAIM_KEYS, cwhere)
        cid = _text(cid, f"{cwhere}.id")
        if cid in seen:
            raise ConfigError(f"{cwhere}: duplicate claim id")
        seen.add(cid)
        summary = None
        if raw.get("summary") is not None:
            summary = _summary(raw["summary"], {"value"}, f"{cwhere}.summary")
        claims.append(
            Claim(
                id=cid,
                text=_text(raw["text"], f"{cwhere}.text"),
                claimed=_text(raw["claimed"], f"{cwhere}.claimed"),
                source=_text(raw["source"], f"{cwhere}.source"),
                measure=_parse_measure(raw["measure"], cid, tuple(arms), metrics, where),
                summary=summary,
            )
        )

    summary_only = data.get("summary_only") or []
    if not isinstance(summary_only, list):
        raise ConfigError(f"{where}: summary_only: expected a list of {{value, source, correction}}")
    figures = data.get("figures") or []
    if not isinstance(figures, list):
        raise ConfigError(f"{where}: figures: expected a list of {{name, kind, ...}}")
    specs = [_parse_figure(f, i, metrics, where) for i, f in enumerate(figures)]
    dup = sorted({f.name for f in specs if [g.name for g in specs].count(f.name) > 1})
    if dup:
        raise ConfigError(f"{where}: figures: duplicate name(s) {', '.join(dup)}")
    return ClaimedPaper(
        slug=slug,
        paper=_text(data["paper"], f"{where}: paper"),
        arxiv=_text(data["arxiv"], f"{where}: arxiv"),
        arms=tuple(arms),
        metrics=metrics,
        claims=tuple(claims),
        summary_only=tuple(
            _summary(s, {"value", "correction"}, f"{where}: summary_only[{i}]")
            for i, s in enumerate(summary_only)
        ),
        table=_parse_table(data["table"], tuple(arms), metrics, where)
        if data.get("table") is not None
        else None,
        figures=tuple(specs),
    )


def load_claimed(path: Path) -> ClaimedPaper:
    """Read and validate `tables_dir/<slug>/claimed.yaml` (the slug is the folder's name)."""
    path = Path(path)
    with path.open() as f:
        data = yaml.safe_load(f)
    return parse_claimed(data, slug=path.parent.name, where=str(path))


# ---------------------------------------------------------------------------------------------
# Reading metrics from records


def _curve(record: Record, metric: str) -> list[float]:
    points = (record.get("curves") or {}).get(metric) or []
    values = (v for _, v in sorted(points, key=lambda p: p[0]) if v is not None)
    return [float(v) for v in values if math.isfinite(v)]


def metric_value(record: Record, metric: str, at: str) -> float | None:
    """One run's value of `metric`: `final` (the record's final value, else the curve's last point;
    osc/* computed from its curve when absent), `init` (first curve point) or `mean` (curve mean).
    None when the record lacks it or it is not finite."""
    value: float | None = None
    final = record.get("final") or {}
    if at == "final" and final.get(metric) is not None:
        value = float(final[metric])
    elif at == "final" and metric in OSC_SOURCES:
        curve = _curve(record, OSC_SOURCES[metric])
        value = float(np.std(np.diff(curve))) if len(curve) >= 2 else None
    else:
        curve = _curve(record, metric)
        if curve:
            value = {"final": curve[-1], "init": curve[0], "mean": float(np.mean(curve))}[at]
    return value if value is not None and math.isfinite(value) else None


def _per_seed(
    records: Mapping[int, Record], metric: str, at: str, notes: list[str], arm: str
) -> dict[int, float]:
    out = {}
    for seed, rec in records.items():
        v = metric_value(rec, metric, at)
        if v is not None:
            out[seed] = v
    missing = sorted(set(records) - set(out))
    if missing:
        notes.append(f"{arm}: no finite {metric} ({at}) for seed(s) {', '.join(map(str, missing))}")
    return out


# ---------------------------------------------------------------------------------------------
# Verdicts


def verdict(measure: Measure, est: Estimate) -> str:
    """The verdict of an estimate under the rules in VERDICTS (the arms were run)."""
    if est.ci is None:
        return INCONCLUSIVE
    lo, hi = est.ci
    if measure.kind == "value":
        rlo, rhi = measure.range  # type: ignore[misc]
        return REPRODUCED if lo <= rhi and hi >= rlo else NOT_REPRODUCED
    m = measure.min_effect
    if measure.direction == 0 and measure.better == 0:
        # Equivalence: the CI must sit inside the band ±min_effect; wholly outside it on one side refutes.
        if -m <= lo and hi <= m:
            return REPRODUCED
        return NOT_REPRODUCED if lo > m or hi < -m else INCONCLUSIVE
    if measure.direction == 0:
        # Put the helping side on +: the claim holds when the CI's upper end stays below min_effect.
        lo_h, hi_h = (lo, hi) if measure.better > 0 else (-hi, -lo)
        if hi_h < m:
            return REPRODUCED
        return NOT_REPRODUCED if lo_h > 0 else INCONCLUSIVE
    # Put the predicted side on +.
    lo_p, hi_p = (lo, hi) if measure.direction > 0 else (-hi, -lo)
    if hi_p < m or (hi_p <= m and lo_p >= -m):
        # The CI rules out an effect of min_effect in the predicted direction (wrong side of 0,
        # or entirely within ±min_effect).
        return NOT_REPRODUCED
    if lo_p > 0:
        if measure.range is None:
            return REPRODUCED
        rlo, rhi = measure.range
        return REPRODUCED if lo <= rhi and hi >= rlo else DIRECTION_ONLY
    return INCONCLUSIVE


def _short(run_id: Any) -> str:
    return str(run_id or "?")[:8]


def evaluate(claim: Claim, records: ArmRecords, scale: str) -> ClaimResult:
    """Judge one claim on the finished canonical records of one scale (arm -> seed -> record)."""
    m = claim.measure
    missing = [a for a in m.arms if not records.get(a)]
    if missing:
        return ClaimResult(claim, scale, NOT_RUN, None, notes=(f"no runs of {', '.join(missing)}",))
    metric = m.metric_at(scale)
    if metric is None:
        return ClaimResult(
            claim, scale, NOT_RUN, None, notes=(f"the claim names no metric for scale {scale}",)
        )

    notes: list[str] = []
    if m.kind == "effect":
        t = _per_seed(records[m.treatment], metric, m.at, notes, m.treatment)  # type: ignore[index]
        c = _per_seed(records[m.control], metric, m.at, notes, m.control)  # type: ignore[index]
        for a, b, arm in ((t, c, m.treatment), (c, t, m.control)):
            unpaired = sorted(set(a) - set(b))
            if unpaired:
                notes.append(f"unpaired seed(s) of {arm} dropped: {', '.join(map(str, unpaired))}")
        est = paired_effect(t, c)
    elif m.kind == "change":
        fin = _per_seed(records[m.arm], metric, "final", notes, m.arm)  # type: ignore[index]
        init = _per_seed(records[m.arm], metric, "init", notes, m.arm)  # type: ignore[index]
        est = paired_effect(fin, init)
    else:
        est = summarize(_per_seed(records[m.arm], metric, m.at, notes, m.arm))  # type: ignore[index]

    run_ids = {a: [_short(records[a][s].get("run_id")) for s in est.seeds] for a in dict.fromkeys(m.arms)}
    if est.n < 2:
        notes.append(f"n={est.n}: no CI")
    return ClaimResult(claim, scale, verdict(m, est), est, run_ids, tuple(notes))


def evaluate_all(paper: ClaimedPaper, records: ArmRecords, scale: str) -> list[ClaimResult]:
    """Every claim of a paper at one scale, in file order."""
    return [evaluate(c, records, scale) for c in paper.claims]
