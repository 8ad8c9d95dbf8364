"""scale=small (two SmolLM2 peers: full and LoRA) and scale=paper (four Qwen2.5 peers) of the ftis
arms run 1-2 steps on the gsm8k task, with every peer's model swapped for a tiny saved HF Llama
(byte-level tokenizer) and fixture data. The package's scale file sets the peers and step sizes
after command-line overrides, so the sizes are shrunk on the composed config."""

from __future__ import annotations

import math

import pytest
from hydra_helpers import compose, train

TINY = [
    "trainer.eval_n=2",
    "trainer.drift_n=2",
    "trainer.max_new_tokens=6",
    "trainer.threads=1",
    "task.mmlu_n=2",
    "task.truthfulqa_n=1",
    "task.truthfulqa_primer=false",
    "tracking.record=false",
]
PAPER_MODELS = ("Qwen2.5-1.5B", "Qwen2.5-3B", "Qwen2.5-Coder-1.5B", "Qwen2.5-Coder-3B")


def shrink(cfg, steps: int):
    t = cfg.trainer
    t.steps, t.prompts_per_step, t.group_size, t.microbatch, t.eval_every = steps, 1, 2, 1, 1
    return cfg


def check(final, curves, peers, steps):
    for p in peers:
        assert 0.0 <= final[f"peer/{p}/eval/id/greedy_acc"] <= 1.0
        assert 0.0 <= final[f"peer/{p}/eval/retention/mmlu_acc"] <= 1.0
        assert [s for s, _ in curves[f"peer/{p}/eval/id/greedy_acc"]] == list(range(steps + 1))
        assert all(math.isfinite(v) for _, v in curves[f"peer/{p}/train/loss"])
    assert "eval/ood/greedy_acc" not in final  # gsm8k has one eval split (no MATH-500 yet)


@pytest.mark.parametrize("arm", ["f_tis", "alone"])
def test_small_scale_full_and_lora_smollm2_peers(arm, tiny_hf_dir, task_root):
    cfg = compose(
        f"experiment=ftis/{arm}",
        "scale=small",
        "model=hf",
        f"model.path={tiny_hf_dir}",
        f"task.data_dir={task_root}",
        *TINY,
    )
    assert [(p.name, p.lora is None) for p in cfg.trainer.peers] == [("full", True), ("lora", False)]
    assert cfg.task.kind == "gsm8k" and cfg.trainer.rollout == "hf"
    final, curves = train(shrink(cfg, 2))
    check(final, curves, ["full", "lora"], 2)


def test_paper_scale_four_qwen_peers_from_a_local_models_dir(tiny_hf_dir, task_root, tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    for name in PAPER_MODELS:
        (models / name).symlink_to(tiny_hf_dir, target_is_directory=True)
    monkeypatch.setenv("REPRO_MODELS_DIR", str(models))
    cfg = compose("experiment=ftis/f_tis", "scale=paper", f"task.data_dir={task_root}", *TINY)
    t = cfg.trainer
    assert (t.steps, t.group_size, t.prompts_per_step, t.lr) == (50, 12, 16, 1e-6)  # ftis.md "Setup"
    assert [p.model.path for p in t.peers] == [str(models / n) for n in PAPER_MODELS]
    final, curves = train(shrink(cfg, 1))
    check(final, curves, ["q15_base", "q3_base", "q15_coder", "q3_coder"], 1)
