"""Offline (sequence-level) distillation, "offline_distill": the off-policy control for OPD.

Reads top to bottom as the algorithm:
    the teacher writes full greedy completions of the train prompts     (states from the teacher)
    -> the student takes cross-entropy on them (teacher forcing) -> aggregate -> step
    -> periodic eval (target, retention, forgetting, drift of the teacher's states)
    until `steps`, or until `supervised_tokens` loss-bearing tokens (null: every step), so that it
    can match OPD on supervised tokens rather than on prompts (train/supervised_tokens, cumulative)

Sequence-level KD (Kim & Rush 2016) with the same loss, steps and prompts per step as
repro/trainers/opd.py: only whose states the student learns on differs. The teacher is
`trainer.teacher`, as for opd (repro.trainers.common.load_teacher).

Run:  PYTHONPATH=. REPRO_ROOT=. repro run trainer=offline_distill trainer.teacher=<sft checkpoint dir>
"""

from __future__ import annotations

import math
import time

from omegaconf import DictConfig

from repro.algos import AGGREGATIONS, DISTILL_LOSSES
from repro.eval.micro import HeldOut, states_of
from repro.models import load_policy
from repro.rollout import make_backend, sequence_logits, token_logp, truncated
from repro.tasks import build_task
from repro.trainers.base import TRAINERS, Logger, TrainerSpec
from repro.trainers.common import (
    cap_supervised,
    delta_norm,
    load_teacher,
    optimizer,
    optimizer_step,
    save_checkpoint,
    seed_run,
    weight_snapshot,
    with_lora,
)


def train(cfg: DictConfig, log: Logger) -> dict[str, float]:
    t = cfg.trainer
    streams = seed_run(cfg)  # streams.rng("prompts", step): train prompts

    model, tok = load_policy(cfg)
    task = build_task(cfg.task, tok)
    backend = make_backend(t.rollout, tok, task.stop_strings)  # trainer.rollout: engine | hf | vllm
    teacher = load_teacher(cfg, tok)
    # Adapters first (LoRA starts as the identity): the base model's states are then sampled through
    # the same rollout path as the policy's later ones (the engine hands peft models to
    # transformers.generate), so that an unchanged policy shows no drift.
    model = with_lora(model, t.lora, streams.seed_of("init"))
    held = HeldOut.build(cfg, task, model, tok, backend)  # base model's states and scores
    # The states it trains on are the teacher's: its greedy completions of the fixed drift prompts.
    roll = backend.generate(teacher, held.drift_prompts, n=1, max_new_tokens=t.max_new_tokens, greedy=True)
    train_states = states_of(held.drift_prompts, roll.texts, t.drift_every)

    model.train()
    opt = optimizer(model, t)
    start = weight_snapshot(model)  # for train/delta_norm

    last_eval = held.evaluate(model, 0, train_states)
    log(last_eval, 0)
    t0, supervised, step = time.time(), 0, 0  # supervised: loss-bearing tokens so far
    eos, cut = tok.eos_token_id, []  # cut: per-step share of teacher completions cut by the budget
    for step in range(1, t.steps + 1):
        prompts = [p.prompt for p in task.sample_problems(streams.rng("prompts", step), t.prompts_per_step)]
        # 1. The teacher writes full greedy completions of the prompts: the sequence-level KD targets.
        roll = backend.generate(teacher, prompts, n=1, max_new_tokens=t.max_new_tokens, greedy=True)
        lens = roll.completion_mask.sum(1)  # (B,)
        # Teacher completions the budget cut before EOS: the student would learn cut answers (gate <= 1%).
        cut.append(truncated(roll.completion_ids, lens, t.max_new_tokens, eos).mean().item())
        # 2. The student takes cross-entropy on them, teacher forcing on the teacher's states.
        logp = token_logp(sequence_logits(model, roll), roll.completion_ids)  # (B, T)
        mask = cap_supervised(roll.completion_mask, supervised, t.supervised_tokens)  # (B, T)
        metrics = {"rollout/len_mean": lens.float().mean().item(), "train/teacher_truncated_frac": cut[-1]}
        loss_mat = DISTILL_LOSSES["continuation"](logp, mask)  # (B, T)
        loss = AGGREGATIONS[cfg.agg.name](loss_mat, mask, **cfg.agg.kw)
        supervised += int(mask.sum())
        metrics["train/supervised_tokens"] = float(supervised)
        metrics["train/grad_norm"] = optimizer_step(model, opt, loss, t, step)
        metrics["train/loss"] = loss.item()
        log(metrics, step)
        spent = t.supervised_tokens is not None and supervised >= t.supervised_tokens
        if step % t.eval_every == 0 or step == t.steps or spent:
            last_eval = held.evaluate(model, step, train_states)
            log(last_eval, step)
        log.progress(step, t.steps, loss=metrics["train/loss"], acc=last_eval["eval/id/greedy_acc"])
        if spent:  # trainer.supervised_tokens reached: the token budget, not the steps, ends the run
            break

    final = dict(last_eval)
    final["train/supervised_tokens"] = float(supervised)
    final["train/steps"] = float(step)
    # Over the whole run (every step's prompts weigh the same): the gate's share.
    final["train/teacher_truncated_frac"] = sum(cut) / len(cut) if cut else math.nan
    final["train/final_loss"] = metrics["train/loss"] if step else math.nan
    final["train/delta_norm"] = delta_norm(model, start)
    final["train/seconds"] = time.time() - t0
    if t.save:
        save_checkpoint(cfg, model, tok, held.reference())  # later stages measure against its origin
    return final


TRAINERS.register("offline_distill")(TrainerSpec(train=train))
