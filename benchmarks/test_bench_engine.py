"""The rollout engine (repro/engine.py) against `transformers.generate`, and a full repro GRPO step
with the engine against TRL's GRPOTrainer on the same model, batch and settings.

Micro architecture (hidden 128, 4 layers, 4 heads, ~0.9M params), random weights so that every
completion runs to full length, 1 torch thread. Each comparison alternates its contenders in
blocks (the machine is shared) and prints the ratio of medians.

    nox -s bench -- -k engine      or
    pytest benchmarks/test_bench_engine.py --benchmark-only -s

The TRL comparison needs the `bench` extra (`pip install -e .[bench]`); it is skipped without trl.
"""

from __future__ import annotations

import copy
import random
import statistics
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from repro import config
from repro.engine import EngineBackend
from repro.models.micro import build_model, build_tokenizer
from repro.rollout import HFGenerateBackend, make_backend
from repro.streams import Streams
from repro.tasks.arith import ArithWorld
from repro.trainers.grpo import Learner, update

ROOT = Path(__file__).resolve().parents[1]
MICRO = dict(hidden=128, intermediate=384, layers=4, heads=4, max_len=96)
PROMPTS, GROUP, NEW_TOKENS, MINIBATCHES = 16, 8, 40, 4
BLOCKS = 5


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _report(benchmark, name_a: str, a: list[float], name_b: str, b: list[float]) -> None:
    ma, mb = statistics.median(a), statistics.median(b)
    line = f"{name_a} {ma:.3f} s vs {name_b} {mb:.3f} s (medians of {len(a)}): ratio {ma / mb:.2f}"
    print(f"\n{line}; {name_a} blocks {[round(x, 3) for x in a]}, {name_b} blocks {[round(x, 3) for x in b]}")
    benchmark.extra_info.update({name_a: a, name_b: b, "ratio": ma / mb})


@pytest.fixture(scope="module")
def micro():
    world = ArithWorld()
    tok = build_tokenizer(world.vocab_words())
    model = build_model(OmegaConf.create(MICRO), len(tok), 0)
    return world, tok, model


def test_rollout_engine_vs_generate(benchmark, micro):
    """Rollout 128 x 40 tokens (16 prompts x 8 samples): engine vs transformers.generate."""
    world, tok, model = micro
    torch.set_num_threads(1)
    prompts = [p.prompt for p in world.sample_problems(random.Random(0), PROMPTS)]
    hf, engine = HFGenerateBackend(tok), EngineBackend(tok)
    kw = dict(n=GROUP, max_new_tokens=NEW_TOKENS, temperature=1.0)
    engine.generate(model, prompts, seed=0, **kw)  # warm-up (weights fused once)
    hf.generate(model, prompts, seed=0, **kw)
    t_hf, t_engine = [], []
    for i in range(BLOCKS):
        t_hf.append(_timed(lambda i=i: hf.generate(model, prompts, seed=i, **kw)))
        t_engine.append(_timed(lambda i=i: engine.generate(model, prompts, seed=i, **kw)))
    roll = engine.generate(model, prompts, seed=0, **kw)
    assert roll.completion_ids.shape == (PROMPTS * GROUP, NEW_TOKENS)
    _report(benchmark, "generate", t_hf, "engine", t_engine)
    benchmark.pedantic(
        engine.generate, args=(model, prompts), kwargs=dict(seed=0, **kw), rounds=3, iterations=1
    )


def _repro_step(tmp_path, monkeypatch, model, tok):
    """(run one repro GRPO step, cfg): experiment grpo, engine rollouts, 16 x 8 x 40, 4 updates."""
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path))
    config.prepare_environment(ROOT)
    overrides = [
        "experiment=clipping_bottleneck/grpo",
        "trainer.rollout=engine",
        f"trainer.prompts_per_step={PROMPTS}",
        f"trainer.group_size={GROUP}",
        f"trainer.max_new_tokens={NEW_TOKENS}",
        f"trainer.minibatches={MINIBATCHES}",
        "trainer.dynamic_sampling=false",  # one generation round: a fixed amount of work
    ]
    with config.hydra_app() as hydra:
        cfg = config.compose(hydra, overrides)
    world = ArithWorld.from_cfg(cfg.task)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.trainer.lr, betas=(0.9, 0.99))
    learner = Learner(cfg, world, model, make_backend(cfg.trainer.rollout, tok, None), opt, Streams(0))
    state = {"step": 0}

    def step():
        state["step"] += 1
        return update(learner, state["step"])

    return step, cfg


def test_step_vs_trl(benchmark, micro, tmp_path, monkeypatch):
    """One GRPO step (rollout 16 x 8 x 40, old log-probs, 4 mini-batch updates): repro with the
    engine vs TRL's GRPOTrainer (4 optimizer steps = one generation, beta 0, same lr and epsilon),
    alternating: each TRL generation cycle is followed by one repro step."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import TrainerCallback

    world, tok, base = micro
    torch.set_num_threads(1)
    step, cfg = _repro_step(tmp_path, monkeypatch, copy.deepcopy(base), tok)
    t = cfg.trainer
    problems = world.sample_problems(random.Random(0), 256)
    data = Dataset.from_dict({"prompt": [p.prompt for p in problems], "answer": [p.answer for p in problems]})

    def reward(prompts, completions, answer, **_):
        return [float(world.verify(c, a)) for c, a in zip(completions, answer)]

    t_trl, t_repro = [], []

    class Alternate(TrainerCallback):
        """Times each generation cycle (steps_per_generation optimizer steps), then one repro step."""

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step % MINIBATCHES == 0:
                self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step % MINIBATCHES == 0:
                t_trl.append(time.perf_counter() - self.t0)
                t_repro.append(_timed(step))

    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        logging_steps=10_000,
        disable_tqdm=True,
        learning_rate=t.lr,
        adam_beta2=0.99,
        max_grad_norm=t.grad_clip,
        per_device_train_batch_size=PROMPTS * GROUP // MINIBATCHES,
        steps_per_generation=MINIBATCHES,
        num_generations=GROUP,
        max_completion_length=NEW_TOKENS,
        temperature=t.temperature,
        beta=0.0,
        epsilon=0.2,
        max_steps=MINIBATCHES * (BLOCKS + 1),
        seed=0,
    )
    trainer = trl.GRPOTrainer(
        model=copy.deepcopy(base),
        reward_funcs=reward,
        args=args,
        train_dataset=data,
        processing_class=tok,
        callbacks=[Alternate()],
    )
    trainer.train()
    t_trl, t_repro = t_trl[1:], t_repro[1:]  # the first block warms up both
    _report(benchmark, "repro_step", t_repro, "trl_step", t_trl)
    benchmark.pedantic(step, rounds=3, iterations=1)
