"""The base-model row: no training, one evaluation by the evaluator every trainer uses.

    load the model -> HeldOut (eval sets, the model's own states) -> evaluate at step 0 -> save

Retention and forgetting are those of the model against itself (R = 1, F = 0 by construction);
drift compares two identical samples of its own states, so drift/mmd2 is the estimator's value at
zero shift (unbiased: about 0, can be slightly negative). The model is saved like a trained one
(`trainer.save`, default true here), so a chained stage (repro.pipeline) can name the base arm
as its teacher or starting point.

Run:  repro run experiment=<paper>/<arm> (an arm with `override /trainer: eval_only`)
"""

from __future__ import annotations

import time

from omegaconf import DictConfig

from repro.eval.micro import HeldOut
from repro.models import load_policy
from repro.rollout import make_backend
from repro.tasks import build_task
from repro.trainers.base import TRAINERS, Logger, TrainerSpec
from repro.trainers.common import save_checkpoint, seed_run


def train(cfg: DictConfig, log: Logger) -> dict[str, float]:
    seed_run(cfg)
    t0 = time.time()
    model, tok = load_policy(cfg)
    model.eval()
    task = build_task(cfg.task, tok)
    held = HeldOut.build(cfg, task, model, tok, make_backend(cfg.trainer.rollout, tok, task.stop_strings))
    final = held.evaluate(model, 0, train_states=None)
    log(final, 0)
    if cfg.trainer.save:
        save_checkpoint(cfg, model, tok)
    return final | {"train/steps": 0.0, "train/seconds": time.time() - t0}


TRAINERS.register("eval_only")(TrainerSpec(train=train))
