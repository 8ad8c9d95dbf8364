"""One full micro GRPO-family step (rollout 16x8 -> reward -> advantage -> 4 mini-batch updates),
on the micro architecture with random weights (same compute per token as the pretrained model;
completions run to max length, so this is the step's upper bound).

    nox -s bench      or      pytest benchmarks/test_bench_step.py --benchmark-only
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from repro import config
from repro.models import load_policy
from repro.rollout import make_backend
from repro.streams import Streams
from repro.tasks.arith import ArithWorld
from repro.trainers.grpo import Learner, update

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("arm", ["dapo", "dapo_nsr", "gspo"])
def test_micro_step(benchmark, arm, tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path))
    config.prepare_environment(ROOT)
    overrides = [f"experiment=clipping_bottleneck/{arm}", "model.pretrain.steps=0"]
    overrides.append("trainer.dynamic_sampling=false")  # one generation round: a fixed amount of work
    with config.hydra_app() as hydra:
        cfg = config.compose(hydra, overrides)
    torch.set_num_threads(1)
    model, tok = load_policy(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.trainer.lr)
    world, backend = ArithWorld.from_cfg(cfg.task), make_backend(cfg.trainer.rollout, tok, None)
    learner = Learner(cfg, world, model, backend, opt, Streams(0))
    benchmark.pedantic(update, args=(learner, 1), rounds=3, iterations=1)
