"""What the report shows, collected once from the committed files; every page and the README's
results section are rendered from this (repro.report.html, repro.report.readme).

    papers = collect(root, results_dir, tables_dir)      # one PaperReport per paper, roster order

Sources: `paper_tables/index.yaml` (the roster: every paper of the suite, reproduced or not),
each `paper_tables/<slug>/claimed.yaml` judged on `results/<slug>/...` by the tables library
(`repro.tables.build.evaluate_paper`, the code that writes comparison.md), the comparison.md and
fig_*.png beside it, and the arm files under `experiments/<slug>/`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from repro.errors import ConfigError
from repro.tables.build import NO_SCALE, PaperResults, evaluate_paper
from repro.tables.claims import NOT_RECORDED, VERDICTS, ClaimResult, base_label, base_sha

ROSTER_FILE = "index.yaml"
HEADLINES = 3  # claims shown on the index when a paper marks none `headline: true`
_FIGURE = re.compile(r"^!\[(?P<caption>[^\]]*)\]\((?P<file>fig_[^)\s]+\.png)\)\s*$", re.M)
_COUNTS = re.compile(
    r"^## Claims at scale `(?P<scale>[^`]+)`\s*\n+(?P<n>\d+) claims: (?P<tally>[^\n]*)\.$", re.M
)
# "7 paper claims (6 underpowered, 1 not reproduced)": one role's part of the counts line.
_ROLE_PART = re.compile(r"\d+ (?:paper claims?|summary claims?|preconditions?) \((?P<tally>[^)]*)\)")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    slug: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str = Field(min_length=1)
    arxiv: str = ""
    what: str = ""


class _Roster(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    papers: list[_Entry]


@dataclass(frozen=True)
class Arm:
    """One arm file of a package."""

    name: str
    path: Path  # experiments/<slug>/<arm>.yaml
    text: str


@dataclass(frozen=True)
class Run:
    """One counted run record."""

    scale: str
    arm: str
    seed: int
    path: Path
    run_id: str
    git_sha: str
    dirty: bool | None
    wall_s: float | None
    reused_from: str | None
    tier: str | None
    base: str  # `base <k>` or the weights' sha256 prefix (repro.tables.claims.base_label)
    base_sha256: str  # of the chain's root base; NOT_RECORDED for records made before runs carried it


@dataclass(frozen=True)
class Figure:
    file: Path
    caption: str  # as comparison.md writes it
    alt: str  # a sentence saying what the figure shows


@dataclass
class PaperReport:
    """Everything the site shows about one paper."""

    slug: str
    title: str
    arxiv: str
    what: str
    evaluated: PaperResults | None = None  # None: no claimed.yaml yet
    comparison: Path | None = None  # comparison.md, when written
    figures: list[Figure] = field(default_factory=list)
    arms: list[Arm] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    readme: Path | None = None  # experiments/<slug>/README.md

    @property
    def status(self) -> str:
        """`not yet reproduced` (no claims file or no runs) or `runs at <scales>`."""
        if self.evaluated is None or not self.evaluated.runs.records:
            return "not yet reproduced"
        return "runs at " + ", ".join(f"`{s}`" for s in sorted(self.evaluated.runs.records))

    @property
    def reproduced(self) -> bool:
        return self.evaluated is not None and bool(self.evaluated.runs.records)

    def counts(self) -> dict[str, Counter]:
        """scale -> verdict -> number of claims, for the scales with runs."""
        if not self.reproduced:
            return {}
        return {
            scale: Counter(r.verdict for r in rows)
            for scale, rows in self.evaluated.results.items()  # type: ignore[union-attr]
            if scale != NO_SCALE
        }

    def headlines(self) -> list[ClaimResult]:
        """The claims marked `headline: true` (else the first HEADLINES claims that are not the
        suite's preconditions) at each scale with runs, each with an estimate."""
        if not self.reproduced:
            return []
        out = []
        for rows in self.evaluated.results.values():  # type: ignore[union-attr]
            claims = [r for r in rows if r.claim.role != "precondition"] or rows
            marked = [r for r in rows if r.claim.headline] or claims[:HEADLINES]
            out += [r for r in marked if r.estimate is not None and r.estimate.n > 0]
        return out

    def commits(self, scale: str | None = None) -> list[str]:
        """The code commits (short sha, `+dirty` when the tree was) the counted runs (of `scale`)
        came from."""
        runs = [r for r in self.runs if scale is None or r.scale == scale]
        return sorted({r.git_sha[:10] + ("+dirty" if r.dirty else "") for r in runs})

    def tiers(self) -> list[str]:
        return sorted({r.tier for r in self.runs if r.tier})


def load_roster(tables_dir: Path) -> list[_Entry]:
    """The roster in `tables_dir/index.yaml` (ConfigError naming the file and key otherwise)."""
    path = Path(tables_dir) / ROSTER_FILE
    if not path.exists():
        return []
    try:
        return _Roster.model_validate(yaml.safe_load(path.read_text()) or {}).papers
    except (ValidationError, yaml.YAMLError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {loc}: {first['msg']}") from None


def figure_alt(name: str, caption: str, scale: str) -> str:
    """A sentence for a figure's alt text, from its file name and comparison.md caption."""
    if name == f"fig_{scale}_effects.png":
        return (
            f"Horizontal bar chart at scale {scale}: each claim's estimated effect with its 95% "
            "confidence interval, coloured by verdict; the exact numbers are in the claims table above."
        )
    if name.startswith(f"fig_{scale}_corr_"):
        return (
            f"Scatter plot at scale {scale}, one dot per run coloured by paper: {caption}. The rank "
            "correlation and its interval are in the claims table above."
        )
    if " per arm (" in caption and ":" not in caption:
        metric = caption.split(" per arm (", 1)[0]
        return (
            f"Line chart at scale {scale}: {metric} against training step for each arm, the mean over "
            "seeds with a band from the lowest to the highest seed."
        )
    if " vs " in caption:
        return (
            f"Scatter plot at scale {scale}: {caption.split(': ', 1)[-1]}; a faint dot per seed and each "
            "arm's mean with error bars of one sd."
        )
    what = caption.split(": ", 1)[-1]
    return f"Bar chart at scale {scale}: {what}; bars are arm means over seeds, dots single seeds."


def comparison_counts(text: str) -> dict[str, Counter]:
    """scale -> verdict -> count as a comparison.md states them, summed over roles ("N claims:
    7 paper claims (6 underpowered, 1 not reproduced); 2 preconditions (2 reproduced)."; tables
    written before claims had roles: "N claims: a reproduced, b inconclusive.")."""
    out = {}
    for m in _COUNTS.finditer(text):
        tally: Counter = Counter()
        roles = [r.group("tally") for r in _ROLE_PART.finditer(m.group("tally"))]
        for part in ", ".join(roles or [m.group("tally")]).split(", "):
            n, _, verdict = part.partition(" ")
            tally[verdict] += int(n)
        if sum(tally.values()) != int(m.group("n")):
            raise ValueError(f"comparison.md: counts of scale {m.group('scale')} do not add up")
        out[m.group("scale")] = tally
    return out


def _runs(evaluated: PaperResults, results_dir: Path) -> list[Run]:
    runs = []
    for scale, arms in sorted(evaluated.runs.records.items()):
        for arm, seeds in sorted(arms.items()):
            for seed, rec in sorted(seeds.items()):
                prov: dict[str, Any] = rec.get("provenance") or {}
                reused = (prov.get("reused_from") or {}).get("record")
                tier = rec.get("tier") or prov.get("tier")
                runs.append(
                    Run(
                        scale,
                        arm,
                        seed,
                        Path(results_dir) / evaluated.paper.slug / scale / arm / f"seed{seed}.json",
                        str(rec.get("run_id") or ""),
                        str(prov.get("git_sha") or "unknown"),
                        prov.get("git_dirty"),
                        prov.get("wall_time_s"),
                        reused,
                        None if tier is None else str(tier),
                        base_label(rec),
                        base_sha(rec) or NOT_RECORDED,
                    )  # fmt: skip
                )
    return runs


def _figures(comparison: Path) -> list[Figure]:
    out = []
    for m in _FIGURE.finditer(comparison.read_text()):
        file = comparison.parent / m.group("file")
        scale = m.group("file").split("_")[1]
        out.append(Figure(file, m.group("caption"), figure_alt(file.name, m.group("caption"), scale)))
    return out


def collect(root: Path, results_dir: Path, tables_dir: Path) -> list[PaperReport]:
    """One PaperReport per roster paper (in roster order), then one per paper with a claims file
    that the roster does not list (slug order)."""
    roster = {e.slug: e for e in load_roster(tables_dir)}
    claimed = sorted(p.parent.name for p in Path(tables_dir).glob("*/claimed.yaml"))
    papers = []
    for slug in [*roster, *(s for s in claimed if s not in roster)]:
        entry = roster.get(slug)
        report = PaperReport(
            slug, entry.title if entry else slug, entry.arxiv if entry else "", entry.what if entry else ""
        )
        if slug in claimed:
            report.evaluated = evaluate_paper(slug, results_dir, tables_dir)
            report.title = entry.title if entry else report.evaluated.paper.paper
            report.arxiv = report.arxiv or report.evaluated.paper.arxiv
            report.runs = _runs(report.evaluated, results_dir)
        comparison = Path(tables_dir) / slug / "comparison.md"
        if comparison.exists():
            report.comparison = comparison
            report.figures = _figures(comparison)
        pkg = Path(root) / "experiments" / slug
        report.arms = [
            Arm(p.stem, p, p.read_text()) for p in sorted(pkg.glob("*.yaml")) if p.name != "suite.yaml"
        ]
        report.readme = pkg / "README.md" if (pkg / "README.md").exists() else None
        papers.append(report)
    return papers


def verdict_order(papers: list[PaperReport]) -> list[str]:
    """Verdict columns: every verdict the tables define (VERDICTS order), then any other seen."""
    seen = {v for p in papers for c in p.counts().values() for v in c}
    return [*VERDICTS, *sorted(seen - set(VERDICTS))]
