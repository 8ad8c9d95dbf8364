"""MLflow tracking for runs: one experiment per paper, one MLflow run per (arm, seed) job.

The tracking URI is `cfg.tracking.uri` (SQLite next to the checkout unless MLFLOW_TRACKING_URI is
set). SQLite allows one writer at a time, so: the parent process creates the database and the
experiment before parallel jobs start (`ensure_store`), metrics are sent in batches, and every
write is retried with backoff on "database is locked". Artifacts of a SQLite store go to `mlruns/`
next to the database file. Browse with `repro ui`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.experimental.callback import Callback

from repro.locking import file_lock
from repro.progress import ProgressReport
from repro.records import encode_items

__all__ = ["ProgressReport", "Run", "ensure_store", "reap_dead_runs"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# MLflow's limits on one log_batch call and on a param value.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000


def configure() -> None:
    """Process-wide settings: no telemetry, no INFO chatter from database migrations."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.store.sqlalchemy_store"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _is_transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


def retry(fn: Callable[..., T], *args: Any, attempts: int = 10, **kwargs: Any) -> T:
    """Call fn, retrying with jittered exponential backoff (0.1 s .. ~10 s) while SQLite is locked."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == attempts - 1 or not _is_transient(exc):
                raise
            delay = min(10.0, 0.1 * 2**attempt) * (0.5 + random.random())
            log.debug("MLflow store busy (%s); retrying in %.2fs", exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI, else None."""
    # SQLAlchemy: sqlite:///relative.db, sqlite:////absolute.db, optional ?query.
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def artifact_location(uri: str) -> str | None:
    """`mlruns/` beside a SQLite database (MLflow's default is relative to the working directory);
    None lets a tracking server choose."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.absolute().parent / "mlruns").as_uri()


def client(uri: str):  # -> mlflow.MlflowClient (imported lazily: ~2 s)
    """An MlflowClient on `uri`; creates a SQLite database (and its folder) on first use."""
    configure()
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if db is not None:
        db.absolute().parent.mkdir(parents=True, exist_ok=True)
    return retry(MlflowClient, tracking_uri=uri)


def ensure_experiment(mlflow_client: Any, uri: str, name: str) -> str:
    """Id of experiment `name`, created if missing (safe when jobs race to create it)."""
    from mlflow.exceptions import MlflowException

    found = retry(mlflow_client.get_experiment_by_name, name)
    if found is not None:
        return found.experiment_id
    try:
        return retry(mlflow_client.create_experiment, name, artifact_location=artifact_location(uri))
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
            raise
        return retry(mlflow_client.get_experiment_by_name, name).experiment_id


def ensure_store(uri: str, experiment: str | None = None) -> str | None:
    """Create the tracking database (schema migrations included) and, if named, the experiment.
    Every entry point calls it before logging; on a SQLite file it holds a file lock beside the
    database, so independent processes never race to migrate a fresh store."""
    db = sqlite_path(uri)
    lock = file_lock(db.absolute().with_name(db.name + ".lock")) if db else contextlib.nullcontext()
    with lock:
        mlflow_client = client(uri)
        retry(mlflow_client.search_experiments, max_results=1)  # forces the schema to exist
        if experiment is None:
            return None
        return ensure_experiment(mlflow_client, uri, experiment)


def process_start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None if there is no such
    process. With the pid it names a process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc (macOS): existence only
        except ProcessLookupError:
            return None
        except PermissionError:
            return "unknown"
        return "unknown"
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def process_tags() -> dict[str, str]:
    """Tags that say which process runs a run: `hostname`, `pid`, `pid_start`."""
    pid = os.getpid()
    return {"hostname": socket.gethostname(), "pid": str(pid), "pid_start": process_start_time(pid) or ""}


def reap_dead_runs(uri: str, experiment: str) -> list[str]:
    """Mark FAILED, with failure_reason "process died ...", the runs of `experiment` left RUNNING by
    a process of this host that no longer exists (kill -9, a crash, a lost machine). Returns their
    run ids. Runs of other hosts, and runs without a pid tag, are left alone."""
    mlflow_client = client(uri)
    exp = retry(mlflow_client.get_experiment_by_name, experiment)
    if exp is None:
        return []
    host = socket.gethostname()
    running = retry(
        mlflow_client.search_runs,
        [exp.experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.hostname = '{host}'",
        max_results=1000,
    )
    reaped = []
    for run in running:
        tags = run.data.tags
        if not tags.get("pid", "").isdigit():
            continue
        started = process_start_time(int(tags["pid"]))
        alive = started is not None and (started == "unknown" or started == tags.get("pid_start", started))
        if alive:
            continue
        reason = f"process died: pid {tags['pid']} on {host} is gone and left the run RUNNING"
        retry(mlflow_client.set_tag, run.info.run_id, "failure_reason", reason)
        retry(mlflow_client.set_terminated, run.info.run_id, "FAILED")
        log.warning("run %s (%s): %s; marked FAILED", run.info.run_id, run.info.run_name, reason)
        reaped.append(run.info.run_id)
    return reaped


class EnsureStoreCallback(Callback):
    """Hydra callback: creates the store in the parent process before a multirun's jobs start."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        uri = OmegaConf.select(config, "tracking.uri")
        if uri:
            ensure_store(uri, OmegaConf.select(config, "tracking.experiment"))


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}, 'c': [1, 2]} -> {'a.b': 1, 'c': [1, 2]} (lists stay whole)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Run:
    """One MLflow run: params and tags up front, buffered metrics, artefacts, terminal status.

    The run itself is the `Logger` handed to the trainer: `run(metrics, step)` logs a step and keeps
    every curve in memory for the run record (and the per-item results of a value that carries
    them, `repro.eval.micro.ItemScores`, in `items`); `run.progress(step, total, **fields)` shows where
    training is (a ProgressReport labelled with the run name)."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str,
        tags: dict[str, str],
        flush_every: int = 25,
        flush_seconds: float = 15.0,
        progress_seconds: float = 30.0,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self._Metric, self._Param, self._RunTag = Metric, Param, RunTag
        self.uri = uri
        self.client = client(uri)
        self.experiment_id = ensure_experiment(self.client, uri, experiment)
        run = retry(self.client.create_run, self.experiment_id, run_name=run_name)
        self.run_id: str = run.info.run_id
        self.set_tags({**process_tags(), **tags})
        self.curves: dict[str, list[list[float]]] = {}
        # Per-item results of evals (a metric value with a `correct` array): [[step, encoded], ...].
        self.items: dict[str, list[list[int | str]]] = {}
        self.flush_every = max(1, int(flush_every))
        self.flush_seconds = flush_seconds
        self._buffer: list[Any] = []
        self._steps_since_flush = 0
        self._last_flush = time.monotonic()
        self.last_step: int | None = None
        self._progress = ProgressReport(run_name, every_s=progress_seconds)

    def set_tags(self, tags: dict[str, Any]) -> None:
        items = [self._RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()]
        for chunk in _chunks(items, MAX_TAGS_PER_BATCH):
            retry(self.client.log_batch, self.run_id, tags=chunk)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params, at most 100 per call, values cut to MLflow's 6000-character limit."""
        items = [self._Param(k, str(v)[:MAX_PARAM_VALUE]) for k, v in params.items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            retry(self.client.log_batch, self.run_id, params=chunk)

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        """The trainer's Logger: buffer one step of metrics and keep their curves."""
        step = int(step)
        timestamp = int(time.time() * 1000)
        for name, value in metrics.items():
            correct = getattr(value, "correct", None)  # repro.eval.micro.ItemScores
            if correct is not None:
                self.items.setdefault(name, []).append([step, encode_items(correct)])
            value = float(value)
            self.curves.setdefault(name, []).append([step, value])
            self._buffer.append(self._Metric(name, value, timestamp, step))
        self.last_step = step if self.last_step is None else max(self.last_step, step)
        self._steps_since_flush += 1
        if (
            self._steps_since_flush >= self.flush_every
            or len(self._buffer) >= MAX_METRICS_PER_BATCH
            or time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def progress(self, step: int, total: int, **fields: float) -> None:
        """The trainer's progress report (not logged to MLflow): see ProgressReport."""
        self._progress(step, total, **fields)

    def flush(self) -> None:
        """Send buffered metrics, at most 1000 per log_batch call."""
        for chunk in _chunks(self._buffer, MAX_METRICS_PER_BATCH):
            retry(self.client.log_batch, self.run_id, metrics=chunk)
        self._buffer = []
        self._steps_since_flush = 0
        self._last_flush = time.monotonic()

    def log_final(self, final: dict[str, Any]) -> None:
        """Final summary numbers as metrics `final/<name>` (non-numbers are left to the artefact)."""
        step = self.last_step or 0
        timestamp = int(time.time() * 1000)
        for name, value in final.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            self._buffer.append(self._Metric(f"final/{name}", value, timestamp, step))
        self.flush()

    def log_text(self, text: str, artifact_file: str) -> None:
        retry(self.client.log_text, self.run_id, text, artifact_file)

    def log_file(self, path: str | os.PathLike[str]) -> None:
        """Copy a file into the run's artefacts (e.g. the run record, the curves figure)."""
        retry(self.client.log_artifact, self.run_id, str(path))

    def end(self, status: str, failure_reason: str | None = None) -> None:
        """Flush what is buffered (best effort when failing) and mark the run FINISHED/FAILED/KILLED."""
        self._progress.close()
        try:
            self.flush()
        except Exception:
            if status == "FINISHED":
                raise
            log.warning("could not flush metrics of failed run %s", self.run_id, exc_info=True)
        if failure_reason is not None:
            self.set_tags({"failure_reason": failure_reason})
        retry(self.client.set_terminated, self.run_id, status)
