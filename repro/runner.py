"""Run one configured job: validate, seed, track in MLflow, train, write the run record.

`run_one(cfg)` is what every Hydra job of `repro run` / `repro reproduce` calls:

    plan upstream stages (repro.pipeline)            cheap; their outputs become teacher / model
    (the config was validated by repro.config when it was composed)
    seed, open the MLflow run (tags, params, config)
    run missing upstream stages (their own runs)
    spec.train(cfg, log)                              log(metrics, step) -> MLflow + curves
    final metrics + summary artefact, run record      FINISHED
    any exception while training                      FAILED + failure_reason + .failed.json

A failed training run never raises out of `run_one`, so a sweep carries on with its other jobs.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import time
from datetime import UTC, datetime
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from repro import pipeline, provenance, records, tracking
from repro.errors import ConfigError

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


def run_one(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any] | None:
    """Validate, train and track one job (see the module docstring).

    Returns {'status': 'FINISHED', 'run_id', 'final', 'record'} or None if training failed.
    `cfg` is a finalized config (repro.config.finalize). Raises ConfigError before anything is tracked.
    `overrides` defaults to the current Hydra job's; they decide canonical vs ad-hoc records."""
    if overrides is None:
        overrides = hydra_overrides()
    try:
        stages = pipeline.plan(cfg, overrides)  # upstream runs this one starts from / learns from
        cfg = pipeline.apply(cfg, stages)
        spec = resolve_trainer(cfg)
        portable = provenance.portable_config(cfg)  # resolves every interpolation
    except OmegaConfBaseException as exc:
        raise ConfigError(f"config does not resolve: {exc}") from None
    if not isinstance(cfg.get("seed"), int):
        raise ConfigError(f"seed: expected an integer, got {cfg.get('seed')!r}")
    device = where_it_runs(cfg)  # device=cuda without a GPU fails here, before anything is tracked

    seed = int(cfg.seed)
    paper, arm = cfg.get("paper"), cfg.get("arm")
    scale = OmegaConf.select(cfg, "scale.name")
    seed_everything(seed)
    threads = _threads(cfg)
    config_hash = provenance.config_hash(portable)
    root = OmegaConf.select(cfg, "paths.root", default=".")
    git_sha, git_dirty = provenance.git_state(root)
    host = socket.gethostname()
    canonical = records.is_canonical(overrides)
    write_record = bool(OmegaConf.select(cfg, "tracking.record", default=True))
    record_kw = dict(
        paper=paper, scale=scale, arm=arm, seed=seed, canonical=canonical, config_hash=config_hash
    )
    results_dir = OmegaConf.select(cfg, "paths.results_dir", default="results")

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
        "config_hash": config_hash,
        "canonical": str(canonical).lower(),
        "mlflow.source.git.commit": git_sha,
    }
    tracking.ensure_store(uri, experiment)  # a fresh SQLite store is created once, under a lock
    run = tracking.Run(
        uri,
        experiment,
        run_name=run_name_of(arm, seed),
        tags={k: v for k, v in tags.items() if v is not None},
        flush_every=OmegaConf.select(cfg, "tracking.flush_every", default=25),
    )
    log.info("MLflow run %s (%s, experiment %s)", run.run_id, run_name_of(arm, seed), experiment)

    started = datetime.now(UTC).isoformat(timespec="seconds")
    tic = time.monotonic()
    status, failure_reason, final = "FINISHED", None, {}
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        run.log_params(tracking.flatten({k: v for k, v in resolved.items() if k != "hydra"}))
        run.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        pipeline.ensure(stages, run_one)  # run missing upstream stages first (each its own tracked run)
        final = dict(spec.train(cfg, run) or {})
        run.log_final(final)
        run.log_text(json.dumps(final, indent=1, default=str), "summary.json")
    except KeyboardInterrupt:
        run.end("KILLED", "KeyboardInterrupt")
        raise
    except Exception as exc:
        status, failure_reason = "FAILED", f"{type(exc).__name__}: {exc}"
        log.exception("run %s failed: %s", run_name_of(arm, seed), failure_reason)
    wall = time.monotonic() - tic

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
            config=portable,
            config_hash=config_hash,
            final=final,
            curves=run.curves,
            provenance={
                "git_sha": git_sha,
                "git_dirty": git_dirty,
                "versions": provenance.versions(),
                "wall_time_s": round(wall, 3),
                "started": started,
                "host": host,
                "threads": threads,
                "device": device,
            },
        )
        path = records.record_path(results_dir, **record_kw, failed=status == "FAILED")
        try:
            record_path = records.write_record(record, path)
        except OSError:
            log.exception("could not write the run record %s", path)
            status, failure_reason = "FAILED", failure_reason or f"could not write record {path}"
    try:
        if record_path is not None:
            run.set_tags({"record": str(record_path)})
        run.end(status, failure_reason)
    except Exception:
        log.exception("could not close MLflow run %s", run.run_id)
        if status == "FINISHED":
            return None

    if status == "FAILED":
        return None
    log.info("run %s finished in %.1fs; record: %s", run_name_of(arm, seed), wall, record_path)
    return {
        "status": status,
        "run_id": run.run_id,
        "final": final,
        "record": record_path and str(record_path),
    }


def where_it_runs(cfg: DictConfig) -> str:
    """'cpu, float32' / 'cuda (<GPU name>), bfloat16': the run's device and compute dtype
    (repro.devices; ConfigError if the config asks for a device this node does not have)."""
    from repro import devices

    return devices.describe(*devices.of(cfg))


def run_name_of(arm: str | None, seed: int) -> str:
    """MLflow run name: `<arm>-s<seed>`."""
    return f"{arm or 'adhoc'}-s{seed}"
