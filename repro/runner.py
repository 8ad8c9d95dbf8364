"""Run one configured job: validate, seed, track in MLflow, train, write the run record.

`run_one(cfg)` is what every Hydra job of `repro run` / `repro reproduce` calls:

    plan upstream stages (repro.pipeline)            cheap; their outputs become teacher / model
    (the config was validated by repro.config when it was composed)
    seed, open the MLflow run (tags, params, config); runs a dead process left RUNNING -> FAILED
    run missing upstream stages (their own runs)      timed apart: provenance.stages_s
    build the base model if not cached                timed apart: provenance.base_build_s
    spec.train(cfg, log)                              log(metrics, step) -> MLflow + curves
    final metrics, record JSON and curves figure as artefacts, run record      FINISHED
    any exception while training                      FAILED + failure_reason + .failed.json
    SIGINT / SIGTERM while training                   KILLED + the signal's name + .failed.json,
                                                      then Interrupted is raised to the caller
    one line: the run's status, time, final metrics and record path

A failed training run never raises out of `run_one`, so a sweep carries on with its other jobs.
A record that a rerun replaces is moved to `replaced/` beside it (repro.records.set_aside).
`identify(cfg, overrides)` is the cheap first half (stages, config hash, record path): `repro
reproduce` uses it to tell which runs already have an up-to-date record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import signal
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from repro import pipeline, provenance, records, tracking
from repro.errors import ConfigError, Interrupted
from repro.progress import quiet_third_party

log = logging.getLogger(__name__)


def hydra_overrides() -> list[str] | None:
    """The current Hydra job's task overrides (e.g. ['experiment=x/a', 'seed=2']); None outside a job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)


def resolve_trainer(cfg: DictConfig):  # -> TrainerSpec
    """The registered trainer named by `trainer.name` (the config layer has validated cfg)."""
    import repro.trainers  # noqa: F401  (registers the built-in trainers: ~10 s of imports)
    from repro.trainers.base import TRAINERS

    return TRAINERS[cfg.trainer.name]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _threads(cfg: DictConfig) -> int:
    import torch

    threads = OmegaConf.select(cfg, "trainer.threads")
    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


@dataclass(frozen=True)
class Identity:
    """What a job is, known before it runs: its config with upstream outputs applied, the stages it
    needs, its config hash and where its record goes."""

    cfg: DictConfig
    stages: list[pipeline.Stage]
    portable: dict[str, Any]
    config_hash: str
    canonical: bool
    record_path: Path  # where a finished run's record goes
    failed_path: Path  # ... and a failed or killed one's
    own_model_cfg: DictConfig  # the config before an `init` stage replaced the model (root base)

    def base_sha256(self) -> str | None:
        """Checksum of the weights this job starts from (as its record's `base_sha256`) if they
        are built (else None: nothing is pretrained or converted to find out)."""
        from repro.models import built_weights_sha256

        return built_weights_sha256(self.cfg)


def identify(cfg: DictConfig, overrides: list[str] | None) -> Identity:
    """Stages, config hash and record paths of a finalized config (no training, no tracking).
    Raises ConfigError if the config does not resolve or the seed is not an integer."""
    try:
        stages = pipeline.plan(cfg, overrides)  # upstream runs this one starts from / learns from
        own_model_cfg = cfg  # before an `init` stage replaces the model: the chain's root base
        cfg = pipeline.apply(cfg, stages)
        portable = provenance.portable_config(cfg)  # resolves every interpolation
    except OmegaConfBaseException as exc:
        raise ConfigError(f"config does not resolve: {exc}") from None
    if not isinstance(cfg.get("seed"), int):
        raise ConfigError(f"seed: expected an integer, got {cfg.get('seed')!r}")
    config_hash = provenance.config_hash(portable)
    canonical = records.is_canonical(overrides)
    where = dict(
        paper=cfg.get("paper"),
        scale=OmegaConf.select(cfg, "scale.name"),
        arm=cfg.get("arm"),
        seed=int(cfg.seed),
        canonical=canonical,
        config_hash=config_hash,
        publish=bool(OmegaConf.select(cfg, "scale.publish", default=True)),  # tiny: never published
    )
    results_dir = OmegaConf.select(cfg, "paths.results_dir", default="results")
    return Identity(
        cfg,
        stages,
        portable,
        config_hash,
        canonical,
        records.record_path(results_dir, **where, failed=False),
        records.record_path(results_dir, **where, failed=True),
        own_model_cfg,
    )


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """During the block, SIGINT and SIGTERM raise Interrupted(signum) in the main thread; the first
    one also sets both to be ignored, so the cleanup that follows (record, MLflow status) runs to
    its end. The previous handlers come back afterwards. Outside the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        ignore_signals()
        raise Interrupted(signum)

    with handling_signals(handler):
        yield


@contextlib.contextmanager
def handling_signals(handler: Any) -> Iterator[None]:
    """During the block `handler` handles SIGINT and SIGTERM; the previous handlers come back
    afterwards (main thread only, as `signal.signal` requires)."""
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def ignore_signals() -> None:
    """Ignore SIGINT and SIGTERM (inside `signals_raise`, until its block ends)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def run_one(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any] | None:
    """Validate, train and track one job (see the module docstring).

    Returns {'status': 'FINISHED', 'run_id', 'final', 'record'} or None if training failed; raises
    Interrupted after recording a run that a signal stopped.
    `cfg` is a finalized config (repro.config.finalize). Raises ConfigError before anything is tracked.
    `overrides` defaults to the current Hydra job's; they decide canonical vs ad-hoc records."""
    if overrides is None:
        overrides = hydra_overrides()
    job = identify(cfg, overrides)
    cfg = job.cfg
    spec = resolve_trainer(cfg)
    quiet_third_party()
    device = where_it_runs(cfg)  # device=cuda without a GPU fails here, before anything is tracked

    seed = int(cfg.seed)
    paper, arm = cfg.get("paper"), cfg.get("arm")
    scale = OmegaConf.select(cfg, "scale.name")
    name = run_name_of(arm, seed)
    seed_everything(seed)
    threads = _threads(cfg)
    root = OmegaConf.select(cfg, "paths.root", default=".")
    git_sha, git_dirty = provenance.git_state(root)
    git_diff = provenance.git_diff_sha256(root) if git_dirty else None
    code_sha = provenance.code_sha256(root)
    host = socket.gethostname()
    write_record = bool(OmegaConf.select(cfg, "tracking.record", default=True))

    uri = cfg.tracking.uri
    experiment = OmegaConf.select(cfg, "tracking.experiment") or paper or "adhoc"
    tags = {
        "paper": paper,
        "arm": arm,
        "seed": seed,
        "scale": scale,
        "git_sha": git_sha,
        "git_dirty": "unknown" if git_dirty is None else str(git_dirty).lower(),
        "overrides": " ".join(overrides) if overrides is not None else "unknown",
        "hostname": host,
        "config_hash": job.config_hash,
        "code_sha256": code_sha,
        "canonical": str(job.canonical).lower(),
        "mlflow.source.git.commit": git_sha,
    }
    tracking.ensure_store(uri, experiment)  # a fresh SQLite store is created once, under a lock
    try:
        tracking.reap_dead_runs(uri, experiment)
    except Exception:  # bookkeeping of other runs must not stop this one
        log.warning("could not check for runs left RUNNING by dead processes", exc_info=True)
    run = tracking.Run(
        uri,
        experiment,
        run_name=name,
        tags={k: v for k, v in tags.items() if v is not None},
        flush_every=OmegaConf.select(cfg, "tracking.flush_every", default=25),
    )
    log.info("MLflow run %s (%s, experiment %s)", run.run_id, name, experiment)

    started = datetime.now(UTC).isoformat(timespec="seconds")
    status, failure_reason, final, saved = "FINISHED", None, {}, None
    weights: dict[str, Any] = {}
    interrupted: Interrupted | None = None
    times = {"stages_s": 0.0, "base_build_s": 0.0}
    tic = time.monotonic()
    with signals_raise():
        try:
            resolved = OmegaConf.to_container(cfg, resolve=True)
            run.log_params(tracking.flatten({k: v for k, v in resolved.items() if k != "hydra"}))
            run.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
            t = time.monotonic()
            pipeline.ensure(job.stages, run_one)  # missing upstream stages first (their own runs)
            times["stages_s"] = time.monotonic() - t
            if spec.needs_base:
                times["base_build_s"] = _build_base(cfg)
            weights = starting_weights(cfg, job.own_model_cfg, job.stages, built_only=not spec.needs_base)
            run.set_tags(weight_tags(weights))
            tic = time.monotonic()  # the run's own time starts here
            final = dict(spec.train(cfg, run) or {})
            saved = _saved_model(cfg)
            if saved is not None:
                run.set_tags({"checkpoint": str(saved)})
            run.log_final(final)
            run.log_text(json.dumps(final, indent=1, default=str), "summary.json")
        except KeyboardInterrupt as exc:  # Interrupted (SIGINT/SIGTERM), or a bare Ctrl-C
            ignore_signals()
            interrupted = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
            status, failure_reason = "KILLED", f"interrupted by {interrupted.name}"
        except Exception as exc:
            status, failure_reason = "FAILED", f"{type(exc).__name__}: {exc}"
            log.error("run %s failed: %s", name, failure_reason)
            _best_effort(run.log_text, traceback.format_exc(), "traceback.txt")
        ignore_signals()  # from here on, record what happened whatever arrives
        wall = time.monotonic() - tic
        if not weights:  # failed before the base was built: its checksum if it exists
            weights = {"base_sha256": _best_effort(job.base_sha256)}

        record_path = None
        if write_record:
            record = records.make_record(
                paper=paper,
                arm=arm,
                seed=seed,
                scale=scale,
                status=status,
                failure_reason=failure_reason,
                run_id=run.run_id,
                overrides=overrides,
                config=job.portable,
                config_hash=job.config_hash,
                final=final,
                curves=run.curves,
                items=run.items,
                provenance={
                    **weights,
                    "git_sha": git_sha,
                    "git_dirty": git_dirty,
                    "git_diff_sha256": git_diff,
                    "code_sha256": code_sha,
                    "versions": provenance.versions(),
                    "wall_time_s": round(wall, 3),
                    "base_build_s": round(times["base_build_s"], 3),
                    "stages_s": round(times["stages_s"], 3),
                    "started": started,
                    "host": host,
                    "threads": threads,
                    "device": device,
                },
            )
            path = job.record_path if status == "FINISHED" else job.failed_path
            try:
                aside = records.set_aside(path)
                if aside is not None:
                    log.warning("%s: replacing the record %s (the old one is kept as %s)", name, path, aside)
                record_path = records.write_record(record, path)
            except OSError:
                log.exception("could not write the run record %s", path)
                if status == "FINISHED":
                    status, failure_reason = "FAILED", f"could not write record {path}"
            if record_path is not None:
                _best_effort(run.log_text, records.dumps(record), "record.json")
        _best_effort(_log_curves_figure, run, f"{paper}/{arm} seed {seed} ({scale}): {status}")
        try:
            # Timing as metrics of their own (not in the record's curves, already written).
            run({"time/run_s": wall, **{f"time/{k}": v for k, v in times.items()}}, run.last_step or 0)
            if record_path is not None:
                run.set_tags({"record": str(record_path)})
            run.end(status, failure_reason)
        except Exception:
            log.exception("could not close MLflow run %s", run.run_id)
            if status == "FINISHED":
                status = "FAILED"
        line = _summary_line(name, status, failure_reason, wall, times, final, record_path)
        print(line + (f" | model {saved}" if saved is not None else ""), flush=True)

    if interrupted is not None:
        raise interrupted
    if status != "FINISHED":
        return None
    return {
        "status": status,
        "run_id": run.run_id,
        "final": final,
        "record": record_path and str(record_path),
        "seconds": round(wall, 1),
    }


def starting_weights(
    cfg: DictConfig, own_model_cfg: DictConfig, stages, built_only: bool = False
) -> dict[str, Any]:
    """The sha256 of the weights the run starts from (`base_sha256`; what was hashed and where it
    came from in `base`), of the chain's root base (`root_base_sha256`: the model before an `init`
    stage replaced it; the base itself otherwise) and of each upstream stage's checkpoint.
    built_only (a trainer that loads no base): checksums of bases already built, else None;
    nothing is pretrained or converted to find out."""
    from repro.models import base_pending, folder_sha256, weights_provenance

    def of(c: DictConfig) -> dict[str, Any]:
        if built_only and base_pending(c):
            return {"sha256": None, "of": None, "source": "not built (the trainer loads no base)"}
        return weights_provenance(c)

    base = of(cfg)
    root = of(own_model_cfg) if any(st.role == "init" for st in stages) else base
    upstream = {
        st.role: {"experiment": st.experiment, "sha256": folder_sha256(st.output)[0]} for st in stages
    }
    return {
        "base_sha256": base["sha256"],
        "base": {k: v for k, v in base.items() if k != "sha256"},
        "root_base_sha256": root["sha256"],
        "upstream": upstream,
    }


def weight_tags(weights: dict[str, Any]) -> dict[str, str]:
    """MLflow tags of `starting_weights`."""
    tags = {"base_sha256": str(weights["base_sha256"]), "base_source": str(weights["base"].get("source"))}
    if "base" in weights["base"]:
        tags["base"] = str(weights["base"]["base"])
    if weights["root_base_sha256"] != weights["base_sha256"]:
        tags["root_base_sha256"] = str(weights["root_base_sha256"])
    tags |= {f"upstream_{role}_sha256": str(u["sha256"]) for role, u in weights["upstream"].items()}
    return tags


def _saved_model(cfg: DictConfig) -> Path | None:
    """The folder the trainer saved its final model to (`trainer.save`), if it did."""
    if not OmegaConf.select(cfg, "trainer.save", default=False):
        return None
    out = provenance.checkpoint_dir(cfg)
    return out if (out / "config.json").exists() else None


def _build_base(cfg: DictConfig) -> float:
    """Build the base model if it is not cached (saying so), returning the seconds it took."""
    from repro.models import base_pending, ensure_base

    t = time.monotonic()
    pending = base_pending(cfg)
    if pending:
        print(f"base: {pending} (other jobs that need it wait for it)", flush=True)
    ensure_base(cfg)
    return time.monotonic() - t


def _log_curves_figure(run: tracking.Run, title: str) -> None:
    from repro.tables.figures import run_curves_figure

    with tempfile.TemporaryDirectory(prefix="repro-curves-") as tmp:
        path = run_curves_figure(run.curves, title, Path(tmp) / "curves.png")
        if path is not None:
            run.log_file(path)


def _best_effort(fn: Any, *args: Any) -> Any:
    """fn(*args), or None (logged) if it fails: extras that must not lose a run's record."""
    try:
        return fn(*args)
    except Exception:
        log.warning("%s failed", getattr(fn, "__name__", fn), exc_info=True)
        return None


# Final metrics a run's summary line shows first (the rest follow by name, up to MAX_SHOWN).
SHOWN_FIRST = ("eval/id/greedy_acc", "eval/ood/greedy_acc", "retention/ratio", "drift/mmd2", "train/loss")
MAX_SHOWN = 6


def _summary_line(
    name: str,
    status: str,
    reason: str | None,
    wall: float,
    times: dict[str, float],
    final: dict[str, Any],
    record_path: Path | None,
) -> str:
    """`a-s1: FINISHED in 12 s (+ base 30 s): eval/id/greedy_acc 0.42, ... | record <path>`."""
    from repro.progress import duration

    extra = "".join(
        f" + {what} {duration(times[key])}"
        for key, what in (("base_build_s", "base"), ("stages_s", "upstream stages"))
        if times.get(key, 0) >= 1
    )
    head = f"{name}: {status} " + ("in" if status == "FINISHED" else "after") + f" {duration(wall)}"
    head += f" ({extra.strip(' +')})" if extra else ""
    if status == "FINISHED":
        numbers = {k: v for k, v in final.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        keys = [k for k in SHOWN_FIRST if k in numbers]
        keys += [k for k in sorted(numbers) if k not in keys]
        body = ", ".join(f"{k} {numbers[k]:.4g}" for k in keys[:MAX_SHOWN]) or "no final metrics"
        more = f" (+{len(keys) - MAX_SHOWN} more)" if len(keys) > MAX_SHOWN else ""
        head += f": {body}{more}"
    else:
        head += f": {reason}"
    return head + (f" | record {record_path}" if record_path is not None else "")


def where_it_runs(cfg: DictConfig) -> str:
    """'cpu, float32' / 'cuda (<GPU name>), bfloat16': the run's device and compute dtype
    (repro.devices; ConfigError if the config asks for a device this node does not have)."""
    from repro import devices

    return devices.describe(*devices.of(cfg))


def run_name_of(arm: str | None, seed: int) -> str:
    """MLflow run name: `<arm>-s<seed>`."""
    return f"{arm or 'adhoc'}-s{seed}"
