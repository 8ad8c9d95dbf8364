"""The rollout engine on a GPU (issue 9: "it must also run on CUDA when a model is on a GPU").

Needs only torch and transformers (no Hydra, MLflow or vLLM), so it runs on a bare CUDA machine:

    python scripts/gpu_engine_check.py --out gpu_engine.json

For each model (the shipped micro base 0, and a randomly initialised Llama of SmolLM2-135M's shape
on the micro tokenizer), on CUDA in float32 (TF32 off) and, for the 135M shape, bfloat16:
  - greedy: engine tokens vs the HF backend's (`transformers.generate`), share of identical rows;
  - sampled: the engine's sampler log-probs vs teacher-forced log-probs of the same tokens;
  - speed: a 128 x 40 rollout (16 prompts x 8 samples), engine vs HF backend, median of 5.
Writes one JSON report and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from repro.engine import EngineBackend  # noqa: E402
from repro.rollout import HFGenerateBackend, sequence_logits, token_logp  # noqa: E402
from repro.tasks.arith import ArithWorld  # noqa: E402

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")  # "cpu": a quick dry run of this script
SMOLLM2_135M = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
)


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn, reps: int = 5) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def check(name: str, model, tok, prompts: list[str], dtype: torch.dtype) -> dict:
    model = model.to(DEVICE, dtype=dtype).eval()
    eng, hf = EngineBackend(tok), HFGenerateBackend(tok)
    out: dict = {
        "model": name,
        "dtype": str(dtype).removeprefix("torch."),
        "lean": eng.lean(model) is not None,
    }
    kw = dict(n=1, max_new_tokens=40, greedy=True)
    a, b = eng.generate(model, prompts, **kw), hf.generate(model, prompts, **kw)
    T = min(a.completion_ids.shape[1], b.completion_ids.shape[1])
    same = (a.completion_ids[:, :T] == b.completion_ids[:, :T]).all(1)
    out["greedy_rows_identical"] = f"{int(same.sum())}/{len(prompts)}"
    roll = eng.generate(model, prompts[:16], n=8, max_new_tokens=40, temperature=1.0, seed=0)
    with torch.no_grad():
        tf = token_logp(sequence_logits(model, roll).float(), roll.completion_ids)
    m = roll.completion_mask
    out["sampler_vs_teacher_logp_max_abs"] = float((tf - roll.sampler_logp.float()).abs()[m].max())
    out["sampled_tokens"] = int(m.sum())
    g = torch.Generator().manual_seed(1)
    r1 = eng.generate(model, prompts[:16], n=8, max_new_tokens=40, temperature=1.0, generator=g)
    g = torch.Generator().manual_seed(1)
    r2 = eng.generate(model, prompts[:16], n=8, max_new_tokens=40, temperature=1.0, generator=g)
    out["same_generator_same_samples"] = bool(torch.equal(r1.completion_ids, r2.completion_ids))
    sample = dict(n=8, max_new_tokens=40, temperature=1.0)
    t_eng = timed(lambda: eng.generate(model, prompts[:16], **sample))
    t_hf = timed(lambda: hf.generate(model, prompts[:16], **sample))
    out |= {"rollout_128x40_engine_s": t_eng, "rollout_128x40_hf_s": t_hf, "hf_over_engine": t_hf / t_eng}
    big = [p for p in prompts for _ in range(4)][:256]  # 256 prompts x 8 = 2048 rows
    t_eng = timed(lambda: eng.generate(model, big, **sample), reps=3)
    t_hf = timed(lambda: hf.generate(model, big, **sample), reps=3)
    out |= {
        "rollout_2048x40_engine_s": t_eng,
        "rollout_2048x40_hf_s": t_hf,
        "hf_over_engine_2048": t_hf / t_eng,
    }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="gpu_engine.json")
    ns = ap.parse_args()
    assert DEVICE != "cuda" or torch.cuda.is_available(), "no CUDA device"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    base = ROOT / "repro" / "bases" / "micro" / "base0"
    tok = AutoTokenizer.from_pretrained(base)
    tok.padding_side = "left"
    world = ArithWorld()
    prompts = [p.prompt for p in world.sample_problems(random.Random(0), 64)]
    report = {
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "checks": [],
    }
    micro = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    report["checks"].append(check("micro base0 (shipped)", micro, tok, prompts, torch.float32))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), max_position_embeddings=256, tie_word_embeddings=True, **SMOLLM2_135M
    )
    for dtype in (torch.float32, torch.bfloat16) if DEVICE == "cuda" else ():
        torch.manual_seed(0)
        big = LlamaForCausalLM(cfg)
        report["checks"].append(check("random Llama, SmolLM2-135M shape", big, tok, prompts, dtype))
    text = json.dumps(report, indent=1)
    print(text)
    Path(ns.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
