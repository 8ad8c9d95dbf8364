"""Launching runs: Hydra jobs, sweeps, a paper's suite in waves, and its tables afterwards.

    outcomes = launch(overrides, multirun)     # one job or a Hydra multirun (any launcher)
    rc = reproduce(slug, ...)                  # validate every arm, skip up-to-date records, run the
                                               #   rest as arms x seeds in waves, build tables
    rc = reproduce(slug, power=True)           # + the seeds each claim needs for 80% power
    rc = reproduce(slug, reuse=True)           # + copy other arms' records of the same runs
    outcome = make_tables(slug, results_dir, tables_dir)   # .line, .ok, .verdicts

Every Hydra job runs `job(cfg)`: finalize the config (paper/arm from the experiment path,
validation), then `runner.run_one`. A job never raises, so a multirun goes on past a failed or
misconfigured job; each returns a small outcome dict the summary counts. A sweep prints
"k/N runs done, ETA" as its jobs finish (repro.progress.SweepProgress), in any process.

Signals: Ctrl-C (SIGINT) or SIGTERM during a sweep stops it cleanly: each running job marks its
MLflow run KILLED and writes its `.failed.json` (repro.runner), jobs that have not started skip
themselves, and the command exits 130 / 143. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repro import config, pipeline, provenance, records, runner, tracking
from repro.errors import ConfigError, Interrupted
from repro.progress import SweepProgress, duration
from repro.registry import UnknownNameError

log = logging.getLogger(__name__)

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED", "CONFIG_ERROR", "SKIPPED")


def _label(overrides: Sequence[str]) -> str:
    """What the summary calls a job: its own overrides (experiment, seed, swept values)."""
    return " ".join(o for o in overrides if not o.startswith("hydra")) or "(defaults)"


def job(cfg: DictConfig) -> dict[str, Any]:
    """The Hydra task function of every job: finalize the config, `run_one`, an outcome dict."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    tic = time.monotonic()
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    choices = OmegaConf.to_container(hc.runtime.choices)
    name = _label(overrides)
    tracking.configure()
    sweep = SweepProgress.current() if hc.mode == RunMode.MULTIRUN else None
    if sweep is not None and os.getpid() != sweep.parent_pid:
        # A worker process of a parallel launcher: Ctrl-C (or a batch system's SIGTERM) reaches it
        # directly. Between jobs it must not kill the worker; during a run, run_one catches it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    outcome = _job(cfg, overrides, choices, name, sweep, hc.mode == RunMode.MULTIRUN)
    if sweep is not None:
        with contextlib.suppress(OSError):
            sweep.job_done(name, outcome["status"], time.monotonic() - tic)
    return outcome


def _job(
    cfg: DictConfig,
    overrides: list[str],
    choices: dict,
    name: str,
    sweep: SweepProgress | None,
    multirun: bool,
) -> dict[str, Any]:
    stopped = sweep.stop_requested() if sweep is not None else None
    if stopped:
        return _skipped(name, stopped)
    try:
        cfg = config.finalize(cfg, choices, overrides)
        stopped = sweep.stop_requested() if sweep is not None else None
        if stopped:
            return _skipped(name, stopped)
        result = runner.run_one(cfg, overrides)
    except (ConfigError, UnknownNameError) as exc:
        if multirun:  # a single run reports it as the CLI's error
            log.error("config error in %s: %s", name, exc)
        return {"status": "CONFIG_ERROR", "name": name, "message": str(exc)}
    except KeyboardInterrupt as exc:  # run_one recorded the run as KILLED; stop the rest of the sweep
        stop = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        if sweep is not None:
            sweep.request_stop(stop.name)
        return {"status": "KILLED", "name": name, "signal": stop.name, "exit_code": stop.exit_code}
    except Exception as exc:  # e.g. the tracking store is unreachable: report, let the sweep go on
        log.error("job %s failed before training: %s: %s", name, type(exc).__name__, exc)
        return {"status": "FAILED", "name": name, "message": f"{type(exc).__name__}: {exc}"}
    if result is None:
        return {"status": "FAILED", "name": name}
    return {**result, "name": name}


def _skipped(name: str, signal_name: str) -> dict[str, Any]:
    code = 128 + int(getattr(signal.Signals, signal_name, signal.SIGINT))
    return {"status": "SKIPPED", "name": name, "signal": signal_name, "exit_code": code}


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


def count_jobs(overrides: Sequence[str]) -> int | None:
    """How many jobs Hydra's basic sweeper makes of `overrides` (None if it cannot tell)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("hydra")])
        return len(BasicSweeper.split_arguments(parsed, None)[0])
    except Exception:
        return None


def _child_pids() -> list[int]:
    """Pids of this process's children (the parallel launcher's workers), from /proc."""
    me, out = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == me:
                out.append(int(stat.parent.name))
    return out


@contextlib.contextmanager
def sweep_signals(sweep: SweepProgress) -> Iterator[None]:
    """While a sweep runs in this (main) thread: the first SIGINT/SIGTERM asks the sweep to stop
    (running jobs record themselves KILLED, the others skip) and passes a SIGINT on to the worker
    processes; a second one raises Interrupted at once."""

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if sweep.stop_requested():
            raise Interrupted(signum)
        sweep.request_stop(name)
        print(
            f"\n{name}: stopping the sweep; running jobs record themselves as KILLED "
            "(press Ctrl-C again to abort at once)",
            file=sys.stderr,
            flush=True,
        )
        for pid in _child_pids():  # workers ignore it between jobs and stop on it during one
            with contextlib.suppress(OSError):
                os.kill(pid, signum)

    with runner.handling_signals(handler):
        yield


def launch(overrides: Sequence[str], multirun: bool, label: str = "sweep") -> list[dict[str, Any]]:
    """Run one job or a Hydra multirun (any launcher); returns each job's outcome dict."""
    user = list(overrides)
    overrides = config.with_searchpath(overrides, config.prepare_environment())
    with config.hydra_app() as hydra:
        if not multirun:
            return [_outcome(hydra.run(config.CONFIG_NAME, job, [*overrides, "hydra.mode=RUN"]))]
        sweep = SweepProgress.start(total=count_jobs(user) or 0, label=label)
        try:
            with sweep_signals(sweep):
                returns = hydra.multirun(config.CONFIG_NAME, job, [*overrides, "hydra.mode=MULTIRUN"])
            outcomes = [_outcome(r) for batch in returns for r in batch]
        except KeyboardInterrupt:
            # Aborted (a second Ctrl-C): the jobs that ended said so; runs a killed worker left
            # RUNNING are marked FAILED by the next run's start (tracking.reap_dead_runs).
            done = sweep.done()
            print(f"{label}: aborted after {len(done)} job(s) ended", file=sys.stderr, flush=True)
            raise
        except Exception as exc:
            stopped = sweep.stop_requested()
            if not stopped:
                raise
            # Stopping, a worker died (e.g. a signal the batch system sent it): what ended is known.
            log.warning("%s: the launcher failed while stopping: %s: %s", label, type(exc).__name__, exc)
            outcomes = [{"status": d["status"], "name": d["name"]} for d in sweep.done()]
            outcomes.append(_skipped("(jobs of the stopped launcher)", stopped))
        finally:
            sweep.close()
            _shutdown_joblib_workers()
        return outcomes


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
    """'<what>: N runs: a finished, b failed in t s' plus the names of the runs that did not
    finish, by status; (text, all finished)."""
    tally: dict[str, list[str]] = {s: [] for s in RUN_STATUSES}
    for o in outcomes:
        tally.setdefault(o.get("status", "FAILED"), []).append(str(o.get("name")))
    n_ok, n_failed = len(tally["FINISHED"]), len(tally["FAILED"])
    others = "".join(
        f", {len(tally[s])} {s.lower().replace('_', ' ')}{'s' if s == 'CONFIG_ERROR' else ''}"
        for s in ("CONFIG_ERROR", "KILLED", "SKIPPED")
        if tally[s]
    )
    lines = [
        f"{what}: {len(outcomes)} runs: {n_ok} finished, {n_failed} failed{others} in {duration(seconds)}"
    ]
    for status in ("FAILED", "CONFIG_ERROR", "KILLED", "SKIPPED"):
        if tally[status]:
            lines.append(f"  {status.lower().replace('_', ' ')}: {', '.join(tally[status])}")
    return "\n".join(lines), n_ok == len(outcomes)


def interrupted_exit_code(outcomes: list[dict[str, Any]]) -> int | None:
    """130 / 143 if a signal stopped any job of these outcomes, else None."""
    codes = [o["exit_code"] for o in outcomes if o.get("exit_code")]
    return codes[0] if codes else None


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


# ---------------------------------------------------------------------------------------------
# Resume: which (arm, seed) pairs already have an up-to-date record


@dataclass
class Pair:
    """One (arm, seed) run of a suite and what `reproduce` will do with it."""

    arm: str
    seed: int
    ident: runner.Identity
    skip: bool = False
    why: str = ""  # why it runs again (or "up to date")
    replaces: Path | None = None  # the record a run would replace
    reuse: Path | None = None  # --reuse: another arm's record of the same run, copied instead of run


def check_record(ident: runner.Identity, code: CodeState) -> tuple[bool, str]:
    """(up to date, why): the record at the job's path is a finished run of the same config hash,
    code (`provenance.code_sha256`; for records without it, the git commit and uncommitted changes)
    and base model checksum. A missing value on
    either side counts as unknown: the run is redone. A record copied from another arm (--reuse)
    carries that arm's code and base checksum, so it is up to date on the same terms."""
    path = ident.record_path
    if not path.exists():
        return False, "no record"
    try:
        rec = records.read_record(path)
    except (OSError, ValueError) as exc:
        return False, f"unreadable record ({exc})"
    if not isinstance(rec, dict) or rec.get("status") != "FINISHED":
        return False, "record is not a finished run"
    if rec.get("config_hash") != ident.config_hash:
        return False, "config changed"
    return same_code_and_base(rec, ident, code)


@dataclass(frozen=True)
class CodeState:
    """The code a run would be made by now: git commit, uncommitted changes, and the fingerprint of
    the code that computes runs (`provenance.code_sha256`)."""

    sha: str
    dirty: bool | None
    diff: str | None
    fingerprint: str

    @classmethod
    def of(cls, root: Path) -> CodeState:
        sha, dirty = provenance.git_state(root)
        diff = provenance.git_diff_sha256(root) if dirty else None
        return cls(sha, dirty, diff, provenance.code_sha256(root))


def same_code(rec: dict[str, Any], code: CodeState) -> tuple[bool, str]:
    """(True, "same code") if record `rec` was made by the code of `code`: the same fingerprint of
    the code that computes runs, or, for a record made before fingerprints, the same git commit
    (and the same uncommitted changes, if any); else (False, why)."""
    prov = rec.get("provenance") if isinstance(rec.get("provenance"), dict) else {}
    if prov.get("code_sha256"):
        if prov["code_sha256"] != code.fingerprint:
            return (
                False,
                f"code changed (record's code {prov['code_sha256'][:10]}, now {code.fingerprint[:10]})",
            )
        return True, "same code"
    sha = code.sha
    if sha == provenance.UNKNOWN or prov.get("git_sha") != sha:
        return False, f"code changed (record {str(prov.get('git_sha'))[:10]}, now {sha[:10]})"
    if code.dirty or prov.get("git_dirty"):  # same commit, but uncommitted changes on either side
        if code.dirty is None or code.diff is None or prov.get("git_diff_sha256") != code.diff:
            return False, "uncommitted code changes differ"
    return True, "same code"


def same_code_and_base(rec: dict[str, Any], ident: runner.Identity, code: CodeState) -> tuple[bool, str]:
    """(True, "up to date") if record `rec` was made by this code (`same_code`) from the weights
    `ident` starts from (`base_sha256`); else (False, why)."""
    prov = rec.get("provenance") if isinstance(rec.get("provenance"), dict) else {}
    ok, why = same_code(rec, code)
    if not ok:
        return ok, why
    if not prov.get("base_sha256"):
        return False, "record has no base model checksum"
    now = ident.base_sha256()
    if now is None:
        return False, "base model not built here yet (checksum unknown)"
    if now != prov["base_sha256"]:
        return False, "base model changed"
    return True, "up to date"


def reuse_source(ident: runner.Identity, code: CodeState) -> Path | None:
    """--reuse: the record of another arm (of any package) this canonical job may copy instead of
    running: a finished canonical run at the same scale and seed whose config is this job's but for
    its paper and arm names (`provenance.reuse_key`, upstream stages applied), made by the same
    code from the same base weights (`base_sha256`), exactly as `check_record` asks of the job's own
    record; None if there is none."""
    if not ident.canonical:
        return None
    cfg = ident.cfg
    key = provenance.reuse_key(ident.portable)
    top = ident.record_path.parents[3]  # <results_dir> or <results_dir>/.smoke: the job's own tree
    scale = str(OmegaConf.select(cfg, "scale.name"))
    for path, rec in records.reuse_candidates(top, scale, int(cfg.seed), key, exclude=(cfg.paper, cfg.arm)):
        if same_code_and_base(rec, ident, code)[0]:
            return path
    return None


def plan_pairs(
    hydra, slug: str, seeds_of: dict[str, list[int]], user: list[str], force: bool, reuse: bool = False
) -> list[Pair]:
    """Every (arm, seed) pair of `seeds_of` with its identity and whether its record is up to date.
    Each pair is composed with its own seed (the seed decides more than `seed`: a micro run's
    default base model, `model.base`). With `reuse`, a pair that is not up to date gets the record
    of another arm it may copy instead of running (`reuse_source`); --force runs every pair."""
    code = CodeState.of(config.find_root())
    pairs = []
    for arm, arm_seeds in seeds_of.items():
        for seed in arm_seeds:
            overrides = [f"experiment={slug}/{arm}", f"seed={seed}", *user]
            try:
                ident = runner.identify(config.compose(hydra, overrides), overrides)
            except (ConfigError, UnknownNameError) as exc:
                raise ConfigError(f"{slug}/{arm} seed {seed}: {exc}") from None
            skip, why = check_record(ident, code)
            if force and skip:
                skip, why = False, "--force"
            source = reuse_source(ident, code) if reuse and not skip and not force else None
            replaces = ident.record_path if not skip and ident.record_path.exists() else None
            pairs.append(Pair(arm, seed, ident, skip, why, replaces, source))
    # A copied record brings no checkpoint: an arm that runs and starts from, or learns from, a
    # reusing arm's output would train it as an upstream stage anyway, so that arm runs instead.
    while True:
        needed = {
            (st.experiment, int(st.cfg.seed))
            for p in pairs
            if not p.skip and p.reuse is None
            for st in p.ident.stages
            if not st.done
        }
        blocked = [p for p in pairs if p.reuse is not None and (f"{slug}/{p.arm}", p.seed) in needed]
        if not blocked:
            return pairs
        for p in blocked:
            p.reuse, p.why = None, f"{p.why}; not reused: a later arm needs its checkpoint"


def copy_reused(pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """Write each reusing pair's record as a copy of its source (records.reused_copy); the record
    it replaces goes to replaced/, as a rerun's would. Returns an outcome per copy."""
    outcomes = []
    for p in pairs:
        if p.reuse is None:
            continue
        top = p.ident.record_path.parents[3]
        source = str(p.reuse.relative_to(top))
        copy = records.reused_copy(records.read_record(p.reuse), source, paper=p.ident.cfg.paper, arm=p.arm)
        assert copy["config_hash"] == p.ident.config_hash, (p.reuse, p.ident.record_path)
        records.set_aside(p.ident.record_path)
        records.write_record(copy, p.ident.record_path)
        outcomes.append({"status": "FINISHED", "name": f"{p.arm} seed {p.seed} (reused: {source})"})
    return outcomes


def _seed_list(pairs: Sequence[Pair]) -> str:
    by_arm: dict[str, list[int]] = {}
    for p in pairs:
        by_arm.setdefault(p.arm, []).append(p.seed)
    return "; ".join(f"{arm} seed {', '.join(map(str, s))}" for arm, s in by_arm.items())


# ---------------------------------------------------------------------------------------------
# Estimates from recorded run times


@dataclass
class Estimate:
    seconds: float  # wall time of the plan with its parallel jobs (unknown runs left out)
    per_arm: dict[str, float] = field(default_factory=dict)  # mean recorded seconds per run
    unknown: list[str] = field(default_factory=list)  # arms without any recorded time


def recorded_seconds(results_dir: Path, slug: str, scale: str, arm: str) -> list[float]:
    """Run times (`provenance.wall_time_s`) of the finished records of one arm at one scale,
    canonical and ad hoc, including records a rerun replaced."""
    base = Path(results_dir) / slug / scale / arm
    out = []
    for path in [*base.glob("seed*.json"), *base.glob("adhoc/seed*.json"), *base.glob("replaced/seed*.json")]:
        if path.name.endswith(".failed.json"):
            continue
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            rec = records.read_record(path)
            if rec.get("status") == "FINISHED":
                out.append(float(rec["provenance"]["wall_time_s"]))
    return out


def estimate(pairs: Sequence[Pair], results_dir: Path, slug: str, scale: str, jobs: int) -> Estimate:
    """Wall time of the runs in `pairs` from recorded per-run times, spread over `jobs` workers."""
    per_arm: dict[str, float] = {}
    unknown = []
    for arm in dict.fromkeys(p.arm for p in pairs):
        times = recorded_seconds(results_dir, slug, scale, arm)
        if times:
            per_arm[arm] = sum(times) / len(times)
        else:
            unknown.append(arm)
    total = sum(per_arm.get(p.arm, 0.0) for p in pairs)
    return Estimate(total / max(1, min(jobs, len(pairs))), per_arm, unknown)


def _estimate_line(est: Estimate, jobs: int) -> str:
    if not est.per_arm:
        return "estimated wall time: unknown (no recorded run times for these arms at this scale)"
    per = ", ".join(f"{a} {duration(s)}" for a, s in est.per_arm.items())
    unknown = f"; no recorded time for {', '.join(est.unknown)} (not counted)" if est.unknown else ""
    total = duration(est.seconds)
    return (
        f"estimated wall time: ~{total} with {jobs} parallel job(s) (per run: {per}{unknown}; "
        "the runs' own recorded times: process start-up, imports and tracking come on top)"
    )


def _builds_first(cfgs: dict[str, DictConfig], pairs: Sequence[Pair]) -> list[str]:
    """What the run builds before its own runs: the base model, upstream stages not in the plan."""
    from repro.models import base_pending

    out: list[str] = []
    for cfg in cfgs.values():
        pending = base_pending(cfg) if runner.resolve_trainer(cfg).needs_base else ""
        if pending and pending not in out:
            out.append(pending)
    planned = {f"{p.ident.cfg.paper}/{p.arm}" for p in pairs if not p.skip}
    for p in pairs:
        if p.skip:
            continue
        for st in p.ident.stages:
            if not st.done and st.experiment not in planned:
                line = f"upstream stage {st.experiment} seed {st.cfg.seed} (its own run, before {p.arm})"
                if line not in out:
                    out.append(line)
    return out


# ---------------------------------------------------------------------------------------------
# reproduce


def reproduce(
    slug: str,
    overrides: Sequence[str] = (),
    seeds: list[int] | None = None,
    jobs: int | None = None,
    arms: list[str] | None = None,
    dry_run: bool = False,
    force: bool = False,
    launcher: str | None = None,
    power: bool = False,
    max_seeds: int = 30,
    require_head: bool = False,
    reuse: bool | None = None,
) -> int:
    """Validate every arm, skip (arm, seed) pairs whose record is up to date (same config hash,
    code and base model; --force reruns them), run the rest as multiruns in waves, build tables.
    With dry_run, stop after validating and printing the plan, its estimated time and what it would
    build first and replace. `launcher` picks Hydra's launcher (LAUNCHERS; default: joblib when
    jobs > 1, else in-process); its own settings are overrides, e.g. `hydra.launcher.partition=gpu`
    for submitit_slurm.

    power: the power tier. Run the quick tier's seeds as a pilot, then compute per claim the seeds
    its paired sd needs for 80% power at its min_effect, print the plan (runs, estimated CPU time)
    and run the missing seeds, at most `max_seeds` per arm. require_head: the tables must come from
    records of HEAD's code only.

    reuse: a pair that is not up to date and whose run another arm (of any package) already made,
    with the same config but for its name, the same code and the same base weights, gets a copy of
    that arm's record instead of a run (`reuse_source`, records.reused_copy); the copy then counts
    as up to date on the same terms. Not for an arm whose checkpoint a running arm needs. None: the
    suite's `reuse` (a package composed of other packages' arms sets it)."""
    tic = time.monotonic()
    root = config.find_root()
    config.prepare_environment(root)
    suite = config.load_suite(root, slug)
    reuse = suite.reuse if reuse is None else reuse
    arms = arms or suite.arms
    seeds = seeds or suite.seeds
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs: expected a positive integer, got {jobs}")
    if max_seeds < 2:
        raise ConfigError(f"--max-seeds: expected an integer >= 2, got {max_seeds}")
    valid = config.package_arms(root, slug)
    bad = [a for a in arms if a not in valid]
    if bad:
        raise ConfigError(
            f"{suite.path}: unknown arm(s) {', '.join(bad)}; arms of '{slug}': {', '.join(valid)}"
        )
    user = [*overrides]
    chosen = launcher_choice(launcher)  # checked before anything is composed
    for override in user:
        if override.split("=", 1)[0].lstrip("+~") in ("experiment", "seed"):
            raise ConfigError(
                f"reproduce sets experiment and seed itself; use --arms / --seeds, not {override}"
            )
    user_threads = [o for o in user if o.split("=", 1)[0].lstrip("+") == "trainer.threads"]
    head = provenance.git_state(root)[0]
    if require_head and head == provenance.UNKNOWN:
        raise ConfigError(f"--require-head: {root} is not a git checkout, so there is no HEAD to require")

    # Compose and validate every arm before anything runs: a typo fails in seconds, not hours.
    cfgs: dict[str, DictConfig] = {}
    needs: dict[str, list[str]] = {}  # arm -> the arms of this run whose outputs it needs
    with config.hydra_app() as hydra:
        for arm in arms:
            arm_overrides = [f"experiment={slug}/{arm}", f"seed={seeds[0]}", *chosen, *user]
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
        pairs = plan_pairs(hydra, slug, {arm: list(seeds) for arm in arms}, [*chosen, *user], force, reuse)
    first = cfgs[arms[0]]
    uri, experiment = first.tracking.uri, first.tracking.experiment or slug
    scale = str(OmegaConf.select(first, "scale.name"))
    results_dir = Path(first.paths.results_dir)
    tables_dir = Path(first.paths.tables_dir)

    todo = [p for p in pairs if not p.skip and p.reuse is None]
    reused = [p for p in pairs if p.reuse is not None]
    jobs = max(1, min(jobs or suite.jobs, len(todo) or 1))
    # Parallel jobs share the cores: one torch thread per core per job, unless the user says.
    threads = user_threads[-1].split("=", 1)[1] if user_threads else max(1, (os.cpu_count() or 1) // jobs)
    sweeps = _sweeps(slug, arms, needs, todo, user, jobs, threads, bool(user_threads), launcher)
    in_waves = f" in {len(sweeps)} sweeps" if len(sweeps) > 1 else ""
    tier = "power tier: pilot = the quick tier" if power else "quick tier"
    print(
        f"repro reproduce {slug} ({tier}): {len(arms)} arms x {len(seeds)} seeds = {len(pairs)} runs; "
        f"{len(todo)} to run{in_waves}{f', {len(reused)} reused' if reused else ''}, "
        f"{jobs} parallel job(s) x {threads} thread(s)"
        f"{f' on {launcher}' if launcher else ''}",
        flush=True,
    )
    if power and records.extra_overrides(user):
        print("  note: overrides make the runs ad hoc; the power plan reads canonical records only")
    skipped = [p for p in pairs if p.skip]
    if skipped:
        print(f"  up to date, skipped: {_seed_list(skipped)} (same config, code and base; --force reruns)")
    for p in reused:
        source = p.reuse.relative_to(p.ident.record_path.parents[3])
        print(f"  {'would reuse' if dry_run else 'reuses'}: {p.arm} seed {p.seed} <- {source}")
    replaced = [p for p in [*todo, *reused] if p.replaces is not None]
    for p in replaced:
        print(f"  {'would replace' if dry_run else 'replaces'}: {p.replaces} ({p.why}; kept in replaced/)")
    builds = _builds_first(cfgs, todo)
    for line in builds:
        print(f"  builds first: {line}")
    est = estimate(todo, results_dir, slug, scale, jobs)
    if todo:
        print(f"  {_estimate_line(est, jobs)}", flush=True)

    def power_todo() -> tuple[PowerPlan, list[Pair]]:
        """The power tier's plan from the records there are now, and its runs still to do (not the
        quick tier's, which ran above or were up to date)."""
        plan = power_plan(slug, results_dir, tables_dir, scale, arms, seeds, max_seeds)
        with config.hydra_app() as hydra:
            more = plan_pairs(hydra, slug, plan.seeds, [*chosen, *user], force=False, reuse=reuse)
        quick_tier = {(p.arm, p.seed) for p in pairs}  # run (or up to date) in the quick tier above
        return plan, [p for p in more if not p.skip and (p.arm, p.seed) not in quick_tier]

    if dry_run:
        print(f"  validated: {', '.join(arms)}")
        for sweep in sweeps:
            print(f"  would run: repro run -m {' '.join(sweep)}")
        if power:
            plan, extra = power_todo()
            _print_plan(plan, results_dir, slug, scale, extra, jobs)
        return 0

    tracking.ensure_store(uri, experiment)
    with contextlib.suppress(Exception):
        tracking.reap_dead_runs(uri, experiment)
    outcomes: list[dict[str, Any]] = copy_reused(reused)
    for i, sweep in enumerate(sweeps, 1):
        label = slug if len(sweeps) == 1 else f"{slug} sweep {i}/{len(sweeps)}"
        outcomes += launch(sweep, multirun=True, label=label)
        if interrupted_exit_code(outcomes):
            break  # a signal stopped this sweep: do not start the next one
    if power and not interrupted_exit_code(outcomes):
        plan, extra = power_todo()
        _print_plan(plan, results_dir, slug, scale, extra, jobs)
        outcomes += copy_reused(extra)
        extra = [p for p in extra if p.reuse is None]
        more = _sweeps(slug, arms, needs, extra, user, jobs, threads, bool(user_threads), launcher)
        for i, sweep in enumerate(more, 1):
            outcomes += launch(sweep, multirun=True, label=f"{slug} power tier {i}/{len(more)}")
            if interrupted_exit_code(outcomes):
                break

    text, runs_ok = summary(f"\n{slug}", outcomes, time.monotonic() - tic)
    print(text)
    adhoc = " (ad-hoc: under <arm>/adhoc/)" if records.extra_overrides(user) else ""
    published = OmegaConf.select(first, "scale.publish", default=True)
    where = results_dir / slug / scale if published else results_dir / records.SMOKE_DIR / slug / scale
    smoke = "" if published else " (smoke scale: never published, not in the tables)"
    print(f"  records:  {where}{adhoc}{smoke}")
    print(f"  MLflow:   {uri} (experiment '{experiment}'); browse with `repro ui`")
    code = interrupted_exit_code(outcomes)
    if code:
        print(f"  stopped by a signal: `repro reproduce {slug}` again resumes (finished runs are skipped)")
        return code
    tables = make_tables(
        slug,
        results_dir,
        tables_dir,
        scales=[scale],
        suite_seeds=suite.seeds,
        require_head=head if require_head else None,
    )
    print(f"  tables:   {tables.line}")
    if tables.verdicts:
        print(f"  verdicts at scale {scale}:")
    for line in tables.verdicts:
        print(f"    {line}")
    print(f"  wall time: {duration(time.monotonic() - tic)} ({tier})", flush=True)
    return 0 if runs_ok and tables.ok else 1


def _sweeps(
    slug: str,
    arms: Sequence[str],
    needs: dict[str, list[str]],
    todo: Sequence[Pair],
    user: list[str],
    jobs: int,
    threads: Any,
    user_threads: bool,
    launcher: str | None = None,
) -> list[list[str]]:
    """Multirun overrides for the pairs to run: arms that learn from other arms' outputs run in a
    later wave; within a wave, arms that run the same seeds share one sweep."""
    seeds_of: dict[str, list[int]] = {}
    for p in todo:
        seeds_of.setdefault(p.arm, []).append(p.seed)
    sweeps = []
    for wave in waves(arms, needs):
        groups: dict[tuple[int, ...], list[str]] = {}
        for arm in wave:
            if seeds_of.get(arm):
                groups.setdefault(tuple(seeds_of[arm]), []).append(arm)
        for seeds, group in groups.items():
            sweep = [
                f"experiment={','.join(f'{slug}/{a}' for a in group)}",
                f"seed={','.join(map(str, seeds))}",
                *user,
                *([] if user_threads else [f"++trainer.threads={threads}"]),
            ]
            # The launcher's settings, except those the user sets (the user's win).
            mine = launcher_overrides(launcher, min(jobs, len(group) * len(seeds)), threads)
            sweep += [
                o for o in mine if records.override_key(o) not in {records.override_key(u) for u in user}
            ]
            sweeps.append(sweep)
    return sweeps


# ---------------------------------------------------------------------------------------------
# Tables


@dataclass
class TablesOutcome:
    """What building one paper's tables did: a line to print, whether it worked, whether the
    problem was bad input (a broken claimed.yaml or record: exit status 2), and one line per
    claim with its verdict."""

    line: str
    ok: bool
    config_error: bool = False
    verdicts: list[str] = field(default_factory=list)


def make_tables(
    slug: str,
    results_dir: Path,
    tables_dir: Path,
    force: bool = False,
    scales: Sequence[str] | None = None,
    suite_seeds: Sequence[int] | None = None,
    require_head: str | None = None,
) -> TablesOutcome:
    """Build one paper's tables; never raises. The package README's arm table is regenerated from
    its YAML files first; a paper without claimed.yaml is skipped; any other error is reported in
    `line` (runs are recorded). `verdicts` lists the claims judged at `scales` (default: every
    scale). `suite_seeds` (default: the suite's) say which tier made the table; `require_head`: a
    commit every record (of `scales`, default all) must come from."""
    from repro.tables.arms import arm_table, sync_readme  # tables pull in scipy: not at start-up

    try:
        readme = config.package_dir(config.find_root(), slug) / "README.md"
        if readme.exists():
            sync_readme(readme, arm_table(config.find_root(), slug))
    except Exception as exc:  # an arm file that does not parse: the table itself may still build
        log.warning("%s: README arm table not updated: %s", slug, exc)
    if not (tables_dir / slug / "claimed.yaml").exists():
        return TablesOutcome(f"skipped: no {tables_dir / slug / 'claimed.yaml'}", True)
    from repro.tables.build import write_tables

    try:
        root = config.find_root()
        if suite_seeds is None and (config.package_dir(root, slug) / config.SUITE_FILE).exists():
            suite_seeds = config.load_suite(root, slug).seeds
        report = write_tables(
            slug,
            results_dir,
            tables_dir,
            force=force,
            suite_seeds=suite_seeds,
            require_head=require_head,
            head_scales=scales,
        )
    except ConfigError as exc:
        return TablesOutcome(f"not written: {exc}", False, config_error=True)
    except Exception as exc:
        log.exception("tables for %s failed", slug)
        return TablesOutcome(f"FAILED: {type(exc).__name__}: {exc}", False)
    if not report.written:
        return TablesOutcome(f"not written: {report.message}", False)
    figures = f"; {len(report.figures)} figure(s) beside it" if report.figures else ""
    unchanged = " (unchanged)" if report.unchanged else ""
    verdicts = [
        f"{r.claim.id} ({r.scale}): {r.verdict}"
        for r in report.results
        if scales is None or r.scale in scales
    ]
    return TablesOutcome(f"{report.path}{unchanged}{figures}", True, verdicts=verdicts)


# ---------------------------------------------------------------------------------------------
# Launchers of `repro reproduce --launcher` (Hydra's own plugins; see README "Scaling out")

LAUNCHERS = {
    # name: (Hydra launcher option, plugin module, how to install it)
    "joblib": ("joblib", "hydra_plugins.hydra_joblib_launcher", "a core dependency"),
    "submitit_local": ("submitit_local", "hydra_plugins.hydra_submitit_launcher", "a core dependency"),
    "submitit_slurm": ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher", "a core dependency"),
    "ray": ("ray", "hydra_plugins.hydra_ray_launcher", "pip install -e '.[ray]'"),
}


def launcher_choice(launcher: str | None) -> list[str]:
    """`hydra/launcher=<option>` for `launcher` (none for the default); ConfigError if unknown or
    its plugin is not installed."""
    if launcher is None:
        return []
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher: expected one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    option, module, install = LAUNCHERS[launcher]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"--launcher {launcher}: its Hydra plugin ({module}) is not installed: {install}")
    return [f"hydra/launcher={option}"]


def launcher_overrides(launcher: str | None, parallel: int, threads: int | str) -> list[str]:
    """Hydra overrides that run a sweep on `launcher`, `parallel` jobs at a time with `threads`
    torch threads each. `reproduce` drops any of these the user sets as an override (a SLURM
    partition, GPUs per job, a Ray address): the user's win."""
    if launcher is None:  # the default: joblib's process pool when jobs run in parallel
        return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={parallel}"] if parallel > 1 else []
    out = launcher_choice(launcher)
    if launcher == "joblib":
        out.append(f"hydra.launcher.n_jobs={parallel}")
    elif launcher == "submitit_local":
        # submitit's local executor starts every job of the sweep at once (no parallelism cap).
        out.append(f"hydra.launcher.cpus_per_task={threads}")
    elif launcher == "submitit_slurm":
        out += [f"hydra.launcher.array_parallelism={parallel}", f"hydra.launcher.cpus_per_task={threads}"]
    elif launcher == "ray":
        # Ray schedules by resources: each job asks for its threads' CPUs (add num_gpus for GPUs).
        out.append(f"+hydra.launcher.ray.remote.num_cpus={threads}")
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
    arm gets the most any of its claims needs. Claims that were not run, or whose gate failed,
    ask for nothing more (seeds would not decide them) — except where every failed gate is judged
    over the mean (`over: mean`) and the pilot's mean is on the gate's side: the interval is then
    too wide to establish the regime yet, and the seeds the effect needs narrow it too."""
    from repro.tables.build import load_records
    from repro.tables.claims import NOT_RUN, UNTESTABLE, evaluate_all, load_claimed

    paper = load_claimed(tables_dir / slug / "claimed.yaml")
    runs = load_records(results_dir, slug)
    results = evaluate_all(paper, runs.records.get(scale, {}), scale)
    want = {arm: len(pilot_seeds) for arm in arms}
    claims = []
    for r in results:
        m = r.claim.measure
        if r.power is None or m.kind not in ("effect", "change"):  # seeds decide paired designs only
            continue
        pending = r.verdict == UNTESTABLE and _gates_may_pass(r.gates)
        if r.verdict in (NOT_RUN, UNTESTABLE) and not pending:
            claims.append((r.claim.id, m.arms, r.power.needed, 0, f"{r.verdict}: no more seeds"))
            continue
        needed = r.power.needed
        n = len(pilot_seeds) if needed != needed else int(min(max(needed, 2), max_seeds))  # NaN: keep
        note = "capped by --max-seeds" if needed == needed and needed > max_seeds else ""
        if pending:
            note = "; ".join(filter(None, ["a gate over the mean is not established yet", note]))
        claims.append((r.claim.id, m.arms, needed, n, note))
        for arm in m.arms:
            if arm in want:
                want[arm] = max(want[arm], n)
    extra = iter(range(max(pilot_seeds) + 1, 10**9))
    order = list(pilot_seeds) + [next(extra) for _ in range(max(want.values()) - len(pilot_seeds))]
    return PowerPlan({arm: order[:n] for arm, n in want.items()}, claims)


def _gates_may_pass(gates) -> bool:
    """True when every failed gate is judged over the mean and the mean itself meets it: more seeds
    narrow its interval and may establish it (a gate on every seed can only fail more often)."""
    failed = [g for g in gates if g.holds is False]
    return bool(failed) and all(g.gate.over == "mean" and g.gate.holds(g.mean) for g in failed)


def _print_plan(
    plan: PowerPlan, results_dir: Path, slug: str, scale: str, extra: Sequence[Pair], jobs: int
) -> None:
    """The power tier's plan: per claim the seeds needed; per arm the runs to add and their cost,
    from the mean wall time and threads of the arm's pilot records."""
    todo: dict[str, list[int]] = {}
    for p in extra:
        if p.reuse is None:  # reused pairs are copied, not run
            todo.setdefault(p.arm, []).append(p.seed)
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


def pretrain(base: int, overrides: Sequence[str] = (), ship: bool = False, name: str | None = None) -> int:
    """`repro pretrain --base k`: rebuild micro base k (1 thread) and say whether its weights match
    the shipped checksum of the same spec. With `ship`, the rebuilt base replaces the shipped folder
    (`base<k>`, or `name` for a base other than the main model's, e.g. a peer of another size)."""
    with config.hydra_app() as hydra:
        cfg = config.compose(hydra, [f"model.base={base}", *overrides])
    if cfg.model.kind != "micro":
        raise ConfigError(f"model.kind: `repro pretrain` builds micro bases, got {cfg.model.kind!r}")
    from repro.models.micro import pretrain_key, read_manifest, rebuild_base, shipped_dir

    if name is not None and (not name.replace("_", "").isalnum() or name.startswith("base")):
        raise ConfigError(
            f"--name: a folder name of letters, digits and _ not starting with 'base', got {name!r}"
        )
    shipped = shipped_dir(base, name)
    out = shipped if ship else Path(cfg.paths.cache_dir) / "micro_models" / "rebuilt" / shipped.name
    if ship and name is not None:
        there = read_manifest(out)
        if there is not None and there["pretrain_key"] != pretrain_key(cfg.task, cfg.model):
            raise ConfigError(f"--name {name}: {out} holds a base of another spec; pick another name")
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
