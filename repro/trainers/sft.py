"""Supervised fine-tuning on fixed demonstrations (eq. 5: L = -E_{s~d_data} log pi(y*|s)).

Reads top to bottom as the algorithm:
    fixed demonstrations -> (LoRA) -> for each epoch and batch: teacher forcing
    -> continuation CE on the demonstration tokens -> aggregate -> step
    -> periodic eval (target, retention, forgetting vs step 0, state drift) -> save the model

The states it trains on are the demonstrations' prefixes, a solution style the base model never
writes (micro world, repro.tasks.arith) or the dataset's own solutions (GSM8K), so `drift/*`
measures how far off-policy they are.
With `trainer.save` (default for sft) the final model (LoRA merged) goes to
<cache_dir>/checkpoints/<config hash>/seed<N>/ for later stages
(`trainer.teacher=<dir>` of opd / offline_distill, or `model=hf model.path=<dir>`).

Run:  PYTHONPATH=. REPRO_ROOT=. repro run trainer=sft seed=1 trainer.epochs=1
"""

from __future__ import annotations

import math
import random
import time

import torch
from omegaconf import DictConfig

from repro.algos import AGGREGATIONS, DISTILL_LOSSES
from repro.eval.micro import HeldOut
from repro.models import load_policy
from repro.rollout import make_backend, sequence_logits, token_logp
from repro.tasks import build_task
from repro.trainers.base import TRAINERS, Logger, TrainerSpec
from repro.trainers.common import (
    delta_norm,
    encode_pairs,
    optimizer,
    optimizer_step,
    save_checkpoint,
    seed_run,
    weight_snapshot,
    with_lora,
)


def train(cfg: DictConfig, log: Logger) -> dict[str, float]:
    t = cfg.trainer
    streams = seed_run(cfg)  # streams.gen("shuffle", epoch): the batch order of each epoch

    model, tok = load_policy(cfg)
    task = build_task(cfg.task, tok)
    backend = make_backend(t.rollout, tok, task.stop_strings)  # trainer.rollout: engine | hf | vllm
    # Fixed data: every seed trains on the same demonstrations (data_seed), in its own order.
    data = task.sft_examples(random.Random(f"sft-{t.data_seed}"), t.n_examples, t.style)
    # Adapters first (LoRA starts as the identity): the base model's states are then sampled through
    # the same rollout path as the policy's later ones (the engine hands peft models to
    # transformers.generate), so that an unchanged policy shows no drift.
    model = with_lora(model, t.lora, streams.seed_of("init"))
    held = HeldOut.build(cfg, task, model, tok, backend)  # base model's states and scores
    train_states = held.demo_states(t.style)

    model.train()
    opt = optimizer(model, t)
    start = weight_snapshot(model)  # for train/delta_norm
    per_epoch = math.ceil(len(data) / t.batch_size)
    total = t.epochs * per_epoch if t.steps is None else min(t.steps, t.epochs * per_epoch)

    last_eval = held.evaluate(model, 0, train_states)
    log(last_eval, 0)
    t0, step, loss = time.time(), 0, None
    for epoch in range(t.epochs):
        for idx in torch.randperm(len(data), generator=streams.gen("shuffle", epoch)).split(t.batch_size):
            if step == total:
                break
            step += 1
            # Teacher forcing on the demonstrations: the states come from the data, not the model.
            batch = encode_pairs(tok, [data[i] for i in idx.tolist()]).to(model.device)
            logp = token_logp(sequence_logits(model, batch), batch.completion_ids)  # (b, T)
            mask = batch.completion_mask  # (b, T)
            loss_mat = DISTILL_LOSSES["continuation"](logp, mask)  # (b, T)
            loss = AGGREGATIONS[cfg.agg.name](loss_mat, mask, **cfg.agg.kw)
            grad_norm = optimizer_step(model, opt, loss, t, step)
            log({"train/loss": loss.item(), "train/grad_norm": grad_norm, "train/epoch": float(epoch)}, step)
            if step % t.eval_every == 0 or step == total:
                last_eval = held.evaluate(model, step, train_states)
                log(last_eval, step)
            log.progress(step, total, loss=loss.item(), acc=last_eval["eval/id/greedy_acc"])

    final = dict(last_eval)
    final["train/steps"] = float(step)
    final["train/final_loss"] = loss.item() if loss is not None else math.nan  # the last step's
    final["train/delta_norm"] = delta_norm(model, start)  # ||theta - theta_0||, LoRA merged
    final["train/seconds"] = time.time() - t0
    if t.save:
        save_checkpoint(cfg, model, tok, held.reference())  # later stages measure against its origin
    return final


TRAINERS.register("sft")(TrainerSpec(train=train))
