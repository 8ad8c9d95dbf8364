"""Generate `paper_tables/<slug>/comparison.md` and its figures from the committed run records.

    from repro.tables import write_all, write_tables
    write_tables("<slug>", Path("results"), Path("paper_tables"))

Reads `<tables_dir>/<slug>/claimed.yaml` and the canonical records
`<results_dir>/<slug>/<scale>/<arm>/seed<seed>.json` (failed runs `seed<seed>.failed.json` are
listed, never counted; `adhoc/` runs are ignored). A comparison.md that counted more runs than are
found now is kept unless `force=True`, so a partial checkout cannot silently shrink a table.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from repro.errors import ConfigError
from repro.io import atomic_write_text
from repro.tables.claims import (
    NOT_RUN,
    VERDICTS,
    ClaimedPaper,
    ClaimResult,
    evaluate_all,
    load_claimed,
    metric_value,
)
from repro.tables.figures import sort_arms, write_figures
from repro.tables.stats import format_mean_sd, mean_sd

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

    def verdict_counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for r in self.results:
            counts[r.verdict] += 1
        return dict(counts)


# ---------------------------------------------------------------------------------------------
# Records


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"unreadable run record {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"run record {path}: expected a JSON object")
    return data


def load_records(results_dir: Path, slug: str) -> RunSet:
    """Canonical records of one paper; failed and non-canonical records go to `failed`."""
    records: dict[str, dict[str, dict[int, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    failed: list[FailedRun] = []
    for path in sorted(Path(results_dir, slug).glob("*/*/seed*.json")):
        match = _SEED_FILE.match(path.name)
        if not match:
            continue
        scale, arm, seed = path.parent.parent.name, path.parent.name, int(match.group(1))
        rec = _read_json(path)
        reason = None
        if match.group(2):
            reason = str(rec.get("failure_reason") or f"status {rec.get('status', '?')}")
        else:
            if rec.get("schema") != 1:
                raise ConfigError(f"run record {path}: unsupported schema {rec.get('schema')!r} (expected 1)")
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


def _claim_row(r: ClaimResult) -> list[str]:
    c = r.claim
    claim = f"**{c.id}**: {c.text}<br><sub>{c.measure.describe(r.scale)}; {_prediction(r)}</sub>"
    summary = "—"
    if c.summary is not None:
        summary = c.summary.value + (f" ({c.summary.source})" if c.summary.source else "")
        if c.summary.correction:
            summary += f"<br>*sources: {c.summary.correction}*"
    est = r.estimate
    if est is None or est.n == 0:
        reproduced, ci = "—", "—"
    else:
        signed = c.measure.kind not in ("value", "config_diff")
        # With one seed the sd is nan, which _fmt writes as "—".
        reproduced = format_mean_sd(est.mean, est.sd, lambda x: _fmt(x, signed), _fmt, n=est.n)
        ci = "undefined (n<2)"
        if est.ci is not None:
            ci = f"[{_fmt(est.ci[0], signed)}, {_fmt(est.ci[1], signed)}]"
    if r.notes:
        reproduced += "<br><sub>" + "; ".join(r.notes) + "</sub>"
    run_ids = "<br>".join(f"{arm}: {', '.join(ids)}" for arm, ids in r.run_ids.items() if ids) or "—"
    return [claim, f"{c.claimed} ({c.source})", summary, reproduced, ci, f"**{r.verdict}**", r.scale, run_ids]


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


def _git(runs: RunSet) -> str:
    shas: set[str] = set()
    dirty = 0
    for arms in runs.records.values():
        for seeds in arms.values():
            for rec in seeds.values():
                prov = rec.get("provenance") or {}
                shas.add(str(prov.get("git_sha") or "unknown")[:10])
                dirty += bool(prov.get("git_dirty"))
    if not shas:
        return "git —"
    text = "git " + ", ".join(sorted(shas)) + (" (mixed)" if len(shas) > 1 else "")
    return text + (f", dirty tree in {dirty} run(s)" if dirty else "")


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


def render_markdown(
    paper: ClaimedPaper,
    runs: RunSet,
    results: dict[str, list[ClaimResult]],
    figures: list[tuple[str, Path]],
    generated_at: datetime,
) -> str:
    """The whole comparison.md as a string (figure paths are written relative to it)."""
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
        f"<!-- repro:runs={runs.n} -->",
        "",
    ]
    header = [
        "| claim | claimed (source) | popular summary | reproduced: mean ± sd (n) | 95% CI | verdict | scale "
        "| run ids |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scale, rows in results.items():
        counts = defaultdict(int)
        for r in rows:
            counts[r.verdict] += 1
        tally = ", ".join(f"{n} {v}" for v, n in counts.items())
        out += [f"## Claims at scale `{scale}`", "", f"{len(rows)} claims: {tally}.", "", *header]
        out += [_row(_claim_row(r)) for r in rows]
        out.append("")
    out += [
        "**How to read.** Effects are treatment − control paired by seed (only seeds both arms ran); "
        "`change` is final − initial within an arm per seed; `value` is an arm's mean over seeds. "
        "sd over seeds (ddof=1); 95% CI from Student's t. `min_effect` and ranges come from "
        "`claimed.yaml`. Verdicts:",
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
            out.append(f"- `{f.scale}/{f.arm}` seed {f.seed}{rid}: {_cell(f.reason).rstrip('.')}.{note}")
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


def evaluate_paper(slug: str, results_dir: Path, tables_dir: Path) -> PaperResults:
    """Load `tables_dir/<slug>/claimed.yaml` and the records of `slug` and judge every claim at
    every scale with runs (correlation claims also read every other package's records)."""
    claimed_path = Path(tables_dir) / slug / "claimed.yaml"
    if not claimed_path.exists():
        raise ConfigError(f"no claims file for paper '{slug}': {claimed_path} does not exist")
    paper = load_claimed(claimed_path)
    runs = load_records(Path(results_dir), slug)
    universe: dict[str, RunSet] = {slug: runs}
    if any(c.measure.kind == "correlation" for c in paper.claims) and Path(results_dir).is_dir():
        for d in sorted(p for p in Path(results_dir).iterdir() if p.is_dir() and p.name != slug):
            universe[d.name] = load_records(Path(results_dir), d.name)
    results = {}
    for scale in sorted(runs.records) or [NO_SCALE]:
        at_scale = {p: rs.records.get(scale, {}) for p, rs in universe.items()}
        results[scale] = evaluate_all(paper, runs.records.get(scale, {}), scale, at_scale)
    return PaperResults(paper, runs, results)


def write_tables(slug: str, results_dir: Path, tables_dir: Path, force: bool = False) -> TablesReport:
    """Write `tables_dir/<slug>/comparison.md` and its `fig_*.png` from the run records of `slug`.

    Refuses (prints why, returns `written=False`, touches nothing) when the existing comparison.md
    counted more runs than are found now, unless `force`."""
    out_dir = Path(tables_dir) / slug
    evaluated = evaluate_paper(slug, results_dir, tables_dir)
    paper, runs, results = evaluated.paper, evaluated.runs, evaluated.results
    md_path = out_dir / "comparison.md"

    before = previous_runs(md_path)
    if before is not None and before > runs.n and not force:
        msg = (
            f"{slug}: NOT overwriting {md_path}: it counted {before} runs, only {runs.n} found now "
            f"in {Path(results_dir) / slug}. Pass force=True (--force) to overwrite."
        )
        print(msg, file=sys.stderr)
        return TablesReport(slug, md_path, False, runs.n, before, msg, failed=runs.failed)

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

    text = render_markdown(paper, runs, results, figures, datetime.now(UTC))
    atomic_write_text(md_path, text)
    flat = [r for rows in results.values() for r in rows]
    report = TablesReport(slug, md_path, True, runs.n, before, "", flat, [p for _, p in figures], runs.failed)
    tally = ", ".join(f"{n} {v}" for v, n in report.verdict_counts().items())
    report.message = f"{slug}: wrote {md_path} from {runs.n} runs ({len(runs.failed)} not counted): {tally}"
    return report


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
