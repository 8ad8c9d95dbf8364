"""two_rewards_rlif's arms at scale=small and scale=paper, as `repro run` composes them (the paper's
scale files included), on GSM8K fixture data with the model swapped for a tiny saved HF Llama: 1 step."""

from __future__ import annotations

import math

import pytest
from hydra_helpers import compose, train
from omegaconf import OmegaConf

from tasks.test_real_scales import TINY

ARMS = ["supervised", "circa", "circa_clipcov", "summary_penalty"]


@pytest.mark.parametrize("scale", ["small", "paper"])
@pytest.mark.parametrize("arm", ARMS)
def test_arm_runs_one_step_on_gsm8k(arm, scale, tiny_hf_dir, task_root):
    cfg = compose(
        f"experiment=two_rewards_rlif/{arm}",
        f"scale={scale}",
        f"task.data_dir={task_root}",
        *TINY,
        "trainer.steps=1",
        "trainer.prompts_per_step=2",
        "trainer.minibatches=1",
    )
    # The paper's sizes, as composed (the scale file is merged after the arm; the command line wins).
    assert cfg.task.kind == "gsm8k" and cfg.trainer.group_size == 7
    assert (cfg.trainer.steps, cfg.trainer.prompts_per_step, cfg.trainer.minibatches) == (1, 2, 1)
    if scale == "paper":
        assert cfg.model.path == "Qwen/Qwen2.5-1.5B" and cfg.trainer.lr == 3.0e-6
        assert cfg.trainer.vote_samples == 7
        full = compose(f"experiment=two_rewards_rlif/{arm}", f"scale={scale}", f"task.data_dir={task_root}")
        assert (full.trainer.steps, full.trainer.prompts_per_step) == (340, 64)
    # The model and the sizes TINY does not cover: shrink them for a 1-step smoke test.
    cfg.model = OmegaConf.create({"kind": "hf", "path": str(tiny_hf_dir)})
    cfg.trainer.steps, cfg.trainer.prompts_per_step, cfg.trainer.minibatches = 1, 2, 1
    cfg.trainer.group_size, cfg.trainer.max_new_tokens = 3, 6
    cfg.trainer.vote_samples = 2 if scale == "paper" else 0
    final, curves = train(cfg)
    assert 0.0 <= final["eval/id/greedy_acc"] <= 1.0
    assert len(curves["train/reward_mean"]) == 1
    if scale == "paper":
        assert 0.0 <= final["eval/id/maj_acc"] <= 1.0
    for _, v in curves.get("train/loss", []):
        assert math.isfinite(v)
