"""Distillation trainers: on-policy distillation ("opd") and its off-policy control ("offline_distill").

opd (eq. 7, E_{s~d^{pi_S}} D(pi_T(.|s) || pi_S(.|s))), top to bottom:
    student samples its own rollouts on train prompts            (states from the learner)
    loss = continuation (the working OPD, DAgger-style):
        cut each rollout at a random prefix -> the teacher writes `continuation_tokens` greedily
        from that student prefix -> the student takes cross-entropy on the teacher's tokens
    loss = forward_kl | reverse_kl (one-step next-token OPD, which collapsed in the paper):
        full-vocabulary KL between teacher and student at every position of the student's sample
    -> aggregate -> step -> periodic eval (target, retention, forgetting, drift)

offline_distill: the teacher writes full greedy completions of the same prompts (same steps and
prompts per step), and the student takes cross-entropy on them: sequence-level KD (Kim & Rush
2016), whose states come from the teacher, not the student.

The teacher is `trainer.teacher`: a checkpoint dir (e.g. an sft run's, see
repro.trainers.common.checkpoint_dir), a model config ({kind: hf, path: ...}), or null for the
student's own starting model (teacher == student: every KL is zero, a sanity check). The
continuation path hands the teacher the student prefix as text; that round trip is exact for the
micro world's word-level tokenizer and for byte-level BPE up to re-tokenisation of the joined text.

Run:  PYTHONPATH=. REPRO_ROOT=. repro run trainer=opd trainer.teacher=<sft checkpoint dir>
      PYTHONPATH=. REPRO_ROOT=. repro run trainer=offline_distill trainer.teacher=<same dir>
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from repro.algos import AGGREGATIONS, DISTILL_LOSSES
from repro.algos.distill import is_kl
from repro.errors import ConfigError
from repro.models import load_policy
from repro.models.micro import load_checkpoint
from repro.registry import UnknownNameError
from repro.rollout import HFGenerateBackend, sequence_logits, token_logp
from repro.tasks import build_task
from repro.trainers.base import TRAINERS, Logger, TrainerSpec
from repro.trainers.common import (
    HeldOut,
    need,
    optimizer,
    optimizer_step,
    seed_all,
    states_of,
    validate_common,
    validate_lora,
    with_lora,
)


def validate(cfg: DictConfig) -> None:
    """Cheap checks of every key the trainers use; raises ConfigError naming the key."""
    t = cfg.trainer
    validate_common(t)
    need(t, "steps", t.steps >= 0, "must be >= 0")
    need(t, "prompts_per_step", t.prompts_per_step >= 1, "must be >= 1")
    need(t, "temperature", t.temperature > 0, "must be > 0")
    if t.name == "opd":
        need(t, "continuation_tokens", t.continuation_tokens >= 1, "must be >= 1")
        try:
            DISTILL_LOSSES[t.loss]
        except UnknownNameError as e:
            raise ConfigError(f"trainer.loss: {e}") from None
    teacher = t.teacher
    pending = "teacher" in (OmegaConf.select(cfg, "stages") or {})  # repro.pipeline trains it first
    if isinstance(teacher, str) and not pending and not (Path(teacher) / "config.json").exists():
        raise ConfigError(f"trainer.teacher: no checkpoint (config.json) in {teacher!r}")
    if teacher is not None and not isinstance(teacher, str) and "kind" not in teacher:
        raise ConfigError(
            f"trainer.teacher must be null, a checkpoint dir or a model config, got {teacher!r}"
        )
    validate_lora(t)
    build_task(cfg.task)


def load_teacher(cfg: DictConfig, tok):
    """The frozen teacher named by `trainer.teacher`; its vocabulary must be the student's."""
    spec = cfg.trainer.teacher
    if spec is None:
        teacher, t_tok = load_policy(cfg)
    elif isinstance(spec, str):
        teacher, t_tok = load_checkpoint(spec)
    else:
        c = cfg.copy()
        with open_dict(c):
            c.model = OmegaConf.create(OmegaConf.to_container(spec, resolve=True))
        teacher, t_tok = load_policy(c)
    if t_tok.get_vocab() != tok.get_vocab():
        raise ConfigError("trainer.teacher: its tokenizer differs from the student's")
    teacher.eval().requires_grad_(False)
    return teacher


def train(cfg: DictConfig, log: Logger) -> dict[str, float]:
    validate(cfg)
    t = cfg.trainer
    torch.set_num_threads(t.threads)
    rng, _ = seed_all(cfg.seed)  # rng: train prompts and cut points

    model, tok = load_policy(cfg)
    task = build_task(cfg.task, tok)
    backend = HFGenerateBackend(tok, stop_strings=task.stop_strings)
    teacher = load_teacher(cfg, tok)
    held = HeldOut.build(cfg, task, model, tok, backend)  # base model's states and scores
    if t.name == "opd":
        train_states = None  # the student's own states, re-rolled at each evaluation
    else:
        roll = backend.generate(
            teacher, held.drift_prompts, n=1, max_new_tokens=t.max_new_tokens, greedy=True
        )
        train_states = states_of(held.drift_prompts, roll.texts, t.drift_every)

    model = with_lora(model, t.lora)
    model.train()
    opt = optimizer(model, t)
    update = opd_update if t.name == "opd" else offline_update

    last_eval = held.evaluate(model, 0, train_states)
    log(last_eval, 0)
    t0 = time.time()
    for step in range(1, t.steps + 1):
        prompts = [p.prompt for p in task.sample_problems(rng, t.prompts_per_step)]
        loss_mat, mask, metrics = update(cfg, model, teacher, backend, prompts, rng)  # (B, T) x2
        loss = AGGREGATIONS[cfg.agg.name](loss_mat, mask, **cfg.agg.kw)
        metrics["train/grad_norm"] = optimizer_step(model, opt, loss, t, step)
        metrics["train/loss"] = loss.item()
        log(metrics, step)
        if step % t.eval_every == 0 or step == t.steps:
            last_eval = held.evaluate(model, step, train_states)
            log(last_eval, step)

    final = dict(last_eval)
    final["train/seconds"] = time.time() - t0
    return final


def opd_update(cfg, model, teacher, backend, prompts, rng):
    """On-policy distillation targets on the student's own states: (loss_mat, mask, metrics)."""
    t = cfg.trainer
    # 1. The student samples its own rollouts: the states s ~ d^{pi_S} of eq. 7.
    roll = backend.generate(model, prompts, n=1, max_new_tokens=t.max_new_tokens, temperature=t.temperature)
    lens = roll.completion_mask.sum(1)  # (B,)
    metrics = {"rollout/len_mean": lens.float().mean().item()}
    if is_kl(t.loss):
        # 2a. One-step OPD: match the teacher's next-token distribution at each sampled position.
        logits = sequence_logits(model, roll)  # (B, T, V)
        with torch.no_grad():
            teacher_logits = sequence_logits(teacher, roll)  # (B, T, V)
        mask = roll.completion_mask
        return DISTILL_LOSSES[t.loss](logits, teacher_logits, mask), mask, metrics
    # 2b. Continuation OPD: cut at a random prefix (eos excluded); the teacher continues greedily.
    cuts = [rng.randrange(max(1, int(n))) for n in lens.tolist()]
    prefixes = [
        backend.tok.decode(roll.completion_ids[i, :k], skip_special_tokens=True) for i, k in enumerate(cuts)
    ]
    # Word-level decoding has no leading space (join with one); byte-level BPE keeps it (concatenate).
    states = [
        p + y if not y or y[0].isspace() else f"{p} {y}" for p, y in zip(prompts, prefixes, strict=True)
    ]
    cont = backend.generate(teacher, states, n=1, max_new_tokens=t.continuation_tokens, greedy=True)
    # 3. The student takes cross-entropy on the teacher's continuation of its own prefix.
    logp = token_logp(sequence_logits(model, cont), cont.completion_ids)  # (B, T)
    mask = cont.completion_mask  # (B, T)
    metrics["train/prefix_len_mean"] = sum(cuts) / len(cuts)
    return DISTILL_LOSSES["continuation"](logp, mask), mask, metrics


def offline_update(cfg, model, teacher, backend, prompts, rng):
    """Sequence-level KD targets: the teacher's full greedy completions of the prompts."""
    t = cfg.trainer
    roll = backend.generate(teacher, prompts, n=1, max_new_tokens=t.max_new_tokens, greedy=True)
    logp = token_logp(sequence_logits(model, roll), roll.completion_ids)  # (B, T)
    mask = roll.completion_mask  # (B, T)
    metrics = {"rollout/len_mean": mask.sum(1).float().mean().item()}
    return DISTILL_LOSSES["continuation"](logp, mask), mask, metrics


TRAINERS.register("opd")(TrainerSpec(validate=validate, train=train))
TRAINERS.register("offline_distill")(TrainerSpec(validate=validate, train=train))
