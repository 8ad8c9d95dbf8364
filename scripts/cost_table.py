"""Paper-scale cost estimates: GPU-hours and memory per arm, from each arm's scale=paper config.

    python scripts/cost_table.py            # print the table (markdown)
    python scripts/cost_table.py --readme   # rewrite the block between the README's cost markers

ESTIMATES, not measurements: no GPU was available when this was written. The arithmetic:
1. Tokens from the config: prompts x samples x (prompt + completion) per step, completion =
   max_new_tokens (an upper bound), prompt = PROMPT_TOKENS; evaluations as the trainer runs them.
2. FLOPs: 2N per token forward (generation, teacher forcing, scoring choices), 6N per trained
   token (forward + backward), 4N with LoRA (no weight gradients of the frozen base).
3. Rates measured on this CPU (STACK-NOTES, SmolLM2-135M fp32 on 2 threads) check the FLOP model
   on what we can measure: an AdamW step on 8x256 tokens in ~20 s is 6N x 2048 / 20 s = 83 GFLOP/s,
   within the 54-100 GFLOP/s the machine's matmuls reach; greedy generation at ~48 tok/s (batch
   8) is 2N x 48 = 13 GFLOP/s: decoding runs ~6x below training's rate.
4. GPU rates are ASSUMED (ours): H100/H200-class bf16 dense peak 989 TFLOP/s at GPU_TRAIN_MFU for
   training and GPU_GEN_MFU for vLLM decoding (decoding is memory-bound: the measured CPU ratio
   above). scripts/gpu_check.sh measures both on a real GPU; replace these when it has run.
5. Memory: fp32 weights + grads + AdamW moments (16 bytes/param; LoRA: 4 bytes/param frozen base)
   + the vLLM engine's bf16 copy (2 bytes/param); activations and KV cache come on top.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# Parameter counts of the paper-scale models (with embeddings).
PARAMS = {
    "qwen3_0_6b_base": 0.60e9,  # Qwen3 technical report (2025), Table 1: 0.6B
    "qwen2_5_math_7b": 7.6e9,  # Qwen2.5 technical report (2024): 7.61B for the 7B architecture
    "qwen2_5_1_5b_base": 1.54e9,  # Qwen2.5 technical report (2024): 1.54B for the 1.5B architecture
}
PROMPT_TOKENS = 120  # ours: a GSM8K "Question: ...\nAnswer:" prompt, ~100-150 tokens
SFT_TARGET_TOKENS = 130  # ours: a GSM8K solution
MMLU_TOKENS, TQA_TOKENS, TQA_CHOICES = 100, 600, 8  # ours: a 4-choice MMLU item; TruthfulQA with primer
PEAK_FLOPS = 989e12  # H100 SXM bf16 dense (NVIDIA datasheet); H200 has the same compute
GPU_TRAIN_MFU = 0.20  # ASSUMED (ours): small models and batches stay far from peak
GPU_GEN_MFU = 0.03  # ASSUMED (ours): decoding ~6x below training (the CPU ratio measured above)
GPU_MEMORY_GB = {"H100 80 GB": 80, "H200 141 GB": 141}
MARK = re.compile(r"(<!-- costs:begin[^>]*-->\n)(.*?)(<!-- costs:end -->)", re.S)


def arm_cost(cfg) -> dict:
    """FLOPs (training, generation+scoring), optimiser steps and memory of one run of `cfg`."""
    N = PARAMS[cfg.model.name]
    t, task = cfg.trainer, cfg.task
    lora = t.get("lora") is not None
    per_trained = (4 if lora else 6) * N
    gen = train = 0.0
    if t.name == "grpo":
        steps = t.steps
        seq = t.prompts_per_step * t.group_size * (PROMPT_TOKENS + t.max_new_tokens)
        gen += steps * 2 * N * seq  # sampling (vLLM)
        train += steps * (2 * N * seq + t.epochs * per_trained * seq)  # old log-probs + updates
    elif t.name == "sft":
        steps = t.epochs * math.ceil(t.n_examples / t.batch_size)
        train += steps * per_trained * t.batch_size * (PROMPT_TOKENS + SFT_TARGET_TOKENS)
    elif t.name in ("opd", "offline_distill"):
        steps = t.steps
        rollout = t.prompts_per_step * (PROMPT_TOKENS + t.max_new_tokens)
        cont = t.prompts_per_step * (PROMPT_TOKENS + t.max_new_tokens // 2 + t.continuation_tokens)
        gen += steps * 2 * N * (rollout + cont)  # student rollouts + teacher continuations
        train += steps * per_trained * (cont if t.name == "opd" else rollout)
    else:  # eval_only
        steps = 0
    evals = 1 + (steps // t.eval_every if t.get("eval_every") and steps else 0)
    per_eval = (
        2
        * N
        * (
            2 * t.eval_n * (PROMPT_TOKENS + t.max_new_tokens)  # greedy + sampled target accuracy
            + task.mmlu_n * 4 * MMLU_TOKENS
            + task.truthfulqa_n * TQA_CHOICES * TQA_TOKENS
            + t.drift_n * (PROMPT_TOKENS + t.max_new_tokens)
        )
    )
    gen += evals * per_eval
    hours = (train / (GPU_TRAIN_MFU * PEAK_FLOPS) + gen / (GPU_GEN_MFU * PEAK_FLOPS)) / 3600
    memory = N * ((4 if lora else 16) + 2) / 1e9
    return {
        "steps": steps,
        "train_pflop": train / 1e15,
        "gen_pflop": gen / 1e15,
        "gpu_h": hours,
        "mem_gb": memory,
    }


def rows() -> list[dict]:
    from hydra_helpers import compose

    from repro.config import load_suite, package_arms, packages

    out = []
    for paper in packages(ROOT):
        suite = load_suite(ROOT, paper)
        for arm in package_arms(ROOT, paper):
            cfg = compose(f"experiment={paper}/{arm}", "scale=paper", validate=False)
            out.append({"paper": paper, "arm": arm, "model": cfg.model.name, "trainer": cfg.trainer.name,
                        "seeds": len(suite.seeds) if arm in suite.arms else 0, **arm_cost(cfg)})  # fmt: skip
    return out


def fits(mem_gb: float) -> str:
    ok = [name for name, gb in GPU_MEMORY_GB.items() if mem_gb * 1.3 < gb]  # ours: 30% for activations/KV
    return ok[0] if ok else "no: shard (verl FSDP)"


def table() -> str:
    lines = [
        "| paper | arm | model | trainer | steps | train PFLOP | gen+eval PFLOP | GPU-h per run (est.) "
        "| runs (suite) | GPU-h suite (est.) | weights+optimiser+vLLM GB | one GPU? |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    total: dict[str, float] = {}
    for r in rows():
        suite_h = r["gpu_h"] * r["seeds"]
        total[r["paper"]] = total.get(r["paper"], 0.0) + suite_h
        lines.append(
            f"| {r['paper']} | `{r['arm']}` | {r['model']} | {r['trainer']} | {r['steps']} "
            f"| {r['train_pflop']:.1f} | {r['gen_pflop']:.1f} | {r['gpu_h']:.2f} | {r['seeds']} "
            f"| {suite_h:.1f} | {r['mem_gb']:.0f} | {fits(r['mem_gb'])} |"
        )
    lines.append("")
    lines += [f"- `{p}` suite: ~{h:.0f} GPU-hours (estimate)" for p, h in total.items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readme", action="store_true", help="rewrite the README's cost block")
    args = p.parse_args()
    text = table()
    if args.readme:
        readme = ROOT / "README.md"
        old = readme.read_text()
        if not MARK.search(old):
            raise SystemExit("README.md has no <!-- costs:begin --> ... <!-- costs:end --> block")
        readme.write_text(MARK.sub(lambda m: m.group(1) + text + m.group(3), old))
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
