"""Generate `paper_tables/<slug>/comparison.md` and its figures from the committed run records.

    from repro.tables import write_all, write_tables
    write_tables("<slug>", Path("results"), Path("paper_tables"))

Reads `<tables_dir>/<slug>/claimed.yaml` and the canonical records
`<results_dir>/<slug>/<scale>/<arm>/seed<seed>.json` (failed runs `seed<seed>.failed.json` are
listed, never counted; `adhoc/` runs are ignored; a scale whose config says `publish: false`, the
smoke scale tiny, is never read). A comparison.md that counted more runs than are found now is kept
unless `force=True`, so a partial checkout cannot silently shrink a table. `require_head=<sha>`
refuses to write a table from records produced by another code commit.

The header says where the numbers come from: the code commit(s) of the records, the base models
(sha256) the runs started from, and per scale the tier (the suite's quick seeds, or more).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from repro.config.env import CONF_DIR
from repro.errors import ConfigError
from repro.io import atomic_write_text
from repro.paths import check_under
from repro.records import SCHEMAS, line_of, record_problem
from repro.tables.across import NOT_COMPUTATION, NOT_COMPUTATION_LEAVES
from repro.tables.claims import (
    NOT_RECORDED,
    NOT_RUN,
    ROLES,
    VERDICTS,
    ClaimedPaper,
    ClaimResult,
    GateResult,
    base_label,
    base_sha,
    evaluate_all,
    load_claimed,
    metric_value,
)
from repro.tables.figures import sort_arms, write_figures
from repro.tables.stats import ALPHA, POWER, format_mean_sd, mean_sd

RUNS_MARKER = re.compile(r"<!--\s*repro:runs=(\d+)\s*-->")
_SEED_FILE = re.compile(r"^seed(\d+)(\.failed)?\.json$")
NO_SCALE = "—"


@dataclass(frozen=True)
class FailedRun:
    """A run that is listed but not counted: failed, or a record at a canonical path that is not a
    finished canonical run. `superseded`: a finished run of the same seed exists."""

    scale: str
    arm: str
    seed: int
    reason: str
    run_id: str
    path: Path
    superseded: bool = False


@dataclass
class RunSet:
    """The records of one paper: scale -> arm -> seed -> record, plus what was not counted."""

    records: dict[str, dict[str, dict[int, dict[str, Any]]]]
    failed: list[FailedRun]

    @property
    def n(self) -> int:
        return sum(len(seeds) for arms in self.records.values() for seeds in arms.values())


@dataclass
class TablesReport:
    """What `write_tables` did. `written` is False when an existing table counted more runs."""

    slug: str
    path: Path
    written: bool
    runs: int
    previous_runs: int | None
    message: str
    results: list[ClaimResult] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    failed: list[FailedRun] = field(default_factory=list)
    unchanged: bool = False  # written=True but the file was left as it was (same content)

    def verdict_counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for r in self.results:
            counts[r.verdict] += 1
        return dict(counts)


# ---------------------------------------------------------------------------------------------
# Records


def _read_json(path: Path) -> dict[str, Any]:
    """A record, checked: ConfigError naming the file, line and problem otherwise."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: unreadable run record ({e.strerror or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: run record is not valid JSON ({e.msg})") from None
    problem = record_problem(data)
    if problem is not None:
        keys, what = problem
        line = line_of(text, keys)
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{where}: run record: {'.'.join(keys) or 'record'}: {what}")
    return data


def unpublished_scales() -> frozenset[str]:
    """Scales whose config says `publish: false` (repro/conf/scale/*.yaml): smoke runs."""
    import yaml

    out = set()
    for path in (CONF_DIR / "scale").glob("*.yaml"):
        scale = (yaml.safe_load(path.read_text()) or {}).get("scale") or {}
        if scale.get("publish") is False:
            out.add(str(scale.get("name", path.stem)))
    return frozenset(out)


def load_records(results_dir: Path, slug: str) -> RunSet:
    """Canonical records of one paper; failed and non-canonical records go to `failed`. Records of
    a scale that does not publish are not read at all."""
    records: dict[str, dict[str, dict[int, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    failed: list[FailedRun] = []
    skip = unpublished_scales()
    for path in sorted(Path(results_dir, slug).glob("*/*/seed*.json")):
        match = _SEED_FILE.match(path.name)
        if not match or path.parent.parent.name in skip:
            continue
        scale, arm, seed = path.parent.parent.name, path.parent.name, int(match.group(1))
        rec = _read_json(path)
        reason = None
        if match.group(2):
            reason = str(rec.get("failure_reason") or f"status {rec.get('status', '?')}")
        else:
            if rec.get("schema") not in SCHEMAS:
                raise ConfigError(
                    f"run record {path}: unsupported schema {rec.get('schema')!r} (expected one of {SCHEMAS})"
                )
            where = {"paper": slug, "scale": scale, "arm": arm, "seed": seed}
            wrong = [f"{k}={rec[k]!r}" for k, v in where.items() if k in rec and rec[k] != v]
            if rec.get("status") != "FINISHED":
                reason = f"status {rec.get('status')!r}: {rec.get('failure_reason') or 'no reason recorded'}"
            elif rec.get("overrides"):
                reason = f"not canonical: overrides {rec['overrides']}"
            elif wrong:
                reason = f"record says {', '.join(wrong)}, which does not match its path"
        if reason is None:
            records[scale][arm][seed] = rec
        else:
            failed.append(FailedRun(scale, arm, seed, reason, str(rec.get("run_id") or ""), path))
    failed = [
        FailedRun(f.scale, f.arm, f.seed, f.reason, f.run_id, f.path, f.seed in records[f.scale][f.arm])
        for f in failed
    ]
    plain = {s: {a: dict(seeds) for a, seeds in arms.items() if seeds} for s, arms in records.items()}
    return RunSet({s: arms for s, arms in plain.items() if arms}, failed)


# ---------------------------------------------------------------------------------------------
# Formatting


def _fmt(x: float, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    # Fixed decimals read best for accuracies and shares; tiny and huge values keep their digits.
    spec = ".1e" if 0 < abs(x) < 0.001 else ".0f" if abs(x) >= 1000 else ".3f"
    return format(x, ("+" if signed else "") + spec)


def format_number(x: float, signed: bool = False) -> str:
    """A number as the tables write it (3 decimals; tiny and huge values keep their digits)."""
    return _fmt(x, signed)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _prediction(r: ClaimResult) -> str:
    m = r.claim.measure
    if m.kind in ("value", "config_diff"):
        return f"claimed range [{_fmt(m.range[0])}, {_fmt(m.range[1])}]"  # type: ignore[index]
    if m.direction == 0 and m.better == 0:
        return f"predicted ≈ 0: no difference (CI within ±{_fmt(m.min_effect)})"
    if m.direction == 0:
        bound = f"< {_fmt(m.min_effect, True)}" if m.better > 0 else f"> {_fmt(-m.min_effect, True)}"
        return f"predicted: no helpful effect (CI {bound})"
    text = f"predicted {'>' if m.direction > 0 else '<'} 0, min effect {_fmt(m.min_effect)}"
    if m.range is not None:
        text += f", claimed range [{_fmt(m.range[0])}, {_fmt(m.range[1])}]"
    return text


def _power_cell(r: ClaimResult) -> str:
    pw, kind = r.power, r.claim.measure.kind
    if pw is None:
        what = {"value": "value claim", "config_diff": "a fact of the configuration"}.get(kind)
        return f"— ({what})" if what and r.estimate is not None else "—"
    if kind == "correlation":  # the MDE of its bootstrap sd; more arms narrow it, not only seeds
        if not math.isfinite(pw.mde):
            return f"— (n={pw.n} runs, no bootstrap sd)"
        return f"MDE {_fmt(pw.mde)}<br><sub>bootstrap sd {_fmt(pw.sd)}, n={pw.n} runs</sub>"
    if pw.n < 2 or not math.isfinite(pw.mde):
        return f"— (n={pw.n})"
    need = "—" if math.isnan(pw.needed) else "> 10⁶" if math.isinf(pw.needed) else f"{pw.needed:.0f}"
    m = r.claim.measure.min_effect
    return f"MDE {_fmt(pw.mde)}<br><sub>sd of Δ {_fmt(pw.sd)}, n={pw.n}; seeds for {_fmt(m)}: {need}</sub>"


def _gate_line(g: GateResult) -> str:
    gate = g.gate
    why = f", {gate.why}" if gate.why else ""
    if g.holds is None:
        return f"gate {gate.describe()}{why}: not logged"
    values = list(g.values.values())
    measured = _fmt(values[0]) if len(values) == 1 else format_mean_sd(*mean_sd(values), _fmt)
    mark = "met" if g.holds else "FAILED"
    if gate.over == "mean":
        return f"gate {gate.describe()}{why}: {measured}, CI end {_fmt(gate.bound(g.values))}: {mark}"
    return f"gate {gate.describe()}{why}: {measured}, {g.passed}/{len(values)} seeds: {mark}"


def _claim_row(r: ClaimResult, records_rel: str = "") -> list[str]:
    """One claim's row. Run ids link to their records, `records_rel` (the paper's results folder
    relative to the table) + `/<scale>/<arm>/seed<k>.json`."""
    c = r.claim
    role = "" if c.role == "paper" else f" *({c.role})*"
    claim = f"**{c.id}**{role}: {c.text}<br><sub>{c.measure.describe(r.scale)}; {_prediction(r)}</sub>"
    summary = "—"
    if c.summary is not None:
        summary = c.summary.value + (f" ({c.summary.source})" if c.summary.source else "")
        if c.summary.correction:
            summary += f"<br>*sources: {c.summary.correction}*"
    est = r.estimate
    signed = c.measure.kind not in ("value", "config_diff")
    if est is None or est.n == 0:
        reproduced, ci = "—", "—"
    else:
        # With one seed the sd is nan, which _fmt writes as "—".
        reproduced = format_mean_sd(est.mean, est.sd, lambda x: _fmt(x, signed), _fmt, n=est.n)
        ci = "undefined (n<2)"
        if est.ci is not None:
            ci = f"[{_fmt(est.ci[0], signed)}, {_fmt(est.ci[1], signed)}]"
            if r.ci_method != "t":
                ci += f"<br><sub>{r.ci_method}</sub>"
    notes = list(r.notes)
    if r.by_base:
        spread = mean_sd(e.mean for e in r.by_base.values())[1]
        per = ", ".join(f"{b}: {_fmt(e.mean, signed)} (n={e.n})" for b, e in r.by_base.items())
        notes.insert(0, f"by base: {per}; sd between bases {_fmt(spread)}")
    if notes:
        reproduced += "<br><sub>" + "; ".join(notes) + "</sub>"
    verdict = f"**{r.verdict}**" + "".join(f"<br><sub>{_gate_line(g)}</sub>" for g in r.gates)
    seeds = list(est.seeds) if est is not None else []
    run_ids = (
        "<br>".join(
            f"{arm}: "
            + ", ".join(
                f"[{rid}]({records_rel}/{r.scale}/{arm}/seed{seed}.json)" if records_rel else rid
                for rid, seed in zip(ids, seeds)
            )
            for arm, ids in r.run_ids.items()
            if ids
        )
        or "—"
    )
    return [
        claim,
        f"{c.claimed} ({c.source})",
        summary,
        reproduced,
        ci,
        _power_cell(r),
        verdict,
        r.scale,
        run_ids,
    ]


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return _fmt(values[0])
    return format_mean_sd(*mean_sd(values), _fmt)


def _duration(seconds: list[float]) -> str:
    if not seconds:
        return "—"
    s = float(np.mean(seconds))
    return f"{s:.0f} s/run" if s < 120 else f"{s / 60:.1f} min/run" if s < 7200 else f"{s / 3600:.1f} h/run"


def _all_records(runs: RunSet, scales: Sequence[str] | None = None) -> list[dict[str, Any]]:
    return [
        rec
        for scale, arms in runs.records.items()
        if scales is None or scale in scales
        for seeds in arms.values()
        for rec in seeds.values()
    ]


def _git(runs: RunSet) -> str:
    """The code commit(s) the records came from, with run counts."""
    shas: dict[str, int] = defaultdict(int)
    dirty = 0
    for rec in _all_records(runs):
        prov = rec.get("provenance") or {}
        shas[str(prov.get("git_sha") or "unknown")[:10]] += 1
        dirty += bool(prov.get("git_dirty"))
    if not shas:
        return "git —"
    text = "git " + ", ".join(f"{sha} ({n} runs)" for sha, n in sorted(shas.items()))
    text += " (mixed: records from several commits)" if len(shas) > 1 else ""
    return text + (f", dirty tree in {dirty} run(s)" if dirty else "")


def _bases(runs: RunSet) -> str:
    """The base models the runs started from: label, sha256 prefix and run count."""
    seen: dict[tuple[str, str], int] = defaultdict(int)
    missing = 0
    for rec in _all_records(runs):
        sha = base_sha(rec)
        if sha is None:
            missing += 1
        else:
            seen[(base_label(rec), sha[:12])] += 1
    parts = [f"{label} sha256 {sha}… ({n} runs)" for (label, sha), n in sorted(seen.items())]
    if missing:
        parts.append(f"base checksum: {NOT_RECORDED} ({missing} runs, made before records carried it)")
    return "; ".join(parts) or "—"


def _config_signature(rec: dict[str, Any]) -> str:
    """An arm's config as every seed should share it. Left out: the keys that do not change the
    computation (`NOT_COMPUTATION` and `NOT_COMPUTATION_LEAVES`, as `across.changed_keys` leaves them out),
    the base a seed picks (`model.base`, also inside a peer's or teacher's model, and any nested
    `seed`), and a checkpoint path made from the seed's base
    (`<cache_dir>/checkpoints/<config hash>/seed3`, a teacher) reduced to `checkpoints/*`."""

    def kept(key: str) -> bool:
        return key not in (*NOT_COMPUTATION, *NOT_COMPUTATION_LEAVES, "model.base") and not key.endswith(
            (".model.base", ".seed")
        )

    def walk(node: Any, path: str = "") -> Any:
        if isinstance(node, dict):
            keys = {k: f"{path}.{k}" if path else k for k in node}
            return {k: walk(v, keys[k]) for k, v in node.items() if kept(keys[k])}
        if isinstance(node, list):
            return [walk(v, path) for v in node]
        if isinstance(node, str):
            return re.sub(r"checkpoints/[0-9a-f]+/seed\d+", "checkpoints/*", node)
        return node

    return json.dumps(walk(rec.get("config") or {}), sort_keys=True, default=str)


def _mixed_configs(runs: RunSet) -> list[str]:
    """Arms whose seeds were run under different configs (a setting changed between a quick tier and
    a later tier, with the old records kept): their rows pool both. One line per such arm."""
    lines = []
    for scale, arms in sorted(runs.records.items()):
        for arm, seeds in sorted(arms.items()):
            groups: dict[str, list[int]] = defaultdict(list)
            for seed, rec in sorted(seeds.items()):
                if rec.get("config"):
                    groups[_config_signature(rec)].append(seed)
            if len(groups) > 1:
                parts = " | ".join(", ".join(map(str, g)) for g in sorted(groups.values()))
                lines.append(f"`{scale}/{arm}`: {len(groups)} configs (seeds {parts})")
    return lines


def _tier(arms: dict[str, dict[int, Any]], suite_seeds: Sequence[int] | None) -> str:
    """Which tier made a scale's records: the suite's quick seeds, more (power), or fewer."""
    seeds = sorted({s for by_seed in arms.values() for s in by_seed})
    most = max((len(by_seed) for by_seed in arms.values()), default=0)
    listed = ", ".join(map(str, seeds)) if len(seeds) <= 12 else f"{seeds[0]}–{seeds[-1]} ({len(seeds)})"
    if suite_seeds is None:
        return f"seeds {listed}"
    quick = sorted(suite_seeds)
    if most > len(quick):
        return f"power tier: up to {most} seeds per arm (seeds {listed}; the quick tier's are {quick})"
    if all(sorted(by_seed) == quick for by_seed in arms.values()):
        return f"quick tier: the suite's seeds {', '.join(map(str, quick))}"
    return f"partial: seeds {listed} (the quick tier's are {quick})"


def check_head(runs: RunSet, head: str, scales: Sequence[str] | None = None) -> None:
    """ConfigError unless every record (of `scales`, default all) was produced by HEAD's code: at
    commit `head`, or by code with the fingerprint of the code here (`provenance.code_sha256`: a
    later commit that changed only docs, tests, tables or records keeps its records current)."""
    from repro.config import find_root
    from repro.provenance import code_sha256

    here = code_sha256(find_root())  # the fingerprint of the code here (a few ms)
    other: dict[str, list[str]] = defaultdict(list)
    for scale, arms in runs.records.items():
        if scales is not None and scale not in scales:
            continue
        for arm, seeds in arms.items():
            for seed, rec in seeds.items():
                prov = rec.get("provenance") or {}
                sha = str(prov.get("git_sha") or "unknown")
                if sha == head:
                    continue
                if prov.get("code_sha256") == here:
                    continue
                other[sha[:10]].append(f"{scale}/{arm}/seed{seed}")
    if other:
        found = "; ".join(
            f"{sha}: {len(v)} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})" for sha, v in other.items()
        )
        raise ConfigError(
            f"--require-head: records not produced by the code at HEAD {head[:10]} (commit, or code "
            f"fingerprint): {found}; rerun them "
            "(repro reproduce) or drop the flag"
        )


def _runs_table(paper: ClaimedPaper, runs: RunSet) -> list[str]:
    lines = [
        "| scale | arm | seeds | status | ID greedy acc (final) | OOD greedy acc (final) | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    failed_by = defaultdict(list)
    for f in runs.failed:
        failed_by[(f.scale, f.arm)].append(f)
    scales = sorted(set(runs.records) | {f.scale for f in runs.failed}) or [NO_SCALE]
    for scale in scales:
        recs = runs.records.get(scale, {})
        arms = sort_arms(list(set(paper.arms) | set(recs) | {a for s, a in failed_by if s == scale}))
        for arm in arms:
            seeds = recs.get(arm, {})
            fails = failed_by.get((scale, arm), [])
            parts = [f"{len(seeds)} finished"] if seeds else []
            parts += [f"{len(fails)} not counted (see below)"] if fails else []
            status = ", ".join(parts)
            acc = {}
            for m in ("eval/id/greedy_acc", "eval/ood/greedy_acc"):
                acc[m] = [v for r in seeds.values() if (v := metric_value(r, m, "final")) is not None]
            walls = [(r.get("provenance") or {}).get("wall_time_s") for r in seeds.values()]
            walls = [float(w) for w in walls if w is not None]
            lines.append(
                _row(
                    [
                        scale,
                        arm,
                        ", ".join(map(str, sorted(seeds))) or "—",
                        status or NOT_RUN,
                        _mean_sd(acc["eval/id/greedy_acc"]),
                        _mean_sd(acc["eval/ood/greedy_acc"]),
                        _duration(walls),
                    ]
                )
            )
    return lines


def _summary_section(paper: ClaimedPaper, results: dict[str, list[ClaimResult]]) -> list[str]:
    """Popular-summary statements (claims' `summary` and `summary_only`) beside what the sources say
    and the claim that checks them; claims sharing one summary share a row."""
    checked: dict[tuple[str, str, str], list[str]] = {}
    for c in paper.claims:
        if c.summary is not None:
            s = c.summary
            verdicts = ", ".join(
                f"{scale}: {r.verdict}" for scale, rows in results.items() for r in rows if r.claim is c
            )
            checked.setdefault((s.value, s.source, s.correction), []).append(f"**{c.id}** ({verdicts})")
    for s in paper.summary_only:
        checked.setdefault((s.value, s.source, s.correction), []).append("no measurable counterpart")
    if not checked:
        return []
    lines = [
        "## Popular summary vs paper",
        "",
        "| popular summary says (source) | the sources say | checked by |",
        "|---|---|---|",
    ]
    for (value, source, correction), by in checked.items():
        lines.append(_row([value + (f" ({source})" if source else ""), correction or "—", "<br>".join(by)]))
    return lines + [""]


def _reproduced_cell(seeds: dict[int, dict[str, Any]], metric: str) -> str:
    values = [v for r in seeds.values() if (v := metric_value(r, metric, "final")) is not None]
    if not values:
        return "not logged"
    mean, sd = mean_sd(values)
    # Three significant digits of the mean (drift and forgetting are often 0.00x), the sd to match.
    d = 3 if mean == 0 or abs(mean) >= 0.1 else min(2 - math.floor(math.log10(abs(mean))), 8)
    if len(values) == 1:
        return f"{mean:.{d}f} (n=1)"
    return format_mean_sd(mean, sd, f"{{:.{d}f}}".format, n=len(values))


def _table_section(paper: ClaimedPaper, runs: RunSet) -> list[str]:
    """The paper's results table beside ours: per scale with runs, per listed arm and column, the
    paper's value and `final[metric]` as mean ± sd over the arm's canonical seeds."""
    table = paper.table
    if table is None:
        return []
    out = [f"## {table.title}: paper vs reproduced", ""]
    if table.source:
        out += [f"Paper values from {table.source}.", ""]
    header = ["arm"] + [f"{c.name} {side}" for c in table.columns for side in ("paper", "ours")]
    for scale in sorted(runs.records) or [NO_SCALE]:
        recs = runs.records.get(scale, {})
        if recs:
            cols = ", ".join(
                f"{c.name} = `{c.metric_at(scale)}`"
                if c.metric_at(scale)
                else f"{c.name} = – (none at this scale)"
                for c in table.columns
            )
            out += [f"### Scale `{scale}`", "", f"Columns at `{scale}`: {cols}.", ""]
        else:
            out += ["No runs yet.", ""]
        out += [_row(header), "|" + "---|" * len(header)]
        for arm, paper_values in table.rows:
            cells = [arm]
            for c in table.columns:
                claimed = paper_values.get(c.name)
                metric = c.metric_at(scale)
                if not recs.get(arm):
                    ours = NOT_RUN
                elif metric is None:
                    ours = "–"
                else:
                    ours = _reproduced_cell(recs[arm], metric)
                cells += ["–" if claimed is None else format(claimed, "g"), ours]
            out.append(_row(cells))
        out.append("")
    out += [
        "paper: the value in `claimed.yaml`; ours: mean ± sd over seeds (ddof=1) of each run's final "
        "value, n = seeds that logged it; –: no value.",
        "",
    ]
    return out


def _headline(rows: list[ClaimResult]) -> str:
    """`13 claims: 8 paper claims (2 reproduced, ...); 3 summary claims (...); 2 preconditions (...).`"""
    names = {"paper": "paper claim", "summary": "summary claim", "precondition": "precondition"}
    parts = []
    for role in ROLES:
        mine = [r for r in rows if r.claim.role == role]
        if not mine:
            continue
        counts: dict[str, int] = defaultdict(int)
        for r in mine:
            counts[r.verdict] += 1
        tally = ", ".join(f"{n} {v}" for v, n in counts.items())
        parts.append(f"{len(mine)} {names[role]}{'s' if len(mine) != 1 else ''} ({tally})")
    return f"{len(rows)} claims: " + "; ".join(parts) + "."


def _kinds_note(paper: ClaimedPaper) -> str:
    """How to read the claim kinds beyond effect/change/value, for a paper that has them."""
    kinds = {c.measure.kind for c in paper.claims}
    note = ""
    if "correlation" in kinds:
        note += (
            " A `correlation` is Spearman's ρ over runs (one point per run), its ± and 95% CI from a "
            "bootstrap over arms; its MDE is that of a normal test on the bootstrap sd, and it is "
            "**underpowered** on the same terms."
        )
    if "config_diff" in kinds:
        note += (
            " A `config_diff` counts the config values two arms' records differ in: a fact of the "
            "configuration, so its interval is the range over seeds and it has no power."
        )
    return note


def render_markdown(
    paper: ClaimedPaper,
    runs: RunSet,
    results: dict[str, list[ClaimResult]],
    figures: list[tuple[str, Path]],
    generated_at: datetime,
    suite_seeds: Sequence[int] | None = None,
    records_rel: str = "",
) -> str:
    """The whole comparison.md as a string (figure paths are written relative to it; run ids link
    to their records under `records_rel`, the paper's results folder relative to the table)."""
    when = generated_at.strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"# {paper.paper}",
        "",
        (f"arXiv [{paper.arxiv}](https://arxiv.org/abs/{paper.arxiv})" if paper.arxiv else "no arXiv paper")
        + " · claims and sources: `claimed.yaml`",
        "",
        f"generated by `repro tables` from {runs.n} runs at {when}, {_git(runs)}. "
        "Generated file: do not edit, rerun `repro tables`.",
        "",
        f"Base models (sha256 of the weights runs started from): {_bases(runs)}.",
        "",
        *(
            [
                "**Mixed configs** (an arm's seeds ran under different settings and its rows pool them; "
                "delete the stale records and rerun): " + "; ".join(mixed) + ".",
                "",
            ]
            if (mixed := _mixed_configs(runs))
            else []
        ),
        f"<!-- repro:runs={runs.n} -->",
        "",
    ]
    header = [
        "| claim | claimed (source) | popular summary | reproduced: mean ± sd (n) | 95% CI | power (80%) "
        "| verdict | scale | run ids |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scale, rows in results.items():
        recs = runs.records.get(scale, {})
        tier = f"Tier: {_tier(recs, suite_seeds)}." if recs else "No runs at this scale."
        out += [f"## Claims at scale `{scale}`", "", f"{_headline(rows)}", "", tier, "", *header]
        out += [_row(_claim_row(r, records_rel)) for r in rows]
        out.append("")
    out += [
        "**How to read.** Effects are treatment − control paired by (base, seed) (only seeds both arms "
        "ran, from the same base model); `change` is final − initial within an arm per seed; `value` is "
        "an arm's mean over seeds. sd over seeds (ddof=1); 95% CI from Student's t unless the cell names "
        "the item × seed bootstrap (eval items resampled as well as seeds). `min_effect` and ranges come "
        "from `claimed.yaml`. "
        f"Power: MDE is the smallest true effect these n paired seeds detect with {POWER:.0%} power "
        f"(one-sided paired t, α = {ALPHA}), from the observed sd of the differences; where the CI "
        "contains 0 and the MDE exceeds min_effect the verdict is **underpowered** (more seeds would "
        "decide it), kept apart from **inconclusive** (a design able to detect min_effect that still "
        "straddles). A claim may require mechanism gates (`requires:`), checked on every seed; when one "
        "fails the verdict is **untestable at this scale** and the gate's measured value is shown. "
        "Roles: paper claims, *(summary)* claims only the popular summary makes, *(precondition)* "
        "checks of the suite itself." + _kinds_note(paper) + " Verdicts:",
        "",
    ]
    out += [f"- **{v}**: {text}" for v, text in VERDICTS.items()]
    out += ["", *_table_section(paper, runs), *_summary_section(paper, results)]
    out += ["## Runs", "", *_runs_table(paper, runs), ""]
    if runs.failed:
        out += ["### Failed or excluded runs (not counted)", ""]
        for f in runs.failed:
            note = " A finished run of this seed exists and is the one counted." if f.superseded else ""
            rid = f" (run {f.run_id[:8]})" if f.run_id else ""
            name = f"seed {f.seed}"
            if records_rel:
                name = f"[seed {f.seed}]({records_rel}/{f.scale}/{f.arm}/{f.path.name})"
            out.append(f"- `{f.scale}/{f.arm}` {name}{rid}: {_cell(f.reason).rstrip('.')}.{note}")
        out.append("")
    if figures:
        out += ["## Figures", ""]
        for caption, path in figures:
            out += [f"![{caption}]({path.name})", ""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# Writing


def previous_runs(path: Path) -> int | None:
    """The run count recorded in an existing comparison.md, or None (no file, no marker)."""
    if not path.exists():
        return None
    match = RUNS_MARKER.search(path.read_text())
    return int(match.group(1)) if match else None


@dataclass
class PaperResults:
    """One paper's claims judged on its records: scale -> rows (one NO_SCALE entry without runs)."""

    paper: ClaimedPaper
    runs: RunSet
    results: dict[str, list[ClaimResult]]


def load_paper(slug: str, results_dir: Path, tables_dir: Path) -> tuple[ClaimedPaper, RunSet]:
    """`tables_dir/<slug>/claimed.yaml` and the records of `slug` (ConfigError if either is bad)."""
    claimed_path = Path(tables_dir) / slug / "claimed.yaml"
    if not claimed_path.exists():
        raise ConfigError(f"no claims file for paper '{slug}': {claimed_path} does not exist")
    return load_claimed(claimed_path), load_records(Path(results_dir), slug)


def judge(paper: ClaimedPaper, runs: RunSet, results_dir: Path) -> dict[str, list[ClaimResult]]:
    """Every claim of `paper` at every scale with runs (correlation claims also read every other
    package's records at that scale)."""
    universe: dict[str, RunSet] = {paper.slug: runs}
    if any(c.measure.kind == "correlation" for c in paper.claims) and Path(results_dir).is_dir():
        others = (p for p in Path(results_dir).iterdir() if p.is_dir() and not p.name.startswith("."))
        for d in sorted(p for p in others if p.name != paper.slug):
            universe[d.name] = load_records(Path(results_dir), d.name)
    results = {}
    for scale in sorted(runs.records) or [NO_SCALE]:
        at_scale = {p: rs.records.get(scale, {}) for p, rs in universe.items()}
        results[scale] = evaluate_all(paper, runs.records.get(scale, {}), scale, at_scale)
    return results


def evaluate_paper(slug: str, results_dir: Path, tables_dir: Path) -> PaperResults:
    """Load one paper's claims and records and judge every claim (what `write_tables` writes and
    `repro report` publishes)."""
    paper, runs = load_paper(slug, results_dir, tables_dir)
    return PaperResults(paper, runs, judge(paper, runs, results_dir))


def write_tables(
    slug: str,
    results_dir: Path,
    tables_dir: Path,
    force: bool = False,
    suite_seeds: Sequence[int] | None = None,
    require_head: str | None = None,
    head_scales: Sequence[str] | None = None,
) -> TablesReport:
    """Write `tables_dir/<slug>/comparison.md` and its `fig_*.png` from the run records of `slug`.

    Refuses (prints why, returns `written=False`, touches nothing) when the existing comparison.md
    counted more runs than are found now, unless `force`. `suite_seeds` (the quick tier's) lets the
    table say which tier made it. `require_head`: a commit sha every record (of `head_scales`,
    default all) must come from, else ConfigError before anything is written. Effects whose paired
    runs started from different base models raise ConfigError too."""
    out_dir = check_under(Path(tables_dir) / slug, tables_dir, "tables")
    paper, runs = load_paper(slug, results_dir, tables_dir)
    if require_head is not None:
        check_head(runs, require_head, head_scales)
    md_path = out_dir / "comparison.md"

    before = previous_runs(md_path)
    if before is not None and before > runs.n and not force:
        msg = (
            f"{slug}: NOT overwriting {md_path}: it counted {before} runs, only {runs.n} found now "
            f"in {Path(results_dir) / slug}. Pass force=True (--force) to overwrite."
        )
        print(msg, file=sys.stderr)
        return TablesReport(slug, md_path, False, runs.n, before, msg, failed=runs.failed)

    results = judge(paper, runs, results_dir)
    figures: list[tuple[str, Path]] = []
    for scale, rows in results.items():
        recs = runs.records.get(scale, {})
        if recs:
            figures += write_figures(recs, rows, scale, out_dir, paper.figures, paper.curves)
    # Figures of scales/metrics that no longer have data would be stale.
    keep = {p.name for _, p in figures}
    for old in out_dir.glob("fig_*.png"):
        if old.name not in keep:
            old.unlink()

    records_rel = Path(os.path.relpath(Path(results_dir).resolve() / slug, out_dir.resolve())).as_posix()
    text = render_markdown(paper, runs, results, figures, datetime.now(UTC), suite_seeds, records_rel)
    old = md_path.read_text() if md_path.exists() else None
    unchanged = old is not None and _without_time(old) == _without_time(text)
    if not unchanged:  # only the generated-at time would change: leave the file as it is
        atomic_write_text(md_path, text)
    flat = [r for rows in results.values() for r in rows]
    report = TablesReport(slug, md_path, True, runs.n, before, "", flat, [p for _, p in figures], runs.failed)
    report.unchanged = unchanged
    tally = ", ".join(f"{n} {v}" for v, n in report.verdict_counts().items())
    verb = "kept (unchanged)" if unchanged else "wrote"
    report.message = f"{slug}: {verb} {md_path} from {runs.n} runs ({len(runs.failed)} not counted): {tally}"
    return report


_GENERATED_AT = re.compile(r"(?m)^(generated by `repro tables` from .*?) at \d{4}-\d\d-\d\d \d\d:\d\d UTC")


def _without_time(text: str) -> str:
    """comparison.md with its generated-at time blanked: what decides whether to rewrite it."""
    return _GENERATED_AT.sub(r"\1 at <time>", text, count=1)


def write_all(results_dir: Path, tables_dir: Path, force: bool = False) -> list[TablesReport]:
    """`write_tables` for every `tables_dir/*/claimed.yaml`, in slug order."""
    return [
        write_tables(p.parent.name, results_dir, tables_dir, force)
        for p in sorted(Path(tables_dir).glob("*/claimed.yaml"))
    ]


__all__ = [
    "FailedRun",
    "PaperResults",
    "RunSet",
    "TablesReport",
    "evaluate_paper",
    "format_number",
    "load_records",
    "previous_runs",
    "render_markdown",
    "write_all",
    "write_tables",
]
