"""On-policy distillation, "opd" (eq. 7: E_{s~d^{pi_S}} D(pi_T(.|s) || pi_S(.|s))).

Reads top to bottom as the algorithm:
    the student samples its own rollouts on train prompts         (states from the learner)
    loss = continuation (the working OPD, DAgger-style):
        cut each rollout at a random prefix -> the teacher writes `continuation_tokens` greedily
        from that student prefix -> the student takes cross-entropy on the teacher's tokens
    loss = forward_kl | reverse_kl (one-step next-token OPD, which collapsed in the paper):
        full-vocabulary KL between teacher and student at every position of the student's sample
    -> aggregate -> step -> periodic eval (target, retention, forgetting, drift of its own states)
    until `steps`, or until `supervised_tokens` loss-bearing tokens (null: every step), to match a
    budget in tokens across trainers (train/supervised_tokens, cumulative)

Its off-policy control, whose states come from the teacher, is repro/trainers/offline_distill.py.
The teacher is `trainer.teacher` (repro.trainers.common.load_teacher): a checkpoint dir (e.g. an
sft run's, see repro.trainers.common.checkpoint_dir), a model config ({kind: hf, path: ...}), or
null for the student's own starting model (teacher == student: every KL is zero, a sanity check).
The continuation path hands the teacher the student prefix as text; that round trip is exact for
the micro world's word-level tokenizer and for byte-level BPE up to re-tokenisation of the joined text.

Run:  PYTHONPATH=. REPRO_ROOT=. repro run trainer=opd trainer.teacher=<sft checkpoint dir>
"""

from __future__ import annotations

import math
import time

import torch
from omegaconf import DictConfig

from repro.algos import AGGREGATIONS, DISTILL_LOSSES
from repro.algos.distill import is_kl
from repro.eval.micro import HeldOut
from repro.models import load_policy
from repro.rollout import Rollout, make_backend, sequence_logits, token_logp
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
    streams = seed_run(cfg)  # named streams: prompts, rollout noise, cut points (per step)

    model, tok = load_policy(cfg)
    task = build_task(cfg.task, tok)
    backend = make_backend(t.rollout, tok, task.stop_strings)  # trainer.rollout: engine | hf | vllm
    teacher = load_teacher(cfg, tok)
    # Adapters first (LoRA starts as the identity): the base model's states are then sampled through
    # the same rollout path as the policy's later ones (the engine hands peft models to
    # transformers.generate), so that an unchanged policy shows no drift.
    model = with_lora(model, t.lora, streams.seed_of("init"))
    held = HeldOut.build(cfg, task, model, tok, backend)  # base model's states and scores

    model.train()
    opt = optimizer(model, t)
    start = weight_snapshot(model)  # for train/delta_norm

    # Drift of the training states = of the student's own states, re-rolled at each evaluation.
    last_eval = held.evaluate(model, 0, train_states=None)
    log(last_eval, 0)
    t0, supervised, step = time.time(), 0, 0  # supervised: loss-bearing tokens so far
    for step in range(1, t.steps + 1):
        prompts = [p.prompt for p in task.sample_problems(streams.rng("prompts", step), t.prompts_per_step)]
        # 1. The student samples its own rollouts: the states s ~ d^{pi_S} of eq. 7.
        roll = backend.generate(
            model,
            prompts,
            n=1,
            max_new_tokens=t.max_new_tokens,
            temperature=t.temperature,
            generator=streams.gen("rollout", step),
        )
        lens = roll.completion_mask.sum(1)  # (B,)
        metrics = {"rollout/len_mean": lens.float().mean().item()}
        if is_kl(t.loss):
            # 2a. One-step OPD: match the teacher's next-token distribution at each sampled position.
            logits = sequence_logits(model, roll)  # (B, T, V)
            with torch.no_grad():
                teacher_logits = sequence_logits(teacher, roll)  # (B, T, V)
            mask = cap_supervised(roll.completion_mask, supervised, t.supervised_tokens)  # (B, T)
            loss_mat = DISTILL_LOSSES[t.loss](logits, teacher_logits, mask)  # (B, T)
        else:
            # 2b. Continuation OPD: cut at a random prefix (eos excluded); the teacher continues greedily.
            cut_rng = streams.rng("cuts", step)
            cuts = [cut_rng.randrange(max(1, int(n))) for n in lens.tolist()]
            states = student_prefixes(tok, prompts, roll, cuts)
            cont = backend.generate(teacher, states, n=1, max_new_tokens=t.continuation_tokens, greedy=True)
            # 3. The student takes cross-entropy on the teacher's continuation of its own prefix.
            logp = token_logp(sequence_logits(model, cont), cont.completion_ids)  # (B, T)
            mask = cap_supervised(cont.completion_mask, supervised, t.supervised_tokens)  # (B, T)
            loss_mat = DISTILL_LOSSES["continuation"](logp, mask)  # (B, T)
            metrics["train/prefix_len_mean"] = sum(cuts) / len(cuts)
        loss = AGGREGATIONS[cfg.agg.name](loss_mat, mask, **cfg.agg.kw)
        supervised += int(mask.sum())
        metrics["train/supervised_tokens"] = float(supervised)
        metrics["train/grad_norm"] = optimizer_step(model, opt, loss, t, step)
        metrics["train/loss"] = loss.item()
        log(metrics, step)
        spent = t.supervised_tokens is not None and supervised >= t.supervised_tokens
        if step % t.eval_every == 0 or step == t.steps or spent:
            last_eval = held.evaluate(model, step, train_states=None)
            log(last_eval, step)
        log.progress(step, t.steps, loss=metrics["train/loss"], acc=last_eval["eval/id/greedy_acc"])
        if spent:  # trainer.supervised_tokens reached: the token budget, not the steps, ends the run
            break

    final = dict(last_eval)
    final["train/supervised_tokens"] = float(supervised)
    final["train/steps"] = float(step)
    final["train/final_loss"] = metrics["train/loss"] if step else math.nan
    final["train/delta_norm"] = delta_norm(model, start)
    final["train/seconds"] = time.time() - t0
    if t.save:
        save_checkpoint(cfg, model, tok, held.reference())  # later stages measure against its origin
    return final


def student_prefixes(tok, prompts: list[str], roll: Rollout, cuts: list[int]) -> list[str]:
    """Each prompt followed by the first `cuts[i]` tokens of the student's completion, as text."""
    prefixes = [tok.decode(roll.completion_ids[i, :k], skip_special_tokens=True) for i, k in enumerate(cuts)]
    # Word-level decoding has no leading space (join with one); byte-level BPE keeps it (concatenate).
    return [p + y if not y or y[0].isspace() else f"{p} {y}" for p, y in zip(prompts, prefixes, strict=True)]


TRAINERS.register("opd")(TrainerSpec(train=train))
