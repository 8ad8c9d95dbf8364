"""Load committed run records into an MLflow tracking store, so readers can browse the published
runs (curves, params, final metrics, the record itself) without the author's `mlflow.db`.

    repro mlflow-import [paper ...] [--uri sqlite:///published.db]
    n_new, n_seen = import_records(uri, results_dir, papers)

Each record `<results_dir>/<paper>/<scale>/<arm>/seed<k>[.failed].json` becomes one run of
experiment `<paper>`, named `<arm>-s<seed>`, with the record's start time, wall time and status;
params are the record's config; metrics its curves (by step) and `final/<name>`; artefacts the
record JSON (`record.json`) and a curves figure (`curves.png`). Tags: paper, arm, seed, scale,
git_sha, config_hash, `record` (the path in the repository, as the tables link it) and
`source_run_id` (the run id the tables show). Importing again skips records already imported
(same `record_sha256` tag), so it can run after every `git pull`.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from repro import records, tracking
from repro.errors import ConfigError


def record_files(results_dir: Path, papers: Sequence[str] | None = None) -> list[Path]:
    """The records of `papers` (default: all) under `results_dir`, canonical and failed, in path
    order (ad-hoc and replaced records are not published)."""
    results_dir = Path(results_dir)
    slugs = (
        papers or sorted(d.name for d in results_dir.iterdir() if d.is_dir()) if results_dir.is_dir() else []
    )
    return [p for slug in slugs for p in sorted((results_dir / slug).glob("*/*/seed*.json"))]


def import_records(
    uri: str, results_dir: Path, papers: Sequence[str] | None = None, root: Path | None = None
) -> tuple[int, int]:
    """Import every record of `papers` into the store at `uri`; returns (imported, already there).
    A record that does not parse raises ConfigError naming it (nothing after it is imported)."""
    from mlflow.entities import Metric, Param, RunTag

    root = Path(root or Path(results_dir).parent)
    mlflow_client = tracking.client(uri)
    tracking.ensure_store(uri)
    new = seen = 0
    for path in record_files(results_dir, papers):
        text = path.read_text()
        try:
            rec = records.read_record(path)
        except ValueError as exc:
            raise ConfigError(f"{path}: not a valid run record ({exc})") from None
        if records.record_problem(rec) is not None:
            keys, what = records.record_problem(rec)
            raise ConfigError(f"{path}: run record: {'.'.join(keys)}: {what}")
        digest = hashlib.sha256(text.encode()).hexdigest()
        experiment = str(rec.get("paper") or path.parts[-4])
        exp_id = tracking.ensure_experiment(mlflow_client, uri, experiment)
        found = tracking.retry(
            mlflow_client.search_runs,
            [exp_id],
            filter_string=f"tags.record_sha256 = '{digest}'",
            max_results=1,
        )
        if found:
            seen += 1
            continue
        _import_one(mlflow_client, exp_id, rec, path, root, digest, Metric, Param, RunTag)
        new += 1
    return new, seen


def _millis(iso: Any) -> int | None:
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp() * 1000)
    except ValueError:
        return None


def _import_one(mlflow_client, exp_id, rec, path, root, digest, Metric, Param, RunTag) -> str:
    prov = rec.get("provenance") or {}
    start = _millis(prov.get("started")) or int(time.time() * 1000)
    wall = float(prov.get("wall_time_s") or 0.0)
    try:
        shown_path = path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        shown_path = str(path)
    tags = {
        "paper": rec.get("paper"),
        "arm": rec.get("arm"),
        "seed": rec.get("seed"),
        "scale": rec.get("scale"),
        "git_sha": prov.get("git_sha"),
        "git_dirty": str(prov.get("git_dirty")).lower(),
        "config_hash": rec.get("config_hash"),
        "canonical": str(not rec.get("overrides")).lower(),
        "record": shown_path,
        "record_sha256": digest,
        "source_run_id": rec.get("run_id"),
        "imported": "true",
        "mlflow.source.git.commit": prov.get("git_sha"),
        "failure_reason": rec.get("failure_reason"),
    }
    tags = {k: str(v)[: tracking.MAX_TAG_VALUE] for k, v in tags.items() if v is not None}
    run = tracking.retry(
        mlflow_client.create_run,
        exp_id,
        start_time=start,
        run_name=f"{rec.get('arm') or 'adhoc'}-s{rec.get('seed')}",
    )
    run_id = run.info.run_id
    batch = tracking.MAX_TAGS_PER_BATCH
    tag_items = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, len(tag_items), batch):
        tracking.retry(mlflow_client.log_batch, run_id, tags=tag_items[i : i + batch])
    params = [
        Param(k, str(v)[: tracking.MAX_PARAM_VALUE])
        for k, v in tracking.flatten(rec.get("config") or {}).items()
    ]
    for i in range(0, len(params), tracking.MAX_PARAMS_PER_BATCH):
        tracking.retry(mlflow_client.log_batch, run_id, params=params[i : i + tracking.MAX_PARAMS_PER_BATCH])
    metrics = []
    last_step = 0
    for name, points in (rec.get("curves") or {}).items():
        for step, value in points:
            if value is None:
                continue
            metrics.append(Metric(name, float(value), start + int(step), int(step)))
            last_step = max(last_step, int(step))
    for name, value in (rec.get("final") or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics.append(Metric(f"final/{name}", float(value), start + int(wall * 1000), last_step))
    for i in range(0, len(metrics), tracking.MAX_METRICS_PER_BATCH):
        tracking.retry(
            mlflow_client.log_batch, run_id, metrics=metrics[i : i + tracking.MAX_METRICS_PER_BATCH]
        )
    tracking.retry(mlflow_client.log_text, run_id, records.dumps(rec), "record.json")
    from repro.tables.figures import run_curves_figure

    with tempfile.TemporaryDirectory(prefix="repro-import-") as tmp:
        title = f"{rec.get('paper')}/{rec.get('arm')} seed {rec.get('seed')} ({rec.get('scale')})"
        figure = run_curves_figure(rec.get("curves") or {}, title, Path(tmp) / "curves.png")
        if figure is not None:
            tracking.retry(mlflow_client.log_artifact, run_id, str(figure))
    status = rec.get("status") if rec.get("status") in records.STATUSES else "FAILED"
    tracking.retry(mlflow_client.set_terminated, run_id, status, end_time=start + int(wall * 1000))
    return run_id
