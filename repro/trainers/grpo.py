"""GRPO-family policy-gradient trainer (GRPO, DAPO, GSPO and what papers plug in).

Reads top to bottom as the algorithm, CleanRL style. Each step:
    rollout -> reward (-> DAPO dynamic sampling) -> advantage -> old log-probs
    -> for each epoch and mini-batch: is_weight -> objective -> aggregate -> step
and every `eval_every` steps the shared evaluation (target, retention vs step 0, drift of its own
states). Each stage is a registered function picked by name in the config (repro/algos).
Bookkeeping lives elsewhere: config checks run before training (TrainerSpec.validate), seeding,
optimiser and the clipped step are repro.trainers.common, progress display is the logger's.

Run:  repro run experiment=<paper>/<arm> seed=1 trainer.steps=50
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig

from repro.algos import ADVANTAGES, AGGREGATIONS, IS_WEIGHTS, OBJECTIVES, REWARDS
from repro.algos.rewards import RewardContext
from repro.engine import make_backend
from repro.eval.micro import HeldOut
from repro.models import load_policy
from repro.rollout import Rollout, RolloutBackend, sequence_logits, token_entropy, token_logp
from repro.tasks import Task, build_task
from repro.trainers.base import TRAINERS, Logger, TrainerSpec
from repro.trainers.common import optimizer, optimizer_step, seed_run


@dataclass
class Learner:
    """What one step reads and updates: the config, the task, the policy and its optimiser, the
    rollout backend, and the run's two random streams."""

    cfg: DictConfig
    task: Task
    model: torch.nn.Module
    backend: RolloutBackend
    opt: torch.optim.Optimizer
    rng: random.Random  # prompt sampling
    gen: torch.Generator  # mini-batch order and stochastic objectives


def train(cfg: DictConfig, log: Logger) -> dict[str, float]:
    t = cfg.trainer
    rng, gen = seed_run(cfg)
    model, tok = load_policy(cfg)
    task = build_task(cfg.task, tok)
    model.train()
    backend = make_backend(t.rollout, tok, task.stop_strings)  # trainer.rollout: hf | engine
    learner = Learner(cfg, task, model, backend, optimizer(model, t), rng, gen)
    # Target accuracy, retention (F/R vs step 0) and drift of its own (= training) states vs base.
    held = HeldOut.build(cfg, task, model, tok, backend)

    last_eval = held.evaluate(model, 0, train_states=None)
    log(last_eval, 0)
    reward_curve: list[float] = []
    acc_curve = [last_eval["eval/id/greedy_acc"]]
    t0 = time.time()
    for step in range(1, t.steps + 1):
        metrics = update(learner, step)
        log(metrics, step)
        reward_curve.append(metrics["train/reward_mean"])
        if step % t.eval_every == 0 or step == t.steps:
            last_eval = held.evaluate(model, step, train_states=None)
            log(last_eval, step)
            acc_curve.append(last_eval["eval/id/greedy_acc"])
        log.progress(step, t.steps, reward=metrics["train/reward_mean"], acc=last_eval["eval/id/greedy_acc"])

    final = dict(last_eval)
    final["osc/reward"] = diff_std(reward_curve)
    final["osc/id_acc"] = diff_std(acc_curve)
    final["train/seconds"] = time.time() - t0
    return final


def update(learner: Learner, step: int) -> dict[str, float]:
    """One GRPO-family step: rollout -> reward -> advantage -> updates. Returns the step's metrics."""
    cfg, t, model = learner.cfg, learner.cfg.trainer, learner.model
    # 1-2. Rollout and reward (+ DAPO dynamic sampling: keep only groups whose rewards differ, refilling).
    roll, rewards, group, sampled = rollout_and_reward(learner)
    metrics = {
        # Over everything sampled (before dynamic sampling drops groups): the policy's reward.
        "train/reward_mean": sampled["reward_mean"],
        "train/reward_std": sampled["reward_std"],
        "rollout/len_mean": sampled["len_mean"],
        "train/groups_kept_frac": group.unique().numel() / sampled["groups"],
    }
    if rewards.shape[0] == 0:  # every group was uninformative: nothing to learn from
        return metrics

    # 3. Advantage per sequence, group-relative.
    adv = ADVANTAGES[cfg.advantage.name](rewards, group, **cfg.advantage.kw)  # (B,)

    # 4. Log-probs of the behaviour policy (the weights that sampled), recomputed by the learner.
    with torch.no_grad():
        old_logp = token_logp(sequence_logits(model, roll), roll.completion_ids)  # (B, T)
    mask = roll.completion_mask  # (B, T)

    # 5. Several updates per rollout batch, so that the ratio moves and clipping acts.
    B = adv.shape[0]
    stats: dict[str, list[float]] = {}
    for _epoch in range(t.epochs):
        for idx in torch.randperm(B, generator=learner.gen).chunk(min(t.minibatches, B)):
            logits = sequence_logits(model, roll, idx)  # (b, T, V)
            logp = token_logp(logits, roll.completion_ids[idx])  # (b, T)
            m = mask[idx]  # (b, T)
            loss, pg_stats = pg_loss(
                cfg, logp, old_logp[idx], roll.sampler_logp[idx], adv[idx], m, learner.gen
            )
            grad_norm = optimizer_step(model, learner.opt, loss, t, step)

            with torch.no_grad():
                ent = (token_entropy(logits.detach()) * m).sum() / m.sum().clamp(min=1)
            mb_stats = {"loss": loss.item(), "grad_norm": grad_norm, "entropy": ent.item()}
            mb_stats |= {k: float(v) for k, v in pg_stats.items()}
            for k, v in mb_stats.items():
                stats.setdefault(k, []).append(v)
    metrics |= {f"train/{k}": sum(v) / len(v) for k, v in stats.items()}
    return metrics


def pg_loss(
    cfg: DictConfig,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    sampler_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator,
    keep: torch.Tensor | None = None,
    agg_coef: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stages 3-5 on one batch: is_weight -> objective -> aggregate. Returns the loss to minimise
    and the stages' stats (objective stats by name, IS-weight stats as `is/<name>`).

    logp (b, T) with gradient; old_logp, sampler_logp (b, T); adv (b,); mask (b, T) bool.
    keep (b,): 0/1 per completion from an IS filter (repro.algos IS_FILTERS), multiplied into the
    weight; None keeps all. agg_coef (b, T): d loss / d loss_mat of the aggregation over a larger
    batch this one is a chunk of (every aggregation is linear in loss_mat), so that summing the
    chunks' losses gives the whole batch's loss; None aggregates this batch on its own."""
    w, w_stats = IS_WEIGHTS[cfg.is_weight.name](
        logp.detach(), sampler_logp, mask, **cfg.is_weight.kw
    )  # (b, T)
    if keep is not None:
        w = w * keep[:, None]
    loss_mat, obj_stats = OBJECTIVES[cfg.objective.name](
        logp, old_logp, adv, mask, generator=generator, **cfg.objective.kw
    )  # (b, T)
    if agg_coef is None:
        loss = AGGREGATIONS[cfg.agg.name](loss_mat * w, mask, **cfg.agg.kw)
    else:
        loss = (agg_coef * loss_mat * w).where(mask, 0.0).sum()
    return loss, dict(obj_stats) | {f"is/{k}": v for k, v in w_stats.items()}


def aggregation_coef(cfg: DictConfig, mask: torch.Tensor) -> torch.Tensor:
    """d loss / d loss_mat of `cfg.agg` on a batch with this mask (B, T): the weight each token's
    loss gets. The aggregations are linear in loss_mat, so this is exact."""
    probe = torch.zeros(mask.shape, requires_grad=True)
    (coef,) = torch.autograd.grad(AGGREGATIONS[cfg.agg.name](probe, mask, **cfg.agg.kw), probe)
    return coef


def rollout_and_reward(learner: Learner) -> tuple[Rollout, torch.Tensor, torch.Tensor, dict[str, float]]:
    """Sample prompts and G completions each; score them; with dynamic sampling drop groups whose
    rewards are all equal and sample more prompts (up to `dynamic_sampling_rounds` rounds).
    Returns (rollout, rewards (B, K), group ids (B,), stats of everything sampled)."""
    cfg, t, task = learner.cfg, learner.cfg.trainer, learner.task
    G = t.group_size
    rolls, rewards, groups, offset = [], [], [], 0
    seen_r, seen_len = [], []
    for _round in range(t.dynamic_sampling_rounds if t.dynamic_sampling else 1):
        missing = t.prompts_per_step - offset
        if missing <= 0:
            break
        problems = task.sample_problems(learner.rng, missing)
        roll = learner.backend.generate(
            learner.model,
            [p.prompt for p in problems],
            n=G,
            max_new_tokens=t.max_new_tokens,
            temperature=t.temperature,
        )
        group = torch.arange(len(problems)).repeat_interleave(G)  # (B,)
        ctx = RewardContext(roll.texts, [p.answer for p in problems for _ in range(G)], group, task.verify)
        r = torch.stack([REWARDS[c.name](ctx, **c.kw) for c in cfg.reward], -1)  # (B, K)
        seen_r.append(r[:, 0])
        seen_len.append(roll.completion_mask.sum(1).float())
        if t.dynamic_sampling:
            grp = r.sum(-1).view(len(problems), G)
            informative = grp.max(1).values > grp.min(1).values  # (n,)
            keep_groups = informative.nonzero().squeeze(-1)[:missing]
            idx = (keep_groups[:, None] * G + torch.arange(G)).flatten()
            roll, r, group = roll.select(idx), r[idx], torch.arange(len(keep_groups)).repeat_interleave(G)
        rolls.append(roll)
        rewards.append(r)
        groups.append(group + offset)
        offset += int(group.max().item()) + 1 if group.numel() else 0
    all_r = torch.cat(seen_r)
    sampled = {
        "reward_mean": all_r.mean().item(),
        "reward_std": all_r.std().item(),
        "len_mean": torch.cat(seen_len).mean().item(),
        "groups": all_r.numel() // G,
    }
    pad = learner.backend.tok.pad_token_id
    return cat_rollouts(rolls, pad), torch.cat(rewards), torch.cat(groups), sampled


def cat_rollouts(rolls: list[Rollout], pad: int) -> Rollout:
    """One Rollout of several: prompts left-padded and completions right-padded to the widest."""
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


def diff_std(xs: list[float]) -> float:
    """Oscillation of a curve: sd of its step-to-step differences (NaN below 3 points)."""
    xs = [x for x in xs if not math.isnan(x)]
    if len(xs) < 3:
        return float("nan")
    return float(np.std(np.diff(xs), ddof=1))


TRAINERS.register("grpo")(TrainerSpec(train=train))
