"""`experiments/<slug>/suite.yaml`: what `repro reproduce <slug>` runs.

arms: [grpo, dapo, ...]    # arm files of the package
seeds: [1, 2, 3]           # every arm runs every seed
jobs: 2                    # parallel jobs (default 1)
reuse: true                # copy other arms' records of the same runs (default false; --reuse / --no-reuse)

`experiments/papers.yaml`: every paper the suite targets, implemented or not (`repro list`).

papers:
  - {slug: <slug>, title: "...", arxiv: "2605.00000", status: implemented | planned}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from repro.config.env import SLUG, SUITE_FILE, package_arms, package_dir, packages
from repro.config.schema_errors import first_error
from repro.errors import ConfigError


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    arms: list[str] = Field(min_length=1, description="arm names (files of the package)")
    seeds: list[int] = Field(min_length=1, description="seeds every arm runs")
    jobs: int = Field(1, ge=1, description="parallel jobs")
    reuse: bool = Field(False, description="copy other arms' records of the same runs, not run them")
    path: Path = Field(Path(), exclude=True)


def load_suite(root: Path, slug: str) -> Suite:
    """The checked suite of paper `slug` (ConfigError naming the file and key otherwise)."""
    known = packages(root)
    if slug not in known:
        raise ConfigError(
            f"unknown paper '{slug}'; papers in {root / 'experiments'}: {', '.join(known) or '(none)'}"
        )
    path = package_dir(root, slug) / SUITE_FILE
    if not path.exists():
        raise ConfigError(
            f"paper '{slug}' has no {path}; it should hold {{arms: [...], seeds: [...], jobs: N}}"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping {{arms, seeds, jobs}}, got {type(raw).__name__}")
    try:
        suite = Suite(**raw, path=path)
    except ValidationError as exc:
        key, what = first_error(exc)
        raise ConfigError(f"{path}: {key}: {what} (allowed keys: arms, seeds, jobs, reuse)") from None
    valid = package_arms(root, slug)
    bad = [a for a in suite.arms if a not in valid]
    if bad:
        raise ConfigError(
            f"{path}: arms: unknown arm(s) {', '.join(bad)}; arms of '{slug}': {', '.join(valid)}"
        )
    return suite


PAPERS_FILE = "papers.yaml"


class Paper(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    slug: str = Field(pattern=SLUG.pattern, description="the package folder under experiments/")
    title: str = Field(min_length=1)
    arxiv: str | None = Field(None, description="arXiv id, null if not a paper")
    status: Literal["implemented", "planned"]


class _PapersFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    papers: list[Paper]


def load_papers(root: Path) -> list[Paper]:
    """The papers of `experiments/papers.yaml`, then any package folder it does not list (as
    implemented, titled by its slug). ConfigError naming the file and key if it is malformed."""
    path = Path(root) / "experiments" / PAPERS_FILE
    declared: list[Paper] = []
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
        try:
            declared = _PapersFile.model_validate(raw).papers
        except ValidationError as exc:
            key, what = first_error(exc)
            raise ConfigError(f"{path}: {key}: {what}") from None
    listed = {p.slug for p in declared}
    extra = [Paper(slug=s, title=s, status="implemented") for s in packages(root) if s not in listed]
    return [*declared, *extra]
