"""`repro eval`: load one model by config, score it on benchmarks through lm-eval, and write
`<results_dir>/eval/<model>/<UTC time>.json` (metrics, example counts, config, provenance); with
`tracking.log` also one MLflow run (experiment `tracking.experiment`, default `eval`)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from repro import provenance, tracking
from repro.errors import ConfigError
from repro.eval.lm_eval_tasks import build_tasks, evaluate
from repro.models import load_policy


def model_name(cfg: DictConfig) -> str:
    """`model.name`, else the last part of `model.path`, else `model.kind`."""
    name = cfg.model.get("name") or Path(str(cfg.model.get("path") or cfg.model.kind)).name
    return str(name).replace("/", "_")


def run_eval(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict[str, Any], Path]:
    """Evaluate `cfg.model` on `cfg.tasks`; returns (record, path of the JSON written)."""
    tic = time.monotonic()
    tasks = list(cfg.tasks)
    if not tasks:
        raise ConfigError("tasks: empty; pick from gsm8k, mmlu, truthfulqa_mc1, truthfulqa_mc2")
    # Check the data files before loading (possibly downloading) a model.
    build_tasks(tasks, cfg.paths.data_dir, cfg.eval)
    if cfg.eval.get("threads"):
        torch.set_num_threads(int(cfg.eval.threads))
    model, tok = load_policy(cfg)
    model.eval()
    metrics, counts = evaluate(
        model, tok, tasks, cfg.paths.data_dir, cfg.eval, chat=bool(cfg.model.get("chat_template", False))
    )
    root = cfg.paths.root
    sha, dirty = provenance.git_state(root)
    record = {
        "model": model_name(cfg),
        "tasks": tasks,
        "metrics": {k: round(v, 6) for k, v in metrics.items()},
        "counts": counts,
        "wall_s": round(time.monotonic() - tic, 1),
        "overrides": list(overrides),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "git_sha": sha,
        "git_dirty": dirty,
        "versions": provenance.versions(),
    }
    if cfg.tracking.get("log"):
        run = tracking.Run(
            cfg.tracking.uri,
            cfg.tracking.experiment,
            run_name=record["model"],
            tags={
                "model": record["model"],
                "git_sha": sha,
                "git_dirty": str(dirty).lower(),
                "overrides": " ".join(overrides),
                "kind": "eval",
            },
        )
        run.log_params(tracking.flatten(record["config"]))
        run(metrics, step=0)
        run.end("FINISHED")
        record["mlflow_run_id"] = run.run_id
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = Path(cfg.paths.results_dir) / "eval" / record["model"] / f"{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    return record, path
