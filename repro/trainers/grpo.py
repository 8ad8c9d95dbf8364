"""GRPO-family policy-gradient trainer (GRPO, DAPO, GSPO, NSR and what later papers plug in).

Reads top to bottom as the algorithm, CleanRL style:
    rollout -> reward -> advantage -> (dynamic sampling) -> old log-probs
    -> for each epoch and mini-batch: is_weight -> objective -> aggregate -> step
Each stage is a registered function picked by name in the config (repro/algos).

Run:  repro run experiment=clipping_bottleneck/dapo seed=1 trainer.steps=50
"""

from __future__ import annotations

import math
import random
import time

import numpy as np
import torch
from omegaconf import DictConfig
from rich.progress import Progress

from repro.algos import ADVANTAGES, AGGREGATIONS, IS_WEIGHTS, OBJECTIVES, REWARDS
from repro.algos.rewards import RewardContext
from repro.engine import make_backend
from repro.errors import ConfigError, NonFiniteError
from repro.models import load_policy
from repro.registry import UnknownNameError
from repro.rollout import Rollout, sequence_logits, token_entropy, token_logp
from repro.tasks import build_task
from repro.trainers.base import TRAINERS, Logger, TrainerSpec
from repro.trainers.common import HeldOut, need, validate_common


def validate(cfg: DictConfig) -> None:
    """Cheap checks of every key the trainer uses; raises ConfigError naming the key."""
    t = cfg.trainer
    validate_common(t)  # lr, grad_clip, eval_every and the evaluator's keys
    need(
        t,
        "group_size",
        t.group_size >= 2,
        "must be >= 2 (group-relative advantages need 2+ samples per prompt)",
    )
    need(t, "prompts_per_step", t.prompts_per_step >= 1, "must be >= 1")
    need(t, "steps", t.steps >= 0, "must be >= 0")
    need(
        t,
        "minibatches",
        1 <= t.minibatches <= t.prompts_per_step * t.group_size,
        "must be in [1, prompts*group]",
    )
    need(t, "epochs", t.epochs >= 1, "must be >= 1")
    need(t, "temperature", t.temperature > 0, "must be > 0")
    need(t, "dynamic_sampling_rounds", t.dynamic_sampling_rounds >= 1, "must be >= 1")
    build_task(cfg.task)
    # Unknown stage names and bad stage kwargs fail here, on a 2x3 dummy batch, not mid-run.
    stages = [
        ("advantage", ADVANTAGES, cfg.advantage),
        ("is_weight", IS_WEIGHTS, cfg.is_weight),
        ("objective", OBJECTIVES, cfg.objective),
        ("agg", AGGREGATIONS, cfg.agg),
    ]
    stages += [(f"reward[{i}]", REWARDS, r) for i, r in enumerate(cfg.reward)]
    for key, reg, node in stages:
        try:
            reg[node.name]
        except UnknownNameError as e:
            raise ConfigError(f"{key}.name: {e}") from None
    logp, mask = torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)
    try:
        ADVANTAGES[cfg.advantage.name](torch.tensor([[0.0], [1.0]]), torch.tensor([0, 0]), **cfg.advantage.kw)
        IS_WEIGHTS[cfg.is_weight.name](logp, logp, mask, **cfg.is_weight.kw)
        loss_mat, _ = OBJECTIVES[cfg.objective.name](logp, logp, torch.ones(2), mask, **cfg.objective.kw)
        AGGREGATIONS[cfg.agg.name](loss_mat, mask, **cfg.agg.kw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad stage settings: {e}") from None


def train(cfg: DictConfig, log: Logger) -> dict[str, float]:
    validate(cfg)
    t = cfg.trainer
    torch.set_num_threads(t.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)  # prompt sampling
    gen = torch.Generator().manual_seed(cfg.seed)  # mini-batch order and stochastic objectives

    model, tok = load_policy(cfg)
    task = build_task(cfg.task, tok)
    model.train()
    backend = make_backend(t.rollout, tok, task.stop_strings)  # trainer.rollout: hf | engine
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(0.9, 0.99), weight_decay=t.weight_decay)
    # Target accuracy, retention (F/R vs step 0) and drift of its own (= training) states vs base.
    held = HeldOut.build(cfg, task, model, tok, backend)

    def evaluate(step: int) -> dict[str, float]:
        out = held.evaluate(model, step, train_states=None)
        log(out, step)
        return out

    last_eval = evaluate(0)
    reward_curve: list[float] = []
    acc_curve = [last_eval["eval/id/greedy_acc"]]
    t0 = time.time()
    with Progress(transient=True) as progress:
        bar = progress.add_task(f"{cfg.arm or 'run'} seed {cfg.seed}", total=t.steps)
        for step in range(1, t.steps + 1):
            metrics = update(cfg, task, model, backend, opt, rng, gen, step)
            log(metrics, step)
            reward_curve.append(metrics["train/reward_mean"])

            if step % t.eval_every == 0 or step == t.steps:
                last_eval = evaluate(step)
                acc_curve.append(last_eval["eval/id/greedy_acc"])
            progress.update(
                bar,
                advance=1,
                description=(
                    f"{cfg.arm or 'run'} s{cfg.seed} reward {metrics['train/reward_mean']:.2f} "
                    f"acc {last_eval['eval/id/greedy_acc']:.2f}"
                ),
            )

    final = dict(last_eval)
    final["osc/reward"] = _diff_std(reward_curve)
    final["osc/id_acc"] = _diff_std(acc_curve)
    final["train/seconds"] = time.time() - t0
    return final


def update(cfg, task, model, backend, opt, rng, gen, step: int) -> dict[str, float]:
    """One GRPO-family step: rollout -> reward -> advantage -> updates. Returns the step's metrics."""
    t = cfg.trainer
    # 1. Rollout (+ DAPO dynamic sampling: keep only groups whose rewards differ, refilling).
    roll, rewards, group, sampled = _rollout_and_reward(cfg, task, model, backend, rng)
    metrics = {
        # Over everything sampled (before dynamic sampling drops groups): the policy's reward.
        "train/reward_mean": sampled["reward_mean"],
        "train/reward_std": sampled["reward_std"],
        "rollout/len_mean": sampled["len_mean"],
        "train/groups_kept_frac": group.unique().numel() / sampled["groups"],
    }
    if rewards.shape[0] == 0:  # every group was uninformative: nothing to learn from
        return metrics

    # 2. Advantage per sequence, group-relative.
    adv = ADVANTAGES[cfg.advantage.name](rewards, group, **cfg.advantage.kw)  # (B,)

    # 3. Log-probs of the behaviour policy (the weights that sampled), recomputed by the learner.
    with torch.no_grad():
        old_logp = token_logp(sequence_logits(model, roll), roll.completion_ids)  # (B, T)
    mask = roll.completion_mask  # (B, T)

    # 4. Several updates per rollout batch, so that the ratio moves and clipping acts.
    B = adv.shape[0]
    n_mb = min(t.minibatches, B)
    stats_acc: dict[str, list[float]] = {}
    for _epoch in range(t.epochs):
        perm = torch.randperm(B, generator=gen)
        for idx in perm.chunk(n_mb):
            logits = sequence_logits(model, roll, idx)  # (b, T, V)
            ids, m = roll.completion_ids[idx], mask[idx]
            logp = token_logp(logits, ids)  # (b, T)
            w, w_stats = IS_WEIGHTS[cfg.is_weight.name](
                logp.detach(), roll.sampler_logp[idx], m, **cfg.is_weight.kw
            )  # (b, T)
            loss_mat, obj_stats = OBJECTIVES[cfg.objective.name](
                logp, old_logp[idx], adv[idx], m, generator=gen, **cfg.objective.kw
            )  # (b, T)
            loss = AGGREGATIONS[cfg.agg.name](loss_mat * w, m, **cfg.agg.kw)
            if not torch.isfinite(loss):
                raise NonFiniteError(f"non-finite loss {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            if not torch.isfinite(grad_norm):
                raise NonFiniteError(f"non-finite grad norm at step {step}")
            opt.step()
            with torch.no_grad():
                ent = (token_entropy(logits.detach()) * m).sum() / m.sum().clamp(min=1)
            mb_stats = {"loss": loss.item(), "grad_norm": grad_norm.item(), "entropy": ent.item()}
            mb_stats |= {k: float(v) for k, v in obj_stats.items()}
            mb_stats |= {f"is/{k}": float(v) for k, v in w_stats.items()}
            for k, v in mb_stats.items():
                stats_acc.setdefault(k, []).append(v)
    metrics |= {f"train/{k}": sum(v) / len(v) for k, v in stats_acc.items()}
    return metrics


def _rollout_and_reward(cfg, task, model, backend, rng):
    """Sample prompts and G completions each; score them; with dynamic sampling drop groups whose
    rewards are all equal and sample more prompts (up to `dynamic_sampling_rounds` rounds)."""
    t = cfg.trainer
    rolls, rewards, groups, offset = [], [], [], 0
    seen_r, seen_len = [], []
    for _round in range(t.dynamic_sampling_rounds if t.dynamic_sampling else 1):
        need = t.prompts_per_step - offset
        if need <= 0:
            break
        problems = task.sample_problems(rng, need)
        roll = backend.generate(
            model,
            [p.prompt for p in problems],
            n=t.group_size,
            max_new_tokens=t.max_new_tokens,
            temperature=t.temperature,
        )
        group = torch.arange(len(problems)).repeat_interleave(t.group_size)  # (B,)
        ctx = RewardContext(
            roll.texts, [p.answer for p in problems for _ in range(t.group_size)], group, task.verify
        )
        r = torch.stack([REWARDS[c.name](ctx, **c.kw) for c in cfg.reward], -1)  # (B, K)
        seen_r.append(r[:, 0])
        seen_len.append(roll.completion_mask.sum(1).float())
        if t.dynamic_sampling:
            grp = r.sum(-1).view(len(problems), t.group_size)
            informative = grp.max(1).values > grp.min(1).values  # (n,)
            keep_groups = informative.nonzero().squeeze(-1)[:need]
            idx = (keep_groups[:, None] * t.group_size + torch.arange(t.group_size)).flatten()
            roll, r, group = (
                roll.select(idx),
                r[idx],
                torch.arange(len(keep_groups)).repeat_interleave(t.group_size),
            )
        rolls.append(roll)
        rewards.append(r)
        groups.append(group + offset)
        offset += int(group.max().item()) + 1 if group.numel() else 0
    all_r = torch.cat(seen_r)
    sampled = {
        "reward_mean": all_r.mean().item(),
        "reward_std": all_r.std().item(),
        "len_mean": torch.cat(seen_len).mean().item(),
        "groups": all_r.numel() // t.group_size,
    }
    return _cat_rollouts(rolls, backend.tok.pad_token_id), torch.cat(rewards), torch.cat(groups), sampled


def _cat_rollouts(rolls: list[Rollout], pad: int) -> Rollout:
    if len(rolls) == 1:
        return rolls[0]
    P = max(r.prompt_ids.shape[1] for r in rolls)
    T = max(r.completion_ids.shape[1] for r in rolls)
    lp = lambda x, v: torch.nn.functional.pad(x, (P - x.shape[1], 0), value=v)  # noqa: E731
    rp = lambda x, v: torch.nn.functional.pad(x, (0, T - x.shape[1]), value=v)  # noqa: E731
    return Rollout(
        torch.cat([lp(r.prompt_ids, pad) for r in rolls]),
        torch.cat([lp(r.prompt_mask, 0) for r in rolls]),
        torch.cat([rp(r.completion_ids, pad) for r in rolls]),
        torch.cat([rp(r.completion_mask, False) for r in rolls]),
        torch.cat([rp(r.sampler_logp, 0.0) for r in rolls]),
        [t for r in rolls for t in r.texts],
    )


def _diff_std(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    if len(xs) < 3:
        return float("nan")
    return float(np.std(np.diff(xs), ddof=1))


TRAINERS.register("grpo")(TrainerSpec(validate=validate, train=train))
