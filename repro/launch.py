"""Launching runs: Hydra jobs, sweeps, a paper's suite in waves, and its tables afterwards.

    outcomes = launch(overrides, multirun)     # one job or a Hydra multirun (any launcher)
    rc = reproduce(slug, ...)                  # validate every arm, run arms x seeds, build tables
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
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repro import config, pipeline, provenance, records, runner, tracking
from repro.errors import ConfigError
from repro.registry import UnknownNameError

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
    reuse: bool = False,
) -> int:
    """Validate every arm, create the MLflow store, run arms x seeds as one multirun, build tables.
    With reuse, a run whose computation an existing canonical record of another arm (of any
    package) already did, by equal `provenance.reuse_key`, is not run again: its record is copied
    (records.reused_copy). Off by default: records do not yet carry the checksum of the base model
    they started from, and a base pretrained on another machine differs, so a copied record may
    come from another base. With dry_run, stop after validating and printing the plan."""
    tic = time.monotonic()
    root = config.find_root()
    config.prepare_environment(root)
    suite = config.load_suite(root, slug)
    arms = arms or suite.arms
    seeds = seeds or suite.seeds
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs: expected a positive integer, got {jobs}")
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
    scale = OmegaConf.select(first, "scale.name")
    results_dir = Path(first.paths.results_dir)
    tables_dir = Path(first.paths.tables_dir)

    # Runs another arm's canonical record already did (canonical runs only: no extra overrides).
    reusable: dict[tuple[str, int], Path] = {}
    if reuse and not records.extra_overrides(user):
        reusable = find_reusable_runs(slug, arms, seeds, user, results_dir, str(scale))
    todo = {arm: [s for s in seeds if (arm, s) not in reusable] for arm in arms}

    # Arms that learn from other arms' outputs (repro.pipeline stages) run in a later wave; within
    # a wave, arms that still need the same seeds share one sweep.
    sweeps = []
    ordered = waves(arms, needs)
    for wave in ordered:
        groups: dict[tuple[int, ...], list[str]] = {}
        for arm in wave:
            if todo[arm]:
                groups.setdefault(tuple(todo[arm]), []).append(arm)
        for group_seeds, group in groups.items():
            sweep = [
                f"experiment={','.join(f'{slug}/{a}' for a in group)}",
                f"seed={','.join(map(str, group_seeds))}",
                *user,
                *([] if user_threads else [f"++trainer.threads={threads}"]),
            ]
            n_runs = len(group) * len(group_seeds)
            if jobs > 1 and n_runs > 1:
                sweep += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={min(jobs, n_runs)}"]
            sweeps.append(sweep)
    in_waves = f" in {len(ordered)} waves" if len(ordered) > 1 else ""
    reused = f", {len(reusable)} reused from other arms' records" if reusable else ""
    print(
        f"repro reproduce {slug}: {len(arms)} arms x {len(seeds)} seeds = {len(arms) * len(seeds)} runs"
        f"{reused}{in_waves}, {jobs} parallel job(s) x {threads} thread(s)",
        flush=True,
    )
    if dry_run:
        print(f"  validated: {', '.join(arms)}")
        for (arm, seed), path in reusable.items():
            print(f"  would reuse: {slug}/{arm} seed {seed} <- {path.relative_to(results_dir)}")
        for sweep in sweeps:
            print(f"  would run: repro run -m {' '.join(sweep)}")
        return 0
    for (arm, seed), path in reusable.items():
        source = records.read_record(path)
        copy = records.reused_copy(source, str(path.relative_to(results_dir)), paper=slug, arm=arm)
        target = records.record_path(
            results_dir, paper=slug, scale=str(scale), arm=arm, seed=seed, canonical=True,
            config_hash=copy["config_hash"], failed=False,
        )  # fmt: skip
        records.write_record(copy, target)
        print(f"  reused: {slug}/{arm} seed {seed} <- {path.relative_to(results_dir)}", flush=True)
    tracking.ensure_store(uri, experiment)
    outcomes = [o for sweep in sweeps for o in launch(sweep, multirun=True)]
    outcomes += [{"status": "FINISHED", "name": f"{arm} seed {seed} (reused)"} for arm, seed in reusable]

    tables_line, tables_ok = build_tables(slug, results_dir, tables_dir)

    text, runs_ok = summary(f"\n{slug}", outcomes, time.monotonic() - tic)
    print(text)
    adhoc = " (ad-hoc: under <arm>/adhoc/)" if records.extra_overrides(user) else ""
    print(f"  records:  {results_dir / slug / str(scale)}{adhoc}")
    print(f"  MLflow:   {uri} (experiment '{experiment}'); browse with `repro ui`")
    print(f"  tables:   {tables_line}")
    return 0 if runs_ok and tables_ok else 1


def find_reusable_runs(
    slug: str, arms: Sequence[str], seeds: Sequence[int], user: Sequence[str], results_dir: Path, scale: str
) -> dict[tuple[str, int], Path]:
    """(arm, seed) -> the record of another arm that ran the same computation (equal reuse key of
    the config the runner would record: composed, with upstream stages applied), where one exists."""
    found = {}
    with config.hydra_app() as hydra:
        for arm in arms:
            for seed in seeds:
                overrides = [f"experiment={slug}/{arm}", f"seed={seed}", *user]
                cfg = config.compose(hydra, overrides)
                cfg = pipeline.apply(cfg, pipeline.plan(cfg, overrides))
                key = provenance.reuse_key(provenance.portable_config(cfg))
                path = records.find_reusable(results_dir, scale, seed, key, exclude=(slug, arm))
                if path is not None:
                    found[(arm, seed)] = path
    return found


def build_tables(slug: str, results_dir: Path, tables_dir: Path, force: bool = False) -> tuple[str, bool]:
    """Build one paper's tables: (one line saying what happened, ok). The package README's arm
    table is regenerated from its YAML files first. A paper without claimed.yaml is skipped; any
    other error is reported, not raised (runs are recorded)."""
    from repro.tables.arms import arm_table, sync_readme  # tables pull in scipy: not at start-up

    readme = config.package_dir(config.find_root(), slug) / "README.md"
    if readme.exists():
        sync_readme(readme, arm_table(config.find_root(), slug))
    if not (tables_dir / slug / "claimed.yaml").exists():
        return f"skipped: no {tables_dir / slug / 'claimed.yaml'}", True
    from repro.tables.build import write_tables

    try:
        report = write_tables(slug, results_dir, tables_dir, force=force)
    except ConfigError as exc:
        return f"not written: {exc}", False
    except Exception as exc:
        log.exception("tables for %s failed", slug)
        return f"FAILED: {type(exc).__name__}: {exc}", False
    if not report.written:
        return f"not written: {report.message}", False
    figures = f"; {len(report.figures)} figure(s) beside it" if report.figures else ""
    return f"{report.path}{figures}", True
