"""A paper's claims (`paper_tables/<slug>/claimed.yaml`) and their verdicts against run records.

Schema of claimed.yaml (pydantic models below; unknown keys are errors):

    paper: "Title (Authors)"
    arxiv: "2600.00001"                   # "" when the claims come from no paper
    arms: [base, sft, sft_new]            # every arm a claim, table row or figure may name
    metrics: [eval/gsm8k/acc]             # optional: metric names beyond KNOWN_METRICS, e.g. the
                                          #   stats a paper's own registered functions log
    curves: [eval/id/greedy_acc, train/reward_mean]   # optional: training curves to plot
                                          #   (default DEFAULT_CURVES), in this order
    claims:
      - id: new_beats_sft                 # unique; used in figures and error messages
        text: The new method raises accuracy over SFT.     # one sentence
        claimed: "+4.9 points at 7B"      # the paper's number/statement
        source: "[abstract]"              # Table 2 / Fig. 3 / §4.1 / [abstract] / [secondary]
        role: paper                       # optional: paper (default) | summary (a claim only the
                                          #   popular summary makes) | precondition (the suite's own)
        summary:                          # optional: the popular summary's version, if it differs
          {value: "4-7% gains", source: "popular summary", correction: "no 141B model"}
        headline: true                    # optional: one of the paper's headline claims (the
                                          #   report's index shows these; default: the first three)
        measure: {kind: effect, metric: eval/id/greedy_acc, treatment: sft_new, control: sft,
                  at: final, direction: 1, min_effect: 0.02}
        requires:                         # optional mechanism gates, each checked on every seed of
          - {arm: sft_new, metric: run/rescued_frac, op: ">=", value: 0.01,   # its arm; one that
             why: "the rescue acts"}      #   fails makes the verdict `untestable at this scale`;
                                          #   metric per scale as a measure's ({micro: .., small: ..}),
                                          #   a gate naming none at a scale is not checked there
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
        sft: {GSM8K: 0.472}
    figures:                              # optional: per scale, fig_<scale>_<name>.png
      - {name: target_vs_retention, kind: scatter, x: retention/ratio, y: eval/id/greedy_acc}
      - {name: forgetting, kind: bars, metrics: [retention/forgetting, retention/ratio]}

Measures (`at`: `final` value, `mean` over the logged curve, or `init` = first logged value;
`metric` is one name, or {scale: name} where a scale's task logs it under another name — a scale
the mapping leaves out is "not run" for that claim; optional `score: mean_last_k` (with `k`, default
3) scores the mean of the last k logged values instead of the last one; optional `ci: bootstrap`
uses an item × seed bootstrap interval where the records carry per-item results, else Student t):
    effect  treatment − control, paired by seed.  metric, treatment, control, direction,
            min_effect; optional at (default final), range, better.
    change  final − init within one arm, per seed.  metric, arm, direction, min_effect;
            optional range, better.
    value   an arm's mean over seeds vs the claimed `range`.  metric, arm, range; optional at,
            report_only ({scale: why}: at these scales the number is measured and shown, but not
            comparable to the claim, so the verdict is "reported only", with the reason).
    correlation  Spearman rank correlation of x and y over runs (one point per run), with a 95%
            bootstrap CI over arms (repro.tables.across).  x, y, direction, min_effect; optional
            versus (then |rho(x, y)| - |rho(versus, y)|: does x predict y better?), papers (`all`
            or a list of slugs; default this paper), range. x/y/versus are a metric name (final
            value) or {metric, at: final | change | mean}.
    config_diff  the number of config values that differ between two arms' records (a fact of
            the configuration, the same for every seed) vs the claimed `range`.  treatment,
            control, range.
`direction` is the sign the claim predicts (+1/−1), or 0 for "no (helpful) effect", where
`better` (default +1, only with direction 0) is the sign that would mean the treatment helps;
`better: 0` makes it an equivalence claim ("no difference either way"): the whole CI within ±min_effect.
`range` is the claimed magnitude in the metric's own units; give it only when comparable.
Verdict rules: see VERDICTS. Gates (`requires`): `op` one of >=, <=, >, <; `at` as above (default
final). A gate holds when every seed of its arm that logged the metric meets it (`over:
every_seed`, the default), or with `over: mean` when the 95% t interval of the seeds' mean lies on
the gate's side (a condition on the regime rather than on each run; needs >= 2 seeds); a gate no
seed logged is shown as unchecked and decides nothing. Effects pair runs by (base, seed): two runs of
one seed must start from the same base weights (`provenance.root_base_sha256`), else ConfigError.
Power: effect and change claims get the paired design's MDE and seeds needed; a correlation the
MDE of its bootstrap sd (`underpowered` applies to both); value and config_diff claims none.

The results table shows, per scale with runs, each listed arm's paper value beside `final[metric]`
as mean ± sd over its canonical seeds. Figures read `final[...]` of every seed: `scatter` plots
y against x (a dot per seed, the arm's mean ± sd as a cross); `bars` draws one panel per metric
(arm mean ± sd, seeds as dots).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    StringConstraints,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from repro.errors import ConfigError
from repro.tables.across import Point, Universe, config_diff, fact_estimate, rank_correlation, run_points
from repro.tables.stats import (
    Estimate,
    item_bootstrap,
    item_seed_bootstrap,
    mde,
    mde_normal,
    paired_effect,
    seeds_needed,
    summarize,
)

# Metrics the library's trainers and evaluators log (the clipped objective's generic stats among
# them), plus the oscillation summaries in `final`. A paper's own metrics go in its `metrics:`.
_TRAIN = (
    "reward_mean reward_std entropy loss grad_norm kl_k3 ratio_dev ratio_max clipfrac clipfrac_high_pos_adv "
    "clipfrac_high_neg_adv clipfrac_low_pos_adv clipfrac_low_neg_adv "
    # final metrics of sft / opd / offline_distill: the last step's loss, ||theta - theta_0||, the
    # steps and loss-bearing tokens of the run, offline distillation's truncated teacher completions
    "final_loss delta_norm steps supervised_tokens teacher_truncated_frac"
).split()
_EVAL = (
    "id/greedy_acc id/sample_acc ood/greedy_acc ood/sample_acc retention/facts_acc retention/truths_acc "
    "retention/facts_margin retention/truths_margin id/truncated_frac ood/truncated_frac"
).split()
# osc/<name> = std (ddof=0) of the step-to-step changes of the curve it summarizes.
OSC_SOURCES = {"osc/reward": "train/reward_mean", "osc/id_acc": "eval/id/greedy_acc"}
# Forgetting/retention vs the step-0 evaluation (eq. 12) and state drift vs the base model's states
# (repro.metrics.drift.drift_report): drift/* of the training states, drift_policy/* of the policy's own.
_RETENTION = ("retention/forgetting", "retention/ratio")
# With the run's fixed kernel (repro.eval.micro.HeldOut.bandwidth): also the bandwidth and the MMD^2
# under the per-comparison median; drift_policy/mmd2_nostyle without the SFT styles' format words.
_DRIFT = ("mmd2", "centroid", "sliced_w1", "jaccard", "bandwidth", "mmd2_median")
# run/<share>: a share stat of the clipped objective pooled over the whole run (Σ num / Σ den).
_RUN_SHARES = (
    "clipfrac clipfrac_high_pos_adv clipfrac_high_neg_adv clipfrac_low_pos_adv clipfrac_low_neg_adv "
    "ratio_dev kl_k3"
).split()
KNOWN_METRICS = frozenset(
    [f"train/{m}" for m in _TRAIN]
    + [f"run/{m}" for m in _RUN_SHARES]
    + ["rollout/len_mean", "rollout/truncated_frac", "drift_policy/mmd2_nostyle"]
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
UNDERPOWERED, UNTESTABLE = "underpowered", "untestable at this scale"
REPORTED = "reported only"
ROLES = ("paper", "summary", "precondition")
VERDICTS = {
    REPRODUCED: "the 95% CI excludes 0 on the predicted side, reaches beyond min_effect, and overlaps "
    "the claimed range if one is given; for a value claim, the CI overlaps the claimed range and the "
    "mean lies in it; for a "
    "'no effect' claim (direction 0), the CI rules out a helpful effect of min_effect or more; for a "
    "'no difference' claim (better 0), the CI lies within ±min_effect.",
    DIRECTION_ONLY: "the CI excludes 0 on the predicted side but misses the claimed range.",
    NOT_REPRODUCED: "the CI rules out an effect of min_effect or more in the predicted direction (it lies "
    "on the wrong side of 0, or within ±min_effect); for a value claim, the CI misses the claimed "
    "range; for a 'no effect' claim, the CI excludes 0 on the helping side; for a 'no difference' "
    "claim, the CI lies wholly above +min_effect or wholly below −min_effect.",
    INCONCLUSIVE: "fewer than 2 usable seeds (no CI); for a value claim, the CI overlaps the claimed "
    "range but the mean lies outside it; or the CI contains 0 and reaches beyond ±min_effect "
    "(for a 'no difference' claim: the CI crosses +min_effect or −min_effect) although the design "
    "could detect min_effect (MDE ≤ min_effect).",
    UNDERPOWERED: "as inconclusive, but the design could not have decided: the minimum detectable effect "
    "(80% power, one-sided α = 0.025, paired t over seeds) exceeds min_effect. More seeds, not a "
    "different method, would decide it (`repro reproduce <paper> --power`).",
    UNTESTABLE: "a mechanism gate (`requires:`) failed: the condition under which the paper's mechanism "
    "acts does not hold in these runs (its measured value is shown), so the effect was not tested.",
    REPORTED: "a value claim whose unit is not comparable at this scale (`report_only:` says why, e.g. a "
    "micro-world accuracy is not a GSM8K accuracy): our number is shown beside the claim, without a verdict.",
    NOT_RUN: "no finished canonical run at this scale for an arm the claim needs.",
}

KINDS = ("effect", "change", "value", "correlation", "config_diff")
FIGURE_KINDS = ("scatter", "bars")
# Training curves plotted per scale when claimed.yaml names no `curves:`.
DEFAULT_CURVES = ("eval/id/greedy_acc", "train/entropy", "train/clipfrac", "train/reward_mean")
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
    score: str = "last"  # at `final`: the last logged value, or the mean of the last k (mean_last_k)
    k: int = 3
    ci: str = "t"  # t over seeds, or an item x seed bootstrap (where records carry items)
    # correlation: (metric, at) of x, y and the competing predictor; papers: None = this paper
    x: tuple[str, str] | None = None
    y: tuple[str, str] | None = None
    versus: tuple[str, str] | None = None
    papers: str | tuple[str, ...] | None = None
    report_only: Mapping[str, str] | None = None  # value claims: scale -> why it is shown, not judged

    @property
    def arms(self) -> tuple[str, ...]:
        """The arms (of this paper) whose records the measure needs."""
        if self.kind in ("effect", "config_diff"):
            return (self.treatment, self.control)  # type: ignore[return-value]
        if self.kind == "correlation":
            return ()
        return (self.arm,)  # type: ignore[return-value]

    def metric_at(self, scale: str) -> str | None:
        """The metric judged at `scale`; None if the claim names none there."""
        return metric_at_scale(self.metric, scale)

    def describe(self, scale: str | None = None) -> str:
        """Short human description, e.g. `Δ eval/id/greedy_acc (final): sft_new − sft`."""
        metric = describe_metric(self.metric_at(scale) if scale is not None else self.metric)
        at = f"mean of last {self.k}" if self.score == "mean_last_k" and self.at == "final" else self.at
        if self.kind == "effect":
            return f"Δ {metric} ({at}): {self.treatment} − {self.control}"
        if self.kind == "change":
            final = f"mean of last {self.k}" if self.score == "mean_last_k" else "final"
            return f"{metric}: {final} − init, {self.arm}"
        if self.kind == "correlation":
            x, y, w = (None if v is None else f"{v[0]} ({v[1]})" for v in (self.x, self.y, self.versus))
            runs = "every paper" if self.papers == "all" else ", ".join(self.papers or ()) or "this paper"
            rho = f"|ρ({x}, {y})| − |ρ({w}, {y})|" if w else f"Spearman ρ({x}, {y})"
            return f"{rho} over the runs of {runs}"
        if self.kind == "config_diff":
            return f"config values that differ: {self.treatment} vs {self.control}"
        return f"{metric} ({at}), {self.arm}"


def metric_at_scale(spec: str | Mapping[str, str], scale: str) -> str | None:
    """The metric a spec (one name, or scale -> name) names at `scale`; None if it names none there."""
    return spec if isinstance(spec, str) else spec.get(scale)


def describe_metric(spec: str | Mapping[str, str]) -> str:
    """A metric spec as text: the name, or `micro: a | small: b` (– for an empty mapping)."""
    if isinstance(spec, str):
        return spec
    return " | ".join(f"{k}: {v}" for k, v in spec.items()) if spec else "–"


@dataclass(frozen=True)
class SummaryClaim:
    """The popular summary's version of a claim and what the sources say instead."""

    value: str
    source: str = ""
    correction: str = ""


@dataclass(frozen=True)
class Gate:
    """A mechanism condition a claim needs: `arm`'s `metric` (at `at`) `op` `value`, checked
    `over` every seed (each seed must meet it) or over the `mean` (the seeds' 95% CI of the mean
    must lie on the gate's side: a condition on the regime, which more seeds can only make surer)."""

    arm: str
    metric: str | Mapping[str, str]  # one name for every scale, or scale -> name (as a measure's)
    op: str
    value: float
    at: str = "final"
    why: str = ""
    over: str = "every_seed"

    def at_scale(self, scale: str) -> Gate | None:
        """This gate with its metric at `scale`; None where it names none there (it does not apply)."""
        metric = metric_at_scale(self.metric, scale)
        return None if metric is None else replace(self, metric=metric)

    def holds(self, x: float) -> bool:
        return {">=": x >= self.value, "<=": x <= self.value, ">": x > self.value, "<": x < self.value}[
            self.op
        ]

    def bound(self, values: Mapping[int, float]) -> float:
        """The end of the seeds' 95% t interval of the mean ({seed: value}, `summarize`) that must
        meet the gate: the lower end for >= / >, the upper for <= / <; NaN below 2 seeds (no interval)."""
        ci = summarize(values).ci
        return math.nan if ci is None else ci[0] if self.op in (">=", ">") else ci[1]

    def describe(self) -> str:
        where = ", 95% CI of the mean over seeds" if self.over == "mean" else ""
        return f"{self.arm} {describe_metric(self.metric)} ({self.at}{where}) {self.op} {self.value:g}"


@dataclass(frozen=True)
class GateResult:
    """A gate checked on the seeds of its arm: `values` seed -> measured value (seeds that logged
    it); `holds` is None when no seed logged it (unchecked)."""

    gate: Gate
    values: Mapping[int, float]

    @property
    def passed(self) -> int:
        return sum(self.gate.holds(v) for v in self.values.values())

    @property
    def mean(self) -> float:
        """The seeds' mean (`summarize`, as the interval `Gate.bound` is centred on); NaN if none."""
        return summarize(self.values).mean if self.values else math.nan

    @property
    def holds(self) -> bool | None:
        if not self.values:
            return None
        if self.gate.over == "mean":  # NaN bound (one seed): not established, so not met
            return self.gate.holds(self.gate.bound(self.values))
        return self.passed == len(self.values)


@dataclass(frozen=True)
class Power:
    """The design's power for one claim: paired seeds, sd of the differences, minimum detectable
    effect at 80% power (one-sided α = 0.025), and the seeds needed to detect min_effect."""

    n: int
    sd: float
    mde: float
    needed: float  # NaN when undefined (min_effect 0, or no sd)


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    claimed: str
    source: str
    measure: Measure
    summary: SummaryClaim | None = None
    requires: tuple[Gate, ...] = ()
    role: str = "paper"
    headline: bool = False


@dataclass(frozen=True)
class TableColumn:
    """One column of the results table: `metric` is one name for every scale, or scale -> name."""

    name: str
    metric: str | Mapping[str, str]

    def metric_at(self, scale: str) -> str | None:
        """The metric this column shows at `scale`; None if the column has none there."""
        return metric_at_scale(self.metric, scale)


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
    curves: tuple[str, ...] | None = None  # None: DEFAULT_CURVES


@dataclass(frozen=True)
class ClaimResult:
    """One claim judged at one scale. `run_ids` maps arm -> run ids of the records used; `ci_method`
    says how `estimate.ci` was made; `by_base` is the estimate per base model when several are used."""

    claim: Claim
    scale: str
    verdict: str
    estimate: Estimate | None
    run_ids: dict[str, list[str]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    power: Power | None = None
    gates: tuple[GateResult, ...] = ()
    ci_method: str = "t"
    by_base: Mapping[str, Estimate] | None = None
    points: tuple[Point, ...] = ()  # correlation: the runs it used (for its figure)


# ---------------------------------------------------------------------------------------------
# The file's schema (pydantic). Each model forbids unknown keys; names that refer elsewhere in the
# file (arms, metrics, table columns) are checked by validators against the names the file
# declares, collected before validation (`_declared`). A bad file raises ConfigError with one line:
# the file, the key path (`claims[3] (my_claim).measure.metric`) and what would be valid.


def _declared(info: ValidationInfo, key: str) -> Any:
    """The file's declared arms / metrics / columns; None when unknown (then not checked)."""
    return (info.context or {}).get(key)


def _check_arm(name: str, info: ValidationInfo) -> str:
    arms = _declared(info, "arms")
    if arms is not None and name not in arms:
        raise ValueError(f"unknown arm {name!r}; arms declared in `arms:`: {', '.join(arms)}")
    return name


def _check_metric(name: str, info: ValidationInfo) -> str:
    metrics = _declared(info, "metrics")
    if metrics is not None and name not in metrics:
        raise ValueError(
            f"unknown metric {name!r}; add it to the file's `metrics:` list if a trainer logs it. "
            f"Known: {', '.join(sorted(metrics))}"
        )
    return name


def _check_column(name: str, info: ValidationInfo) -> str:
    columns = _declared(info, "columns")
    if columns is not None and name not in columns:
        raise ValueError(f"unknown column {name!r}; columns: {', '.join(columns)}")
    return name


def _check_figure_name(name: str, info: ValidationInfo) -> str:
    # Curve and effects figures are fig_<scale>_<metric with / as _>.png and fig_<scale>_effects.png.
    taken = {"effects"} | {m.replace("/", "_") for m in _declared(info, "metrics") or ()}
    if not _FIGURE_NAME.match(name) or name in taken:
        raise ValueError(
            "expected letters, digits, _ or - (it names fig_<scale>_<name>.png), not 'effects' or a "
            f"metric name with / as _; got {name!r}"
        )
    return name


def _check_sign(value: int) -> int:
    if value not in (-1, 0, 1):
        raise ValueError(f"expected one of -1, 0, 1, got {value!r}")
    return value


def _not_empty_mapping(value: Any) -> Any:
    if isinstance(value, dict) and not value:
        raise ValueError("empty mapping; give scale: metric pairs or one metric")
    return value


def _none_is(empty: Any) -> BeforeValidator:
    """An optional key may be written as null: it means `empty`."""
    return BeforeValidator(lambda v: empty if v is None else v)


def _kinds(*kinds: str) -> Discriminator:
    """Pick a union member by the input's `kind`; an unknown kind is one `bad_kind` error."""
    return Discriminator(
        lambda v: f"<{v.get('kind')}>" if isinstance(v, Mapping) else None,
        custom_error_type="bad_kind",
        custom_error_message="unknown kind",
        custom_error_context={"kinds": ", ".join(kinds)},
    )


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
OptionalText = Annotated[str, _none_is("")]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # finite; no bool, no string
Sign = Annotated[int, Strict(), AfterValidator(_check_sign)]
ArmName = Annotated[str, AfterValidator(_check_arm)]
MetricName = Annotated[str, AfterValidator(_check_metric)]
# One metric name for every scale, or {scale: name} where a scale's task logs it under another name.
# (Union members are tagged <...>; tags are left out of error paths.)
MetricSpec = Annotated[
    Annotated[MetricName, Tag("<one>")] | Annotated[dict[str, MetricName], Tag("<per-scale>")],
    Discriminator(lambda v: "<per-scale>" if isinstance(v, Mapping) else "<one>"),
    AfterValidator(_not_empty_mapping),
]


class _Strict(BaseModel):
    """A mapping with a fixed set of keys; an unknown key is an error listing the allowed ones."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(map(str, set(data) - set(cls.model_fields)))
            if unknown:
                allowed = ", ".join(sorted(cls.model_fields))
                raise ValueError(f"unknown key(s) {', '.join(unknown)}; allowed: {allowed}")
        return data


class _Measure(_Strict):
    """Checks shared by the measure kinds; each field's validator sees the fields declared above it."""

    @field_validator("control", check_fields=False)
    @classmethod
    def _two_arms(cls, control: str, info: ValidationInfo) -> str:
        if control == info.data.get("treatment"):
            raise ValueError(f"treatment and control are the same arm {control!r}")
        return control

    @field_validator("better", check_fields=False)
    @classmethod
    def _better_needs_no_direction(cls, better: int, info: ValidationInfo) -> int:
        if info.data.get("direction", 0) != 0:
            raise ValueError("only used with direction 0 (direction already gives the sign)")
        return better

    @field_validator("min_effect", check_fields=False)
    @classmethod
    def _min_effect(cls, min_effect: float, info: ValidationInfo) -> float:
        if min_effect < 0:
            raise ValueError(f"must be >= 0, got {min_effect}")
        if info.data.get("direction") == 0 and min_effect == 0:
            raise ValueError("a 'no effect' claim (direction 0) needs min_effect > 0")
        return min_effect

    @field_validator("at", check_fields=False)
    @classmethod
    def _osc_is_final(cls, at: str, info: ValidationInfo) -> str:
        metric = info.data.get("metric")
        names = [metric] if isinstance(metric, str) else list((metric or {}).values())
        osc = [m for m in names if m in OSC_SOURCES]
        if osc and at != "final":
            raise ValueError(f"{osc[0]} summarizes a whole run; only `at: final` is defined")
        return at

    @field_validator("range", check_fields=False)
    @classmethod
    def _range(cls, rng: tuple[float, float] | None, info: ValidationInfo) -> tuple[float, float] | None:
        if rng is not None and rng[0] > rng[1]:
            raise ValueError(f"lo > hi in {list(rng)}")
        if rng is not None and info.data.get("direction") == 0:
            raise ValueError("a 'no effect' claim (direction 0) has no claimed range")
        return rng

    def to_measure(self) -> Measure:
        fields = self.model_dump()
        return Measure(**{k: v for k, v in fields.items() if k in Measure.__dataclass_fields__})


Score = Literal["last", "mean_last_k"]
CiMethod = Literal["t", "bootstrap"]
PositiveInt = Annotated[int, Field(strict=True, ge=1)]


class _Effect(_Measure):
    kind: Literal["effect"]
    metric: MetricSpec
    treatment: ArmName
    control: ArmName
    direction: Sign
    better: Sign = 1
    min_effect: Number
    at: Literal["final", "mean", "init"] = "final"
    range: tuple[Number, Number] | None = None
    score: Score = "last"
    k: PositiveInt = 3
    ci: CiMethod = "t"


class _Change(_Measure):
    kind: Literal["change"]
    metric: MetricSpec
    arm: ArmName
    direction: Sign
    better: Sign = 1
    min_effect: Number
    range: tuple[Number, Number] | None = None
    score: Score = "last"
    k: PositiveInt = 3
    ci: CiMethod = "t"


class _Value(_Measure):
    kind: Literal["value"]
    metric: MetricSpec
    arm: ArmName
    at: Literal["final", "mean"] = "final"
    range: tuple[Number, Number]
    score: Score = "last"
    k: PositiveInt = 3
    ci: CiMethod = "t"
    report_only: dict[Literal["micro", "small", "paper", "tiny"], Text] | None = None

    @field_validator("report_only")
    @classmethod
    def _report_only_has_metric(cls, report: dict[str, str] | None, info: ValidationInfo) -> dict | None:
        metric = info.data.get("metric")
        if report and isinstance(metric, Mapping):
            missing = sorted(set(report) - set(metric))
            if missing:
                raise ValueError(
                    f"scale(s) {', '.join(missing)} name no metric to report; add them to `metric` "
                    f"(it names {', '.join(sorted(metric))})"
                )
        return report


class _Gate(_Strict):
    arm: ArmName
    metric: MetricSpec
    op: Literal[">=", "<=", ">", "<"]
    value: Number
    at: Literal["final", "mean", "init"] = "final"
    why: OptionalText = ""
    over: Literal["every_seed", "mean"] = "every_seed"


class _MetricAt(_Strict):
    metric: MetricName
    at: Literal["final", "change", "mean"] = "final"


MetricAtSpec = Annotated[
    Annotated[MetricName, Tag("<one>")] | Annotated[_MetricAt, Tag("<at>")],
    Discriminator(lambda v: "<at>" if isinstance(v, Mapping | _MetricAt) else "<one>"),
]


def _metric_at(spec: str | _MetricAt | None) -> tuple[str, str] | None:
    if spec is None:
        return None
    return (spec, "final") if isinstance(spec, str) else (spec.metric, spec.at)


class _Correlation(_Measure):
    kind: Literal["correlation"]
    x: MetricAtSpec
    y: MetricAtSpec
    versus: MetricAtSpec | None = None
    papers: Literal["all"] | Annotated[list[Text], Field(min_length=1)] | None = None
    direction: Sign
    min_effect: Number
    range: tuple[Number, Number] | None = None

    def to_measure(self) -> Measure:
        x, y, w = _metric_at(self.x), _metric_at(self.y), _metric_at(self.versus)
        papers = tuple(self.papers) if isinstance(self.papers, list) else self.papers
        metric = "Δ|ρ|" if w else "ρ"
        return Measure(
            "correlation", metric, direction=self.direction, min_effect=self.min_effect,
            range=self.range, x=x, y=y, versus=w, papers=papers,
        )  # fmt: skip


class _ConfigDiff(_Measure):
    kind: Literal["config_diff"]
    treatment: ArmName
    control: ArmName
    range: tuple[Number, Number]

    def to_measure(self) -> Measure:
        return Measure(
            "config_diff", "config values changed", treatment=self.treatment, control=self.control,
            range=self.range,
        )  # fmt: skip


class _Summary(_Strict):
    value: Text
    source: OptionalText = ""
    correction: OptionalText = ""


class _SummaryOnly(_Summary):
    correction: Text


class _Claim(_Strict):
    id: Text
    text: Text
    claimed: Text
    source: Text
    role: Literal["paper", "summary", "precondition"] = "paper"
    summary: _Summary | None = None
    requires: Annotated[list[_Gate], _none_is([])] = []
    headline: Annotated[bool, Strict()] = False
    measure: Annotated[
        Annotated[_Effect, Tag("<effect>")]
        | Annotated[_Change, Tag("<change>")]
        | Annotated[_Value, Tag("<value>")]
        | Annotated[_Correlation, Tag("<correlation>")]
        | Annotated[_ConfigDiff, Tag("<config_diff>")],
        _kinds(*KINDS),
    ]


class _Column(_Strict):
    name: Text
    metric: MetricSpec


class _Table(_Strict):
    title: Text
    source: OptionalText = ""
    columns: Annotated[list[_Column], Field(min_length=1)]
    # arm -> {column name: the paper's value or null}, in file order; an arm with no values may be null.
    rows: Annotated[
        dict[
            Annotated[str, AfterValidator(_check_arm)],
            Annotated[dict[Annotated[str, AfterValidator(_check_column)], Number | None], _none_is({})],
        ],
        Field(min_length=1),
    ]

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, columns: list[_Column]) -> list[_Column]:
        names = [c.name for c in columns]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"duplicate column name(s) {', '.join(map(repr, dup))}")
        return columns


FigureName = Annotated[str, AfterValidator(_check_figure_name)]


class _Scatter(_Strict):
    name: FigureName
    kind: Literal["scatter"]
    x: MetricName
    y: MetricName


class _Bars(_Strict):
    name: FigureName
    kind: Literal["bars"]
    metrics: Annotated[list[MetricName], Field(min_length=1)]


class _ClaimedFile(_Strict):
    paper: Text
    arxiv: OptionalText = ""
    arms: Annotated[list[str], Field(min_length=1)]
    metrics: Annotated[list[str], _none_is([])] = []
    curves: list[MetricName] | None = None
    claims: Annotated[list[_Claim], Field(min_length=1)]
    summary_only: Annotated[list[_SummaryOnly], _none_is([])] = []
    table: _Table | None = None
    figures: Annotated[
        list[
            Annotated[
                Annotated[_Scatter, Tag("<scatter>")] | Annotated[_Bars, Tag("<bars>")], _kinds(*FIGURE_KINDS)
            ]
        ],
        _none_is([]),
    ] = []

    @field_validator("claims")
    @classmethod
    def _unique_ids(cls, claims: list[_Claim]) -> list[_Claim]:
        ids = [c.id for c in claims]
        if dup := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"duplicate claim id(s) {', '.join(dup)}")
        return claims

    @field_validator("figures")
    @classmethod
    def _unique_figures(cls, figures: list[_Scatter | _Bars]) -> list[_Scatter | _Bars]:
        names = [f.name for f in figures]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"duplicate name(s) {', '.join(dup)}")
        return figures

    def to_paper(self, slug: str) -> ClaimedPaper:
        table = None
        if self.table is not None:
            t = self.table
            columns = tuple(TableColumn(c.name, c.metric) for c in t.columns)
            table = ResultsTable(t.title, t.source, columns, tuple(t.rows.items()))
        return ClaimedPaper(
            slug=slug,
            paper=self.paper,
            arxiv=self.arxiv,
            arms=tuple(self.arms),
            metrics=KNOWN_METRICS | frozenset(self.metrics),
            claims=tuple(
                Claim(
                    c.id,
                    c.text,
                    c.claimed,
                    c.source,
                    c.measure.to_measure(),
                    SummaryClaim(**c.summary.model_dump()) if c.summary else None,
                    tuple(Gate(**g.model_dump()) for g in c.requires),
                    c.role,
                    c.headline,
                )
                for c in self.claims
            ),
            summary_only=tuple(SummaryClaim(**s.model_dump()) for s in self.summary_only),
            table=table,
            figures=tuple(
                FigureSpec(f.name, f.kind, (f.x, f.y) if isinstance(f, _Scatter) else tuple(f.metrics))
                for f in self.figures
            ),
            curves=tuple(self.curves) if self.curves is not None else None,
        )


def _names_in(data: Any) -> dict[str, Any]:
    """The arms, metrics and table columns a (not yet validated) file declares; a malformed list is
    None, so references to it go unchecked (the list's own error is reported)."""

    def names(items: Any, key: str | None = None) -> tuple[str, ...] | None:
        if items is None and key is None:
            return ()
        if not isinstance(items, list):
            return None
        values = [item.get(key) if key and isinstance(item, Mapping) else item for item in items]
        return tuple(values) if all(isinstance(v, str) for v in values) else None

    data = data if isinstance(data, Mapping) else {}
    table = data.get("table") if isinstance(data.get("table"), Mapping) else {}
    extra = names(data.get("metrics"))
    return {
        "arms": names(data.get("arms")) or None,
        "metrics": KNOWN_METRICS | frozenset(extra) if extra is not None else None,
        "columns": names(table.get("columns"), "name"),
    }


def _error_line(error: Mapping[str, Any], data: Any) -> str:
    """`<key path>: <what is wrong and what would be valid>` for one pydantic error."""
    path, node = "", data
    for part in error["loc"]:
        if isinstance(part, str) and (part == "[key]" or part.startswith("<")):
            continue  # dict-key marker, union tag
        if isinstance(part, int):
            path += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            label = next((node[k] for k in ("id", "name") if isinstance(node, Mapping) and k in node), None)
            path += f" ({label})" if isinstance(label, str) else ""
        else:
            path += f".{part}" if path else str(part)
            node = node.get(part) if isinstance(node, Mapping) else None
    kind, given = error["type"], error.get("input")
    if kind == "value_error":
        message = str(error["ctx"]["error"])
    elif kind == "bad_kind":
        path += ".kind" if path else "kind"
        got = given.get("kind") if isinstance(given, Mapping) else given
        message = f"expected one of {error['ctx']['kinds']}, got {got!r}"
    elif kind == "missing":
        message = "missing key"
    elif kind in ("too_short", "string_too_short"):
        what = {"string_too_short": "string", "too_short": "list" if isinstance(given, list) else "mapping"}
        message = f"expected a non-empty {what[kind]}"
    else:
        shown = repr(given) if len(repr(given)) <= 60 else repr(given)[:57] + "..."
        message = f"{error['msg'][0].lower()}{error['msg'][1:]}, got {shown}"
    return f"{path}: {message}" if path else message


def parse_claimed(data: Any, slug: str, where: str = "claimed.yaml", node: Any = None) -> ClaimedPaper:
    """Validate a loaded claimed.yaml. A bad file raises ConfigError with one line naming the file
    (`where`), the line (given the file's composed YAML `node`), the key path and what would be
    valid."""
    try:
        parsed = _ClaimedFile.model_validate(data, context=_names_in(data))
    except ValidationError as e:
        errors = e.errors()
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        line = _yaml_line(node, errors[0]["loc"])
        raise ConfigError(
            f"{where}{f':{line}' if line else ''}: {_error_line(errors[0], data)}{more}"
        ) from None
    return parsed.to_paper(slug)


def _yaml_line(node: Any, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest part of `loc` found in a composed YAML node tree (pydantic's
    markers that are not keys, like union tags, are passed over)."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                continue
            key = next(k for k, v in node.value if v is match)
            line, node = key.start_mark.line + 1, match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


def load_claimed(path: Path) -> ClaimedPaper:
    """Read and validate `tables_dir/<slug>/claimed.yaml` (the slug is the folder's name). A file
    that is not valid YAML or breaks the schema raises ConfigError: `<path>:<line>: <problem>`."""
    path = Path(path)
    try:
        text = path.read_text()
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except OSError as exc:
        raise ConfigError(f"{path}: unreadable ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    return parse_claimed(data, slug=path.parent.name, where=str(path), node=node)


# ---------------------------------------------------------------------------------------------
# Reading metrics from records


def _curve(record: Record, metric: str) -> list[float]:
    points = (record.get("curves") or {}).get(metric) or []
    values = (v for _, v in sorted(points, key=lambda p: p[0]) if v is not None)
    return [float(v) for v in values if math.isfinite(v)]


def metric_value(record: Record, metric: str, at: str, score: str = "last", k: int = 3) -> float | None:
    """One run's value of `metric`: `final` (the record's final value, else the curve's last point;
    osc/* computed from its curve when absent; with score `mean_last_k`, the mean of the curve's
    last k points), `init` (first curve point) or `mean` (curve mean). None when the record lacks
    it or it is not finite."""
    value: float | None = None
    final = record.get("final") or {}
    if at == "final" and score == "mean_last_k" and metric not in OSC_SOURCES:
        curve = _curve(record, metric)
        value = float(np.mean(curve[-k:])) if curve else None
    elif at == "final" and final.get(metric) is not None:
        value = float(final[metric])
    elif at == "final" and metric in OSC_SOURCES:
        curve = _curve(record, OSC_SOURCES[metric])
        value = float(np.std(np.diff(curve))) if len(curve) >= 2 else None
    else:
        curve = _curve(record, metric)
        if curve:
            value = {"final": curve[-1], "init": curve[0], "mean": float(np.mean(curve))}[at]
    return value if value is not None and math.isfinite(value) else None


def item_values(record: Record, metric: str, at: str, score: str = "last", k: int = 3) -> np.ndarray | None:
    """Per-item results of `metric` (record `items`), scored like `metric_value`: (items,) float,
    the mean over the evals used; None when the record has none."""
    from repro.records import decode_items

    evals = sorted((record.get("items") or {}).get(metric) or [], key=lambda e: e[0])
    if not evals:
        return None
    if at == "init":
        evals = evals[:1]
    elif at == "final":
        evals = evals[-k:] if score == "mean_last_k" else evals[-1:]
    arrays = [decode_items(text) for _, text in evals]
    if len({a.size for a in arrays}) != 1:
        return None
    return np.mean(np.stack(arrays).astype(float), axis=0)


def _per_seed(
    records: Mapping[int, Record], metric: str, at: str, notes: list[str], arm: str, m: Measure | None = None
) -> dict[int, float]:
    score, k = (m.score, m.k) if m is not None else ("last", 3)
    out = {}
    for seed, rec in records.items():
        v = metric_value(rec, metric, at, score, k)
        if v is not None:
            out[seed] = v
    missing = sorted(set(records) - set(out))
    if missing:
        notes.append(f"{arm}: no finite {metric} ({at}) for seed(s) {', '.join(map(str, missing))}")
    return out


# ---------------------------------------------------------------------------------------------
# Base models: pairing by (base, seed)

NOT_RECORDED = "not recorded"


def base_sha(record: Record) -> str | None:
    """The sha256 of the base weights a run's chain started from; None for records made before
    runs carried it."""
    prov = record.get("provenance") or {}
    return prov.get("root_base_sha256") or prov.get("base_sha256")


def base_label(record: Record) -> str:
    """`base <k>` for a micro base, else the first 8 hex digits of its sha256, or `?`."""
    base = ((record.get("config") or {}).get("model") or {}).get("base")
    if isinstance(base, int):
        return f"base {base}"
    sha = base_sha(record)
    return sha[:8] if sha else "?"


def check_pairs(
    claim_id: str, a_arm: str, a: Mapping[int, Record], b_arm: str, b: Mapping[int, Record]
) -> None:
    """ConfigError if a seed of arm a and the same seed of arm b started from different base
    weights: paired differences would then measure the bases, not the method."""
    for seed in sorted(set(a) & set(b)):
        sa, sb = base_sha(a[seed]), base_sha(b[seed])
        if sa and sb and sa != sb:
            raise ConfigError(
                f"{claim_id}: cannot pair {a_arm} seed {seed} (base sha256 {sa[:12]}) with {b_arm} seed "
                f"{seed} (base sha256 {sb[:12]}): they started from different base models; rerun one of "
                "them from the same base (pairs are (base, seed))"
            )


# ---------------------------------------------------------------------------------------------
# Verdicts


def verdict(measure: Measure, est: Estimate) -> str:
    """The verdict of an estimate under the rules in VERDICTS (the arms were run), before power
    and gates (`evaluate` applies those)."""
    if est.ci is None:
        return INCONCLUSIVE
    lo, hi = est.ci
    if measure.kind in ("value", "config_diff"):
        rlo, rhi = measure.range  # type: ignore[misc]
        if lo > rhi or hi < rlo:
            return NOT_REPRODUCED
        # The CI overlaps the range: the mean must lie in it too, else the data favour neither.
        return REPRODUCED if rlo <= est.mean <= rhi else INCONCLUSIVE
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


def power_of(measure: Measure, est: Estimate) -> Power | None:
    """Power of a paired design (effect, change). For a correlation, the MDE of a normal test on
    its bootstrap sd, with no seed count (more arms narrow it as much as more seeds do). None for
    a value claim (a mean against a range) or a config_diff (a fact of the configuration)."""
    if measure.kind in ("value", "config_diff"):
        return None
    if measure.kind == "correlation":
        return Power(est.n, est.sd, mde_normal(est.sd), math.nan)
    return Power(est.n, est.sd, mde(est.sd, est.n), seeds_needed(measure.min_effect, est.sd))


def _power_and_gates(
    claim: Claim, records: ArmRecords, est: Estimate, result: str, scale: str
) -> tuple[str, Power | None, tuple[GateResult, ...]]:
    """The verdict after power (inconclusive -> underpowered when the MDE exceeds min_effect) and
    gates (untestable when one fails), with the power and the checked gates (those that name a
    metric at `scale`)."""
    m = claim.measure
    power = power_of(m, est)
    if result == INCONCLUSIVE and power is not None and power.mde > m.min_effect:
        result = UNDERPOWERED
    here = [g for g in (gate.at_scale(scale) for gate in claim.requires) if g is not None]
    gates = tuple(check_gate(g, records) for g in here)  # shown with the verdict
    if any(g.holds is False for g in gates):
        result = UNTESTABLE
    return result, power, gates


def check_gate(gate: Gate, records: ArmRecords) -> GateResult:
    """`gate` (its metric one name: `Gate.at_scale`) on every seed of its arm that logged it."""
    if not isinstance(gate.metric, str):
        raise TypeError(f"gate on {gate.arm}: resolve its per-scale metric first (Gate.at_scale)")
    values = {}
    for seed, rec in (records.get(gate.arm) or {}).items():
        v = metric_value(rec, gate.metric, gate.at)
        if v is not None:
            values[seed] = v
    return GateResult(gate, values)


def _short(run_id: Any) -> str:
    return str(run_id or "?")[:8]


def _item_diffs(m: Measure, records: ArmRecords, metric: str, seeds: tuple[int, ...]) -> np.ndarray | str:
    """The claim's per-item differences (seeds, items) on `seeds`, or why there are none."""

    def items(arm: str, at: str) -> dict[int, np.ndarray]:
        out = {}
        for s in seeds:
            v = item_values(records[arm][s], metric, at, m.score, m.k)
            if v is not None:
                out[s] = v
        return out

    if m.kind == "effect":
        a, b = items(m.treatment, m.at), items(m.control, m.at)  # type: ignore[arg-type]
    elif m.kind == "change":
        a, b = items(m.arm, "final"), items(m.arm, "init")  # type: ignore[arg-type]
    else:
        a = items(m.arm, m.at)  # type: ignore[arg-type]
        b = {s: np.zeros_like(v) for s, v in a.items()}
    if len(a) < len(seeds) or len(b) < len(seeds):
        return "no per-item results in some records"
    if len({x.size for x in [*a.values(), *b.values()]}) != 1:
        return "per-item results of different eval sets"
    return np.stack([a[s] - b[s] for s in seeds])  # (S, I)


def _bootstrap(
    m: Measure, records: ArmRecords, metric: str, seeds: tuple[int, ...]
) -> tuple[float, float] | str:
    """The item x seed bootstrap CI of the claim's estimate, or why there is none."""
    diffs = _item_diffs(m, records, metric, seeds)
    if isinstance(diffs, str):
        return diffs
    if len(seeds) < 2:
        return "fewer than 2 seeds"
    return item_seed_bootstrap(diffs, confidence=0.95)


def evaluate(
    claim: Claim, records: ArmRecords, scale: str, universe: Universe | None = None, paper: str = ""
) -> ClaimResult:
    """Judge one claim on the finished canonical records of one scale (arm -> seed -> record):
    the estimate and its CI, the verdict, then power (underpowered) and gates (untestable).
    A correlation reads `universe` (paper -> arm -> seed -> record, every package at this scale;
    default: `paper`'s own records)."""
    m = claim.measure
    missing = [a for a in m.arms if not records.get(a)]
    if missing:
        return ClaimResult(claim, scale, NOT_RUN, None, notes=(f"no runs of {', '.join(missing)}",))
    if m.kind == "correlation":
        universe = universe if universe is not None else {paper: records}
        return _evaluate_correlation(claim, records, scale, universe, paper)
    if m.kind == "config_diff":
        counts, changed = config_diff(records[m.treatment], records[m.control])  # type: ignore[index]
        est = fact_estimate(counts)
        shown = "; ".join(f"{k}: {_short_value(a)} → {_short_value(b)}" for k, a, b in _triples(changed))
        notes = (f"changed: {shown}",) if shown else ()
        run_ids = {a: [_short(records[a][s].get("run_id")) for s in est.seeds] for a in dict.fromkeys(m.arms)}
        if not est.n:
            return ClaimResult(claim, scale, NOT_RUN, est, run_ids, notes)
        result, power, gates = _power_and_gates(claim, records, est, verdict(m, est), scale)
        return ClaimResult(claim, scale, result, est, run_ids, notes, power, gates)
    metric = m.metric_at(scale)
    if metric is None:
        return ClaimResult(
            claim, scale, NOT_RUN, None, notes=(f"the claim names no metric for scale {scale}",)
        )

    notes: list[str] = []
    if m.kind == "effect":
        check_pairs(claim.id, m.treatment, records[m.treatment], m.control, records[m.control])  # type: ignore[arg-type,index]
        t = _per_seed(records[m.treatment], metric, m.at, notes, m.treatment, m)  # type: ignore[index,arg-type]
        c = _per_seed(records[m.control], metric, m.at, notes, m.control, m)  # type: ignore[index,arg-type]
        for a, b, arm in ((t, c, m.treatment), (c, t, m.control)):
            unpaired = sorted(set(a) - set(b))
            if unpaired:
                notes.append(f"unpaired seed(s) of {arm} dropped: {', '.join(map(str, unpaired))}")
        est = paired_effect(t, c)
        diffs = {s: t[s] - c[s] for s in est.seeds}
    elif m.kind == "change":
        fin = _per_seed(records[m.arm], metric, "final", notes, m.arm, m)  # type: ignore[index,arg-type]
        init = _per_seed(records[m.arm], metric, "init", notes, m.arm, m)  # type: ignore[index,arg-type]
        est = paired_effect(fin, init)
        diffs = {s: fin[s] - init[s] for s in est.seeds}
    else:
        diffs = _per_seed(records[m.arm], metric, m.at, notes, m.arm, m)  # type: ignore[index,arg-type]
        est = summarize(diffs)

    ci_method = "t"
    if m.ci == "bootstrap" and est.n >= 1:
        boot = _bootstrap(m, records, metric, est.seeds)
        if isinstance(boot, tuple):
            est = replace(est, ci=boot)
            ci_method = "item × seed bootstrap"
        else:
            notes.append(f"bootstrap asked for, t used: {boot}")

    # Between-base spread: the estimate per base model, when the seeds used span several.
    anchor = m.treatment if m.kind == "effect" else m.arm
    by_label: dict[str, dict[int, float]] = {}
    for s, d in diffs.items():
        by_label.setdefault(base_label(records[anchor][s]), {})[s] = d  # type: ignore[index]
    by_base = {b: summarize(v) for b, v in sorted(by_label.items())} if len(by_label) > 1 else None

    run_ids = {a: [_short(records[a][s].get("run_id")) for s in est.seeds] for a in dict.fromkeys(m.arms)}
    if est.n < 2:
        notes.append(f"single-seed row (n={est.n}): no CI, so inconclusive whatever its estimate")
        # What one seed can still say: how far the estimate moves when only its eval items are
        # resampled (eval noise; the seed's own noise is unmeasured), where the records keep items.
        diffs_1 = _item_diffs(m, records, metric, est.seeds) if est.n == 1 else None
        if isinstance(diffs_1, np.ndarray):
            lo, hi = item_bootstrap(diffs_1[0], confidence=0.95)
            notes.append(f"eval items alone: 95% interval [{lo:+.3f}, {hi:+.3f}]")
    result, power, gates = _power_and_gates(claim, records, est, verdict(m, est), scale)
    if m.report_only and scale in m.report_only:
        result = REPORTED
        notes.append(f"shown, not judged: {m.report_only[scale]}")
    return ClaimResult(claim, scale, result, est, run_ids, tuple(notes), power, gates, ci_method, by_base)


def _short_value(v: Any) -> str:
    return "—" if v is None else str(v)


def _triples(changed: Mapping[str, tuple[Any, Any]]) -> list[tuple[str, Any, Any]]:
    return [(k, a, b) for k, (a, b) in changed.items()]


def _evaluate_correlation(
    claim: Claim, records: ArmRecords, scale: str, universe: Universe, paper: str
) -> ClaimResult:
    m = claim.measure
    if m.papers == "all":
        chosen = dict(universe)
    else:
        wanted = m.papers or (paper,)
        chosen = {p: universe.get(p, {}) for p in wanted}
    metrics = [v for v in (m.x, m.y, m.versus) if v is not None]
    points = run_points(chosen, *metrics)
    total = sum(len(seeds) for arms in chosen.values() for seeds in arms.values())
    if not points:
        note = f"no run of {', '.join(sorted(chosen)) or '(none)'} at this scale logged all of its metrics"
        return ClaimResult(claim, scale, NOT_RUN, None, notes=(note,))
    est = rank_correlation(points, versus=m.versus is not None)
    arms = {(p.paper, p.arm) for p in points}
    papers = sorted({p.paper for p in points})
    by_paper = ", ".join(f"{pp} {sum(p.paper == pp for p in points)}" for pp in papers)
    notes = [f"{len(points)} runs of {len(arms)} arms ({by_paper}); {total - len(points)} runs lack a metric"]
    notes.append("± sd and 95% CI: percentile bootstrap over arms (2000 resamples, fixed seed)")
    if est.ci is None:
        notes.append("fewer than 3 arms or too many tied resamples: no CI")
    result, power, gates = _power_and_gates(claim, records, est, verdict(m, est), scale)
    return ClaimResult(claim, scale, result, est, {}, tuple(notes), power, gates, points=tuple(points))


def evaluate_all(
    paper: ClaimedPaper, records: ArmRecords, scale: str, universe: Universe | None = None
) -> list[ClaimResult]:
    """Every claim of a paper at one scale, in file order (`universe`: see `evaluate`)."""
    return [evaluate(c, records, scale, universe, paper.slug) for c in paper.claims]
