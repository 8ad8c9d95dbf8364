"""The README's paper-scale cost block is what scripts/cost_table.py generates from the configs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cost_table():
    spec = importlib.util.spec_from_file_location("cost_table", ROOT / "scripts" / "cost_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_cost_block_is_generated_from_the_paper_scale_configs():
    ct = _cost_table()
    block = ct.MARK.search((ROOT / "README.md").read_text())
    assert block, "README.md lost its <!-- costs:begin --> block"
    assert block.group(2) == ct.table(), "stale: run `python scripts/cost_table.py --readme`"


def test_cost_model_counts_what_the_config_says():
    # One GRPO step of N params, P + T tokens per sample: sampling 2N, old log-probs 2N, update 6N.
    from omegaconf import OmegaConf

    ct = _cost_table()
    ct.PARAMS["m"] = 1e9
    cfg = OmegaConf.create(
        {
            "model": {"name": "m"},
            "task": {"mmlu_n": 0, "truthfulqa_n": 0},
            "trainer": {"name": "grpo", "steps": 1, "prompts_per_step": 2, "group_size": 3, "epochs": 1,
                        "max_new_tokens": 80, "eval_every": 10, "eval_n": 0, "drift_n": 0, "lora": None},
        }
    )  # fmt: skip
    tokens = 2 * 3 * (ct.PROMPT_TOKENS + 80)
    got = ct.arm_cost(cfg)
    assert got["gen_pflop"] * 1e15 == 2e9 * tokens
    assert got["train_pflop"] * 1e15 == (2e9 + 6e9) * tokens
    assert got["mem_gb"] == 18  # 16 B/param (fp32 weights, grads, AdamW) + 2 B/param vLLM copy
