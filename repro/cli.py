"""`repro`: run experiments, reproduce a paper, build its tables, browse runs.

    repro run experiment=clipping_bottleneck/dapo_nsr seed=1            one run (Hydra overrides)
    repro run -m experiment=clipping_bottleneck/grpo,clipping_bottleneck/dapo seed=1,2,3 \\
        hydra/launcher=joblib hydra.launcher.n_jobs=2                   a Hydra multirun
    repro run --cfg job experiment=clipping_bottleneck/dapo_nsr         any Hydra flag (--cfg, --info, --help)
    repro reproduce clipping_bottleneck [--seeds 1,2] [--jobs 2] [--arms a,b] [overrides ...]
    repro reproduce all                                                 every package with a suite.yaml
    repro reproduce clipping_bottleneck --dry-run                       validate every arm, run nothing
    repro tables [slug ...] [--force]                                   paper_tables/<slug>/comparison.md
    repro ui [--port 5000]                                              MLflow UI on 127.0.0.1
    repro list                                                          papers and their arms
    repro eval model=smollm2_135m tasks=[gsm8k,mmlu] eval.limit=200     benchmarks via lm-eval

Paper packages live in `<root>/experiments/<slug>/` (an arm = one Hydra file; `suite.yaml` says what
`reproduce` runs). They are the Hydra group `experiment`: the CLI links
`<cache_dir>/hydra_search/<root hash>/experiment -> <root>/experiments` and appends that folder to
`hydra.searchpath` (an override, so joblib workers composing their jobs see it too). Hydra resolves
an arm file's `defaults` relative to the group, so an arm extending another writes
`defaults: [<slug>/<arm>, _self_]`. `<root>` is $REPRO_ROOT, else the checkout holding the `repro`
package (if it has `experiments/`), else the working directory; the CLI exports REPRO_ROOT, which
`paths.root` reads, for itself and its workers. Python files in a paper package are imported by
every job (repro.runner.import_paper_modules), so its registered functions reach workers too.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from repro.errors import ConfigError
from repro.registry import UnknownNameError

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent / "conf"
CONFIG_NAME = "config"
EVAL_CONFIG_NAME = "evaluate"
SUITE_FILE = "suite.yaml"
# `repro run` flags that only Hydra's own command line understands: hand those runs to hydra.main.
HYDRA_ONLY_FLAGS = {
    "--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help", "--resolve", "--package", "-p",
    "--shell-completion", "-sc", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
    "--experimental-rerun",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Where things are


def find_root() -> Path:
    """$REPRO_ROOT, else the folder above the `repro` package if it holds `experiments/`, else cwd."""
    env = os.environ.get("REPRO_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "experiments").is_dir():
        return checkout
    return Path.cwd().resolve()


def prepare_environment(root: Path | None = None) -> Path:
    """Export REPRO_ROOT (child processes see it), turn off MLflow telemetry and link the
    experiment group into a search-path folder. Returns that folder."""
    root = root or find_root()
    os.environ["REPRO_ROOT"] = str(root)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cache = Path(os.environ.get("REPRO_CACHE_DIR") or root / ".cache").expanduser().resolve()
    # One folder per root: a cache shared by two checkouts must not flip the link under a run.
    search_dir = cache / "hydra_search" / hashlib.sha256(str(root).encode()).hexdigest()[:12]
    search_dir.mkdir(parents=True, exist_ok=True)
    link, target = search_dir / "experiment", root / "experiments"
    if not (link.is_symlink() and os.readlink(link) == str(target)):
        # Swap the link atomically: another `repro` process may be reading it.
        tmp = search_dir / f".experiment.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp, target_is_directory=True)
        os.replace(tmp, link)
    return search_dir


def with_searchpath(overrides: Sequence[str], search_dir: Path) -> list[str]:
    """Add `search_dir` to `hydra.searchpath`, keeping any search path the user gave."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    entry = f"file://{search_dir}"
    out, paths = [], []
    for override in overrides:
        if override.split("=", 1)[0].lstrip("+") == "hydra.searchpath":
            value = OverridesParser.create().parse_override(override).value()
            paths += list(value or [])
        else:
            out.append(override)
    paths.append(entry)
    quoted = ",".join("'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'" for p in paths)
    return [*out, f"hydra.searchpath=[{quoted}]"]


def package_dir(root: Path, slug: str) -> Path:
    return root / "experiments" / slug


def packages(root: Path) -> list[str]:
    """Paper slugs: folders of `<root>/experiments` holding at least one arm file."""
    base = root / "experiments"
    if not base.is_dir():
        return []
    return sorted(d.name for d in base.iterdir() if d.is_dir() and package_arms(root, d.name))


def package_arms(root: Path, slug: str) -> list[str]:
    """Arm names of a paper package: its YAML files other than suite.yaml."""
    d = package_dir(root, slug)
    return sorted(p.stem for p in d.glob("*.yaml") if p.name != SUITE_FILE) if d.is_dir() else []


def load_suite(root: Path, slug: str) -> dict[str, Any]:
    """`experiments/<slug>/suite.yaml` checked: {arms: [..], seeds: [..], jobs: N}."""
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
    suite = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(suite) - {"arms", "seeds", "jobs"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: arms, seeds, jobs")
    arms, seeds, jobs = suite.get("arms"), suite.get("seeds"), suite.get("jobs", 1)
    if not isinstance(arms, list) or not arms or not all(isinstance(a, str) for a in arms):
        raise ConfigError(f"{path}: arms: expected a non-empty list of arm names, got {arms!r}")
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s) for s in seeds):
        raise ConfigError(f"{path}: seeds: expected a non-empty list of integers, got {seeds!r}")
    if not _is_int(jobs) or jobs < 1:
        raise ConfigError(f"{path}: jobs: expected a positive integer, got {jobs!r}")
    return {"arms": arms, "seeds": [int(s) for s in seeds], "jobs": int(jobs), "path": path}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# ---------------------------------------------------------------------------------------------
# Hydra


@contextlib.contextmanager
def hydra_app() -> Iterator[Any]:
    """A Hydra instance on repro/conf (what hydra.main builds), cleared afterwards."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2(
        task_name="repro", config_search_path=create_config_search_path(str(CONF_DIR))
    )
    try:
        yield hydra
    finally:
        GlobalHydra.instance().clear()


def compose(hydra: Any, overrides: Sequence[str], config_name: str = CONFIG_NAME) -> DictConfig:
    """The job config for `overrides` (no `hydra` node), as a run would see it."""
    from hydra.types import RunMode

    cfg = hydra.compose_config(
        config_name, list(overrides), run_mode=RunMode.RUN, with_log_configuration=False
    )
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _job(cfg: DictConfig) -> dict[str, Any]:
    """The Hydra task function of every job: `run_one`, with the outcome as a small dict.
    It never raises, so a multirun goes on past a failed or misconfigured job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from repro import runner, tracking

    tracking.configure()
    name = runner.run_name_of(cfg.get("arm"), cfg.get("seed"))
    try:
        result = runner.run_one(cfg)
    except (ConfigError, UnknownNameError) as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # a single run reports it as the CLI's error
            log.error("config error in %s (%s): %s", name, " ".join(HydraConfig.get().overrides.task), exc)
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


def launch(overrides: Sequence[str], multirun: bool, search_dir: Path) -> list[dict[str, Any]]:
    """Run one job or a Hydra multirun (any launcher); returns each job's outcome dict."""
    overrides = with_searchpath(overrides, search_dir)
    with hydra_app() as hydra:
        if multirun:
            returns = hydra.multirun(CONFIG_NAME, _job, [*overrides, "hydra.mode=MULTIRUN"])
            outcomes = [_outcome(r) for batch in returns for r in batch]
            _shutdown_joblib_workers()
            return outcomes
        return [_outcome(hydra.run(CONFIG_NAME, _job, [*overrides, "hydra.mode=RUN"]))]


def _hydra_main(args: Sequence[str], search_dir: Path) -> int:
    """Hand `repro run <args>` to hydra.main, for Hydra's own flags (--cfg job, --info, --help)."""
    import hydra

    app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=CONFIG_NAME)(_job)
    saved = sys.argv
    sys.argv = ["repro run", *with_searchpath(args, search_dir)]
    try:
        app()
    finally:
        sys.argv = saved
    return 0


# ---------------------------------------------------------------------------------------------
# Commands


def _summary(what: str, outcomes: list[dict[str, Any]], seconds: float) -> tuple[str, bool]:
    """'<what>: N runs: a finished, b failed in t s' plus the names of failed runs; (text, all ok)."""
    tally: dict[str, list[str]] = {"FINISHED": [], "FAILED": [], "CONFIG_ERROR": []}
    for o in outcomes:
        tally.setdefault(o.get("status", "FAILED"), []).append(str(o.get("name")))
    n_ok, n_failed, n_config = (len(tally[k]) for k in ("FINISHED", "FAILED", "CONFIG_ERROR"))
    config = f", {n_config} config errors" if n_config else ""
    lines = [f"{what}: {len(outcomes)} runs: {n_ok} finished, {n_failed} failed{config} in {seconds:.1f} s"]
    for status in ("FAILED", "CONFIG_ERROR"):
        if tally[status]:
            lines.append(f"  {status.lower().replace('_', ' ')}: {', '.join(tally[status])}")
    return "\n".join(lines), n_ok == len(outcomes)


def cmd_run(args: list[str]) -> int:
    """`repro run [-m] [overrides]`: exit 1 if a job failed, 2 on a config error."""
    search_dir = prepare_environment()
    if any(a.split("=", 1)[0] in HYDRA_ONLY_FLAGS for a in args):
        return _hydra_main(args, search_dir)
    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    flags = [a for a in overrides if a.startswith("-")]
    if flags:
        raise ConfigError(f"unknown flag(s) for `repro run`: {' '.join(flags)}")
    tic = time.monotonic()
    outcomes = launch(overrides, multirun, search_dir)
    if not multirun and outcomes[0]["status"] == "CONFIG_ERROR":
        raise ConfigError(outcomes[0]["message"])
    text, ok = _summary("repro run", outcomes, time.monotonic() - tic)
    if multirun:
        print(text)
    return 0 if ok else 1


def reproduce(
    slug: str,
    overrides: Sequence[str] = (),
    seeds: list[int] | None = None,
    jobs: int | None = None,
    arms: list[str] | None = None,
    dry_run: bool = False,
) -> int:
    """Validate every arm, create the MLflow store, run arms x seeds as one multirun, build tables.
    With dry_run, stop after validating and printing the plan."""
    from repro import pipeline, runner, tracking

    tic = time.monotonic()
    root = find_root()
    search_dir = prepare_environment(root)
    suite = load_suite(root, slug)
    arms = arms or suite["arms"]
    seeds = seeds or suite["seeds"]
    jobs = min(jobs or suite["jobs"], len(arms) * len(seeds))
    valid = package_arms(root, slug)
    bad = [a for a in arms if a not in valid]
    if bad:
        raise ConfigError(
            f"{suite['path']}: unknown arm(s) {', '.join(bad)}; arms of '{slug}': {', '.join(valid)}"
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
    with hydra_app() as hydra:
        for arm in arms:
            arm_overrides = [f"experiment={slug}/{arm}", f"seed={seeds[0]}", *user]
            cfg = compose(hydra, with_searchpath(arm_overrides, search_dir))
            try:
                stages = pipeline.plan(cfg, arm_overrides)
                runner.resolve_trainer(pipeline.apply(cfg, stages))
            except (ConfigError, UnknownNameError) as exc:
                raise ConfigError(f"{slug}/{arm}: {exc}") from None
            needs[arm] = [
                st.experiment.split("/", 1)[1] for st in stages if st.experiment.startswith(f"{slug}/")
            ]
            needs[arm] = [a for a in needs[arm] if a in arms]
            if cfg.get("paper") != slug:
                raise ConfigError(
                    f"experiments/{slug}/{arm}.yaml: paper is {cfg.get('paper')!r}, expected '{slug}'"
                )
            cfgs[arm] = cfg
    first = cfgs[arms[0]]
    uri, experiment = first.tracking.uri, first.tracking.experiment or slug

    # Arms that learn from other arms' outputs (repro.pipeline stages) run in a later wave.
    sweeps = []
    for wave in waves(arms, needs):
        sweep = [
            f"experiment={','.join(f'{slug}/{a}' for a in wave)}",
            f"seed={','.join(map(str, seeds))}",
            *user,
            *([] if user_threads else [f"++trainer.threads={threads}"]),
        ]
        if jobs > 1:
            sweep += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={min(jobs, len(wave) * len(seeds))}"]
        sweeps.append(sweep)
    in_waves = f" in {len(sweeps)} waves" if len(sweeps) > 1 else ""
    print(
        f"repro reproduce {slug}: {len(arms)} arms x {len(seeds)} seeds = {len(arms) * len(seeds)} runs"
        f"{in_waves}, {jobs} parallel job(s) x {threads} thread(s)",
        flush=True,
    )
    if dry_run:
        print(f"  validated: {', '.join(arms)}")
        for sweep in sweeps:
            print(f"  would run: repro run -m {' '.join(sweep)}")
        return 0
    tracking.ensure_store(uri, experiment)
    outcomes = [o for sweep in sweeps for o in launch(sweep, multirun=True, search_dir=search_dir)]

    scale = OmegaConf.select(first, "scale.name")
    results_dir = Path(first.paths.results_dir)
    tables_dir = Path(first.paths.tables_dir)
    tables_line, tables_ok = _build_tables(slug, results_dir, tables_dir)

    text, runs_ok = _summary(f"\n{slug}", outcomes, time.monotonic() - tic)
    print(text)
    adhoc = " (ad-hoc: under <arm>/adhoc/)" if any(_is_extra(o) for o in user) else ""
    print(f"  records:  {results_dir / slug / str(scale)}{adhoc}")
    print(f"  MLflow:   {uri} (experiment '{experiment}'); browse with `repro ui`")
    print(f"  tables:   {tables_line}")
    return 0 if runs_ok and tables_ok else 1


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


def _is_extra(override: str) -> bool:
    from repro import records

    return bool(records.extra_overrides([override]))


def _build_tables(slug: str, results_dir: Path, tables_dir: Path, force: bool = False) -> tuple[str, bool]:
    """Run the tables builder for one paper after `reproduce`: (one line saying what happened, ok).
    A paper without claimed.yaml is skipped; any other error is reported, not raised (the runs
    are done and recorded)."""
    if not (tables_dir / slug / "claimed.yaml").exists():
        return f"skipped: no {tables_dir / slug / 'claimed.yaml'}", True
    try:
        from repro.tables.build import write_tables

        report = write_tables(slug, results_dir, tables_dir, force=force)
    except Exception as exc:
        log.exception("tables for %s failed", slug)
        return f"FAILED: {type(exc).__name__}: {exc}", False
    return _tables_line(report)


def _tables_line(report: Any) -> tuple[str, bool]:
    if not report.written:
        return f"not written: {report.message}", False
    figures = f"; {len(report.figures)} figure(s) beside it" if report.figures else ""
    return f"{report.path}{figures}", True


def cmd_reproduce(ns: argparse.Namespace) -> int:
    root = find_root()
    try:
        seeds = [int(s) for s in ns.seeds.split(",")] if ns.seeds else None
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {ns.seeds!r}") from None
    arms = ns.arms.split(",") if ns.arms else None
    if ns.slug == "all":
        slugs = [s for s in packages(root) if (package_dir(root, s) / SUITE_FILE).exists()]
        if not slugs:
            raise ConfigError(f"no paper package with a {SUITE_FILE} in {root / 'experiments'}")
        if arms:
            raise ConfigError("--arms needs one paper, not `all`")
        return max(reproduce(s, ns.overrides, seeds, ns.jobs, dry_run=ns.dry_run) for s in slugs)
    return reproduce(ns.slug, ns.overrides, seeds, ns.jobs, arms, dry_run=ns.dry_run)


def _paths() -> DictConfig:
    """`paths` and `tracking` of the default config (honours REPRO_* and MLFLOW_TRACKING_URI)."""
    search_dir = prepare_environment()
    with hydra_app() as hydra:
        cfg = compose(hydra, with_searchpath([], search_dir))
    return OmegaConf.create({"paths": cfg.paths, "tracking": {"uri": cfg.tracking.uri}})


def cmd_tables(ns: argparse.Namespace) -> int:
    cfg = _paths()
    results_dir, tables_dir = Path(cfg.paths.results_dir), Path(cfg.paths.tables_dir)
    slugs = ns.slugs or sorted(p.parent.name for p in tables_dir.glob("*/claimed.yaml"))
    if not slugs:
        raise ConfigError(f"no {tables_dir}/<slug>/claimed.yaml found")
    from repro.tables.build import write_tables

    ok = True
    for slug in slugs:
        line, good = _tables_line(write_tables(slug, results_dir, tables_dir, force=ns.force))
        ok &= good
        print(f"{slug}: {line}")
    return 0 if ok else 1


def cmd_ui(ns: argparse.Namespace) -> int:
    uri = _paths().tracking.uri
    try:
        import mlflow.server  # noqa: F401  (not in mlflow-skinny)
    except ImportError:
        print(
            "repro ui needs the full MLflow package (its server), not mlflow-skinny:\n"
            "    pip install -e '.[ui]'\n"
            f"then run this again, or: mlflow ui --backend-store-uri {uri} --host 127.0.0.1",
            file=sys.stderr,
        )
        return 1
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1"]
    cmd += ["--port", str(ns.port)]
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)


def cmd_list(ns: argparse.Namespace) -> int:
    root = find_root()
    slugs = packages(root)
    if not slugs:
        print(f"no paper packages in {root / 'experiments'}")
        return 0
    for slug in slugs:
        suite_path = package_dir(root, slug) / SUITE_FILE
        print(slug)
        print(f"  arms:  {', '.join(package_arms(root, slug))}")
        if suite_path.exists():
            suite = yaml.safe_load(suite_path.read_text()) or {}
            arms, seeds = suite.get("arms") or [], suite.get("seeds") or []
            jobs = suite.get("jobs", 1)
            print(f"  suite: {len(arms)} arms x seeds {seeds}, jobs {jobs}: repro reproduce {slug}")
    return 0


def cmd_eval(ns: argparse.Namespace) -> int:
    """`repro eval [overrides]`: score one model on benchmarks, print a table, write
    `<results_dir>/eval/<model>/<timestamp>.json`."""
    prepare_environment()
    with hydra_app() as hydra:
        cfg = compose(hydra, ns.overrides, config_name=EVAL_CONFIG_NAME)
    from repro.eval.run import run_eval

    record, path = run_eval(cfg, ns.overrides)
    print(f"{'metric':<44} {'value':>8}")
    for key, value in record["metrics"].items():
        print(f"{key:<44} {value:>8.4f}")
    counts = ", ".join(f"{k} {v}" for k, v in record["counts"].items())
    print(f"examples: {counts}; wall {record['wall_s']:.0f} s\nrecord:   {path}")
    return 0


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """One parser per command (`run` is parsed by Hydra)."""
    fmt = argparse.RawDescriptionHelpFormatter
    r = argparse.ArgumentParser(prog="repro reproduce", description=reproduce.__doc__, formatter_class=fmt)
    r.add_argument("slug", help="paper slug (a folder of experiments/), or `all`")
    r.add_argument("overrides", nargs="*", help="Hydra overrides for every run (they make the runs ad hoc)")
    r.add_argument("--seeds", help="comma-separated seeds instead of the suite's, e.g. 1,2")
    r.add_argument("--jobs", type=int, help="parallel jobs instead of the suite's")
    r.add_argument("--arms", help="comma-separated subset of the suite's arms")
    r.add_argument(
        "--dry-run", action="store_true", help="validate every arm and print the plan; run nothing"
    )
    t = argparse.ArgumentParser(prog="repro tables", description="Build paper_tables/<slug>/comparison.md.")
    t.add_argument("slugs", nargs="*", help="papers (default: every paper with a claimed.yaml)")
    t.add_argument("--force", action="store_true", help="overwrite a table that counted more runs")
    u = argparse.ArgumentParser(prog="repro ui", description="MLflow UI on 127.0.0.1 for the tracking store.")
    u.add_argument("--port", type=int, default=5000)
    lst = argparse.ArgumentParser(prog="repro list", description="Papers, their arms and suites.")
    e = argparse.ArgumentParser(prog="repro eval", description=cmd_eval.__doc__, formatter_class=fmt)
    e.add_argument("overrides", nargs="*", help="Hydra overrides of repro/conf/evaluate.yaml")
    return {"reproduce": r, "tables": t, "ui": u, "list": lst, "eval": e}


COMMANDS = {
    "reproduce": cmd_reproduce,
    "tables": cmd_tables,
    "ui": cmd_ui,
    "list": cmd_list,
    "eval": cmd_eval,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `repro` console script; returns the exit status."""
    from hydra.errors import HydraException

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command != "run" and command not in COMMANDS:
        print(
            f"repro: error: unknown command '{command}'; commands: run, {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    try:
        if command == "run":
            return cmd_run(rest)
        return COMMANDS[command](_parsers()[command].parse_intermixed_args(rest))
    except (ConfigError, UnknownNameError, HydraException) as exc:
        print(f"repro: error: {_explain(exc)}", file=sys.stderr)
        return 2


def _explain(exc: Exception) -> str:
    """The error message, made specific when Hydra cannot find an experiment (arm) file."""
    text = str(exc)
    root = find_root()
    inner = re.search(r"In 'experiment/([^']+)': Could not (?:find|load) 'experiment/([^']+)'", text)
    if inner:
        # A defaults entry of an arm file: Hydra resolves it relative to the `experiment` group.
        parent, missing = inner.groups()
        slug = parent.split("/")[0]
        return (
            f"experiments/{parent}.yaml: its defaults entry '{missing}' is not an arm (Hydra looked for "
            f"experiment/{missing}); defaults in an arm file are relative to the `experiment` group, "
            f"so write '{slug}/{missing}' (or '/experiment/{slug}/{missing}')"
        )
    outer = re.search(r"Could not (?:find|load) 'experiment/([^']+)'", text)
    if not outer:
        return text
    slug, _, arm = outer.group(1).partition("/")
    stage = re.match(r"(stages\.\w+: )cannot compose", text)  # from repro.pipeline.plan
    prefix = stage.group(1) if stage else ""
    if slug in packages(root):
        arms = ", ".join(package_arms(root, slug))
        return (
            f"{prefix}unknown experiment '{outer.group(1)}': paper '{slug}' has no arm '{arm}'; "
            f"its arms: {arms}"
        )
    known = ", ".join(packages(root)) or "(none)"
    return (
        f"{prefix}unknown experiment '{outer.group(1)}': no paper '{slug}' in {root / 'experiments'}; "
        f"papers: {known}"
    )


if __name__ == "__main__":
    sys.exit(main())
