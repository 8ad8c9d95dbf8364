"""Launching runs: Hydra jobs, sweeps, a paper's suite in waves, and its tables afterwards.

    outcomes = launch(overrides, multirun)     # one job or a Hydra multirun (any launcher)
    rc = reproduce(slug, ...)                  # validate every arm, run arms x seeds, build tables
    rc = reproduce(slug, power=True)           # + the seeds each claim needs for 80% power
    line, ok = build_tables(slug, results_dir, tables_dir)

Every Hydra job runs `job(cfg)`: finalize the config (paper/arm from the experiment path,
validation), then `runner.run_one`. A job never raises, so a multirun goes on past a failed or
misconfigured job; each returns a small outcome dict the summary counts.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repro import config, pipeline, provenance, records, runner, tracking
from repro.errors import ConfigError
from repro.registry import UnknownNameError
from repro.tables.arms import arm_table, sync_readme

log = logging.getLogger(__name__)


def _label(overrides: Sequence[str]) -> str:
    """What the summary calls a job: its own overrides (experiment, seed, swept values)."""
    return " ".join(o for o in overrides if not o.startswith("hydra")) or "(defaults)"


def job(cfg: DictConfig) -> dict[str, Any]:
    """The Hydra task function of every job: finalize the config, `run_one`, an outcome dict."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    choices = OmegaConf.to_container(hc.runtime.choices)
    name = _label(overrides)
    tracking.configure()
    try:
        cfg = config.finalize(cfg, choices, overrides)
        result = runner.run_one(cfg, overrides)
    except (ConfigError, UnknownNameError) as exc:
        if hc.mode == RunMode.MULTIRUN:  # a single run reports it as the CLI's error
            log.error("config error in %s (%s): %s", name, " ".join(overrides), exc)
        return {"status": "CONFIG_ERROR", "name": name, "message": str(exc)}
    except Exception as exc:  # e.g. the tracking store is unreachable: report, let the sweep go on
        log.exception("job %s failed before training", name)
        return {"status": "FAILED", "name": name, "message": f"{type(exc).__name__}: {exc}"}
    if result is None:
        return {"status": "FAILED", "name": name}
    return {**result, "name": name}


def _outcome(job_return: Any) -> dict[str, Any]:
    from hydra.core.utils import JobStatus

    if job_return.status == JobStatus.COMPLETED and isinstance(job_return._return_value, dict):
        return job_return._return_value
    overrides = " ".join(job_return.overrides or [])
    return {"status": "FAILED", "name": overrides, "message": repr(job_return._return_value)}


def _shutdown_joblib_workers() -> None:
    # loky keeps its workers for the next Parallel call, with the environment (REPRO_ROOT,
    # MLFLOW_TRACKING_URI) they were started with: a later launch in this process must get new ones.
    try:
        from joblib.externals.loky import reusable_executor
    except ImportError:
        return
    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True)


def launch(overrides: Sequence[str], multirun: bool) -> list[dict[str, Any]]:
    """Run one job or a Hydra multirun (any launcher); returns each job's outcome dict."""
    overrides = config.with_searchpath(overrides, config.prepare_environment())
    with config.hydra_app() as hydra:
        if multirun:
            returns = hydra.multirun(config.CONFIG_NAME, job, [*overrides, "hydra.mode=MULTIRUN"])
            outcomes = [_outcome(r) for batch in returns for r in batch]
            _shutdown_joblib_workers()
            return outcomes
        return [_outcome(hydra.run(config.CONFIG_NAME, job, [*overrides, "hydra.mode=RUN"]))]


def hydra_main(args: Sequence[str]) -> int:
    """Hand `repro run <args>` to hydra.main, for Hydra's own flags (--info, --help, ...)."""
    import hydra

    search_dir = config.prepare_environment()
    app = hydra.main(version_base="1.3", config_path=str(config.CONF_DIR), config_name=config.CONFIG_NAME)(
        job
    )
    saved = sys.argv
    sys.argv = ["repro run", *config.with_searchpath(args, search_dir)]
    try:
        app()
    finally:
        sys.argv = saved
    return 0


def summary(what: str, outcomes: list[dict[str, Any]], seconds: float) -> tuple[str, bool]:
    """'<what>: N runs: a finished, b failed in t s' plus the names of failed runs; (text, all ok)."""
    tally: dict[str, list[str]] = {"FINISHED": [], "FAILED": [], "CONFIG_ERROR": []}
    for o in outcomes:
        tally.setdefault(o.get("status", "FAILED"), []).append(str(o.get("name")))
    n_ok, n_failed, n_config = (len(tally[k]) for k in ("FINISHED", "FAILED", "CONFIG_ERROR"))
    config_errors = f", {n_config} config errors" if n_config else ""
    lines = [
        f"{what}: {len(outcomes)} runs: {n_ok} finished, {n_failed} failed{config_errors} in {seconds:.1f} s"
    ]
    for status in ("FAILED", "CONFIG_ERROR"):
        if tally[status]:
            lines.append(f"  {status.lower().replace('_', ' ')}: {', '.join(tally[status])}")
    return "\n".join(lines), n_ok == len(outcomes)


def waves(arms: Sequence[str], needs: dict[str, list[str]]) -> list[list[str]]:
    """Arms grouped so that every arm runs after the arms it needs (order kept within a wave)."""
    level: dict[str, int] = {}

    def depth(arm: str, seen: tuple[str, ...] = ()) -> int:
        if arm in seen:
            raise ConfigError(f"stages form a cycle: {' -> '.join([*seen, arm])}")
        if arm not in level:
            level[arm] = 1 + max((depth(a, (*seen, arm)) for a in needs.get(arm, [])), default=-1)
        return level[arm]

    for arm in arms:
        depth(arm)
    return [[a for a in arms if level[a] == k] for k in range(max(level.values()) + 1)]


def reproduce(
    slug: str,
    overrides: Sequence[str] = (),
    seeds: list[int] | None = None,
    jobs: int | None = None,
    arms: list[str] | None = None,
    dry_run: bool = False,
    power: bool = False,
    max_seeds: int = 30,
    require_head: bool = False,
) -> int:
    """Validate every arm, create the MLflow store, run arms x seeds as one multirun, build tables.
    With dry_run, stop after validating and printing the plan.

    power: the power tier. Run the quick tier's seeds as a pilot (only those without a finished
    record from the code at HEAD), then compute per claim the seeds its paired sd needs for 80%
    power at its min_effect, print the plan (runs, estimated CPU time) and run the missing seeds,
    at most `max_seeds` per arm. require_head: the tables must come from records of HEAD only."""
    tic = time.monotonic()
    root = config.find_root()
    config.prepare_environment(root)
    suite = config.load_suite(root, slug)
    arms = arms or suite.arms
    seeds = seeds or suite.seeds
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs: expected a positive integer, got {jobs}")
    if max_seeds < 2:
        raise ConfigError(f"--max-seeds: expected an integer >= 2, got {max_seeds}")
    jobs = min(jobs or suite.jobs, len(arms) * len(seeds))
    valid = config.package_arms(root, slug)
    bad = [a for a in arms if a not in valid]
    if bad:
        raise ConfigError(
            f"{suite.path}: unknown arm(s) {', '.join(bad)}; arms of '{slug}': {', '.join(valid)}"
        )
    user = [*overrides]
    for override in user:
        if override.split("=", 1)[0].lstrip("+~") in ("experiment", "seed"):
            raise ConfigError(
                f"reproduce sets experiment and seed itself; use --arms / --seeds, not {override}"
            )
    # Parallel jobs share the cores: one torch thread per core per job, unless the user says.
    threads = max(1, (os.cpu_count() or 1) // jobs)
    user_threads = [o for o in user if o.split("=", 1)[0].lstrip("+") == "trainer.threads"]
    if user_threads:
        threads = user_threads[-1].split("=", 1)[1]

    # Compose and validate every arm before anything runs: a typo fails in seconds, not hours.
    cfgs: dict[str, DictConfig] = {}
    needs: dict[str, list[str]] = {}  # arm -> the arms of this run whose outputs it needs
    with config.hydra_app() as hydra:
        for arm in arms:
            arm_overrides = [f"experiment={slug}/{arm}", f"seed={seeds[0]}", *user]
            try:
                cfg = config.compose(hydra, arm_overrides)
                stages = pipeline.plan(cfg, arm_overrides)
            except (ConfigError, UnknownNameError) as exc:
                raise ConfigError(f"{slug}/{arm}: {exc}") from None
            needs[arm] = [
                st.experiment.split("/", 1)[1] for st in stages if st.experiment.startswith(f"{slug}/")
            ]
            needs[arm] = [a for a in needs[arm] if a in arms]
            cfgs[arm] = cfg
    first = cfgs[arms[0]]
    uri, experiment = first.tracking.uri, first.tracking.experiment or slug
    scale = str(OmegaConf.select(first, "scale.name"))
    results_dir = Path(first.paths.results_dir)
    tables_dir = Path(first.paths.tables_dir)
    head = provenance.git_state(root)[0]
    if require_head and head == provenance.UNKNOWN:
        raise ConfigError(f"--require-head: {root} is not a git checkout, so there is no HEAD to require")
    canonical = not records.extra_overrides(user)
    swept = [*user, *([] if user_threads else [f"++trainer.threads={threads}"])]

    def sweeps_for(plan: dict[str, list[int]]) -> list[list[str]]:
        """Hydra multiruns for arm -> seeds: per wave, one per distinct seed list."""
        out = []
        for wave in waves(arms, needs):
            by_seeds: dict[tuple[int, ...], list[str]] = {}
            for arm in wave:
                if plan.get(arm):
                    by_seeds.setdefault(tuple(plan[arm]), []).append(arm)
            for arm_seeds, group in by_seeds.items():
                sweep = [
                    f"experiment={','.join(f'{slug}/{a}' for a in group)}",
                    f"seed={','.join(map(str, arm_seeds))}",
                    *swept,
                ]
                n = min(jobs, len(group) * len(arm_seeds))
                if n > 1:
                    sweep += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n}"]
                out.append(sweep)
        return out

    def missing(plan: dict[str, list[int]]) -> dict[str, list[int]]:
        """The (arm, seed) runs of `plan` with no finished canonical record from HEAD's code."""
        if not (power and canonical) or head == provenance.UNKNOWN:
            return plan
        done = _records_at(results_dir, slug, scale, head)
        return {arm: [s for s in arm_seeds if s not in done.get(arm, ())] for arm, arm_seeds in plan.items()}

    quick = missing({arm: list(seeds) for arm in arms})
    n_quick = sum(map(len, quick.values()))
    sweeps = sweeps_for(quick)
    tier = "power tier: pilot = the quick tier" if power else "quick tier"
    n_all = len(arms) * len(seeds)
    to_run = f", {n_quick} to run (the others have records from HEAD)" if n_quick < n_all else ""
    n_waves = sum(any(quick.get(a) for a in wave) for wave in waves(arms, needs))
    in_waves = f" in {n_waves} waves" if n_waves > 1 else ""
    print(
        f"repro reproduce {slug} ({tier}): {len(arms)} arms x {len(seeds)} seeds = {n_all} runs{to_run}"
        f"{in_waves}, {jobs} parallel job(s) x {threads} thread(s)",
        flush=True,
    )
    if power and not canonical:
        print("  note: overrides make the runs ad hoc; the power plan reads canonical records only")
    if dry_run:
        print(f"  validated: {', '.join(arms)}")
        for sweep in sweeps:
            print(f"  would run: repro run -m {' '.join(sweep)}")
        if power:
            plan = power_plan(slug, results_dir, tables_dir, scale, arms, seeds, max_seeds)
            _print_plan(plan, results_dir, slug, scale, missing(plan.seeds), jobs)
        return 0
    tracking.ensure_store(uri, experiment)
    outcomes = [o for sweep in sweeps for o in launch(sweep, multirun=True)]

    if power:
        plan = power_plan(slug, results_dir, tables_dir, scale, arms, seeds, max_seeds)
        todo = missing(plan.seeds)
        _print_plan(plan, results_dir, slug, scale, todo, jobs)
        outcomes += [o for sweep in sweeps_for(todo) for o in launch(sweep, multirun=True)]

    tables_line, tables_ok = build_tables(
        slug,
        results_dir,
        tables_dir,
        suite_seeds=suite.seeds,
        require_head=head if require_head else None,
        head_scales=[scale],
    )

    text, runs_ok = summary(f"\n{slug}", outcomes, time.monotonic() - tic)
    print(text)
    adhoc = " (ad-hoc: under <arm>/adhoc/)" if records.extra_overrides(user) else ""
    published = OmegaConf.select(first, "scale.publish", default=True)
    where = results_dir / slug / scale if published else results_dir / records.SMOKE_DIR / slug / scale
    smoke = "" if published else " (smoke scale: never published, not in the tables)"
    print(f"  records:  {where}{adhoc}{smoke}")
    print(f"  MLflow:   {uri} (experiment '{experiment}'); browse with `repro ui`")
    print(f"  tables:   {tables_line}")
    return 0 if runs_ok and tables_ok else 1


def _records_at(results_dir: Path, slug: str, scale: str, head: str) -> dict[str, set[int]]:
    """arm -> seeds with a finished canonical record produced by the code at `head`."""
    out: dict[str, set[int]] = {}
    for path in sorted((results_dir / slug / scale).glob("*/seed*.json")):
        if path.name.endswith(".failed.json"):
            continue
        try:
            rec = records.read_record(path)
        except (OSError, ValueError):
            continue
        prov = rec.get("provenance") or {}
        if rec.get("status") == "FINISHED" and not rec.get("overrides") and prov.get("git_sha") == head:
            out.setdefault(path.parent.name, set()).add(int(rec["seed"]))
    return out


@dataclass
class PowerPlan:
    """Seeds per arm the power tier asks for, and why: claim id -> (arms, seeds needed, capped, note)."""

    seeds: dict[str, list[int]]
    claims: list[tuple[str, tuple[str, ...], float, int, str]]


def power_plan(
    slug: str,
    results_dir: Path,
    tables_dir: Path,
    scale: str,
    arms: Sequence[str],
    pilot_seeds: Sequence[int],
    max_seeds: int,
) -> PowerPlan:
    """From the pilot's records: per effect/change claim, the paired seeds needed for 80% power at
    its min_effect (repro.tables.stats.seeds_needed on the pilot's sd), capped at `max_seeds`; each
    arm gets the most any of its claims needs. Claims whose gate failed (untestable) or that were
    not run ask for nothing more: seeds would not decide them."""
    from repro.tables.build import load_records
    from repro.tables.claims import NOT_RUN, UNTESTABLE, evaluate_all, load_claimed

    paper = load_claimed(tables_dir / slug / "claimed.yaml")
    runs = load_records(results_dir, slug)
    results = evaluate_all(paper, runs.records.get(scale, {}), scale)
    want = {arm: len(pilot_seeds) for arm in arms}
    claims = []
    for r in results:
        m = r.claim.measure
        if r.power is None:
            continue
        if r.verdict in (NOT_RUN, UNTESTABLE):
            claims.append((r.claim.id, m.arms, r.power.needed, 0, f"{r.verdict}: no more seeds"))
            continue
        needed = r.power.needed
        n = len(pilot_seeds) if needed != needed else int(min(max(needed, 2), max_seeds))  # NaN: keep
        note = "capped by --max-seeds" if needed == needed and needed > max_seeds else ""
        claims.append((r.claim.id, m.arms, needed, n, note))
        for arm in m.arms:
            if arm in want:
                want[arm] = max(want[arm], n)
    extra = iter(range(max(pilot_seeds) + 1, 10**9))
    order = list(pilot_seeds) + [next(extra) for _ in range(max(want.values()) - len(pilot_seeds))]
    return PowerPlan({arm: order[:n] for arm, n in want.items()}, claims)


def _print_plan(
    plan: PowerPlan, results_dir: Path, slug: str, scale: str, todo: dict[str, list[int]], jobs: int
) -> None:
    """The power tier's plan: per claim the seeds needed; per arm the runs to add and their cost,
    from the mean wall time and threads of the arm's pilot records."""
    print("power tier plan (80% power, one-sided alpha 0.025, at each claim's min_effect):")
    for cid, arms, needed, n, note in plan.claims:
        shown = "—" if needed != needed else "> 10^6" if needed == float("inf") else f"{needed:.0f}"
        print(f"  {cid}: {' vs '.join(arms)}: needs {shown} seeds -> {n}{f' ({note})' if note else ''}")
    cpu = 0.0
    for arm, arm_seeds in plan.seeds.items():
        walls = []
        for path in (results_dir / slug / scale / arm).glob("seed*.json"):
            if not path.name.endswith(".failed.json"):
                prov = records.read_record(path).get("provenance") or {}
                if prov.get("wall_time_s"):
                    walls.append(float(prov["wall_time_s"]) * float(prov.get("threads") or 1))
        each = sum(walls) / len(walls) if walls else float("nan")
        n = len(todo.get(arm, []))
        cpu += each * n
        print(f"  {arm}: {len(arm_seeds)} seeds, {n} to run (~{each / 60:.1f} CPU-min each)")
    total, hours = sum(map(len, todo.values())), cpu / 3600
    print(f"  total: {total} runs, ~{hours:.1f} CPU-hours (~{hours / max(1, jobs):.1f} h at {jobs} jobs)")


def pretrain(base: int, overrides: Sequence[str] = (), ship: bool = False) -> int:
    """`repro pretrain --base k`: rebuild micro base k (1 thread) and say whether its weights match
    the shipped checksum. With `ship`, the rebuilt base replaces the shipped folder."""
    with config.hydra_app() as hydra:
        cfg = config.compose(hydra, [f"model.base={base}", *overrides])
    if cfg.model.kind != "micro":
        raise ConfigError(f"model.kind: `repro pretrain` builds micro bases, got {cfg.model.kind!r}")
    from repro.models.micro import rebuild_base, shipped_dir

    out = (
        shipped_dir(base) if ship else Path(cfg.paths.cache_dir) / "micro_models" / "rebuilt" / f"base{base}"
    )
    print(f"repro pretrain: base {base} (pretraining seed {base}), 1 thread -> {out}", flush=True)
    r = rebuild_base(cfg.task, cfg.model, out)
    print(f"  rebuilt in {r['seconds']:.0f} s; weights sha256 {r['sha256']}")
    if r["shipped_sha256"] is None:
        print(f"  no shipped base {base} to compare with")
        return 0
    print(f"  shipped base {base}:          sha256 {r['shipped_sha256']}")
    if r["identical"]:
        print("  identical: the rebuilt weights match the shipped checksum")
        return 0
    if not r["same_spec"]:
        print("  differs: this config is not the one the shipped base was made with (see its base.json)")
    else:
        print(f"  DIFFERS from the shipped base with the same spec: max |dw| = {r['max_abs_diff']:.3g}")
    return 0 if ship else 1


def build_tables(
    slug: str,
    results_dir: Path,
    tables_dir: Path,
    force: bool = False,
    suite_seeds: Sequence[int] | None = None,
    require_head: str | None = None,
    head_scales: Sequence[str] | None = None,
) -> tuple[str, bool]:
    """Build one paper's tables: (one line saying what happened, ok). The package README's arm
    table is regenerated from its YAML files first. A paper without claimed.yaml is skipped; any
    other error is reported, not raised (runs are recorded). `suite_seeds` (default: the suite's)
    say which tier made the table; `require_head`: a commit every record must come from."""
    root = config.find_root()
    readme = config.package_dir(root, slug) / "README.md"
    if readme.exists():
        sync_readme(readme, arm_table(root, slug))
    if not (tables_dir / slug / "claimed.yaml").exists():
        return f"skipped: no {tables_dir / slug / 'claimed.yaml'}", True
    from repro.tables.build import write_tables

    if suite_seeds is None and (config.package_dir(root, slug) / config.SUITE_FILE).exists():
        suite_seeds = config.load_suite(root, slug).seeds
    try:
        report = write_tables(
            slug,
            results_dir,
            tables_dir,
            force=force,
            suite_seeds=suite_seeds,
            require_head=require_head,
            head_scales=head_scales,
        )
    except ConfigError as exc:
        return f"not written: {exc}", False
    except Exception as exc:
        log.exception("tables for %s failed", slug)
        return f"FAILED: {type(exc).__name__}: {exc}", False
    if not report.written:
        return f"not written: {report.message}", False
    figures = f"; {len(report.figures)} figure(s) beside it" if report.figures else ""
    return f"{report.path}{figures}", True
