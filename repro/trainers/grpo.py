"""GRPO-family policy-gradient trainer (GRPO, DAPO, GSPO and what papers plug in).

Reads top to bottom as the algorithm, CleanRL style. Each step:
    rollout -> reward (-> DAPO dynamic sampling) -> advantage -> old log-probs
    -> for each epoch and mini-batch: is_weight -> objective -> aggregate -> step
and every `eval_every` steps the shared evaluation (target, retention vs step 0, drift of its own
states). Each stage is a registered function picked by name in the config (repro/algos).
Randomness comes from the run's named streams (prompts, rollout, shuffle, rescue: repro.streams),
so arms with the same seed see the same prompts and shuffles. Share statistics (clip fractions
and a paper's own shares) are pooled as ratios of sums: per step over its mini-batches
(`train/<stat>`), and over the whole run (`run/<stat>` in the final metrics).
Bookkeeping lives elsewhere: config checks run before training (TrainerSpec.validate), seeding,
optimiser and the clipped step are repro.trainers.common, progress display is the logger's.

Run:  repro run experiment=<paper>/<arm> seed=1 trainer.steps=50
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import DictConfig

from repro.algos import ADVANTAGES, AGGREGATIONS, IS_WEIGHTS, OBJECTIVES, REWARDS
from repro.algos.label_free import PolicyView, answer_extractor
from repro.algos.multi_reward import channel_shares
from repro.algos.objectives import Share
from repro.algos.rewards import RewardContext
from repro.eval.micro import HeldOut
from repro.eval.vote import VoteEval
from repro.metrics.stability import stability_summary
from repro.models import load_policy
from repro.rollout import Rollout, RolloutBackend, make_backend, token_entropy, token_logp, truncated
from repro.tasks import Task, build_task
from repro.trainers.base import TRAINERS, Logger, TrainerSpec
from repro.trainers.common import (
    Streams,
    delta_norm,
    optimizer,
    optimizer_step,
    save_checkpoint,
    seed_run,
    weight_snapshot,
)


@dataclass
class Learner:
    """What one step reads and updates: the config, the task, the policy and its optimiser, the
    rollout backend, the run's named random streams, and its share statistics pooled so far."""

    cfg: DictConfig
    task: Task
    model: torch.nn.Module
    backend: RolloutBackend
    opt: torch.optim.Optimizer
    streams: Streams
    shares: dict[str, Share] = field(default_factory=dict)  # run totals: Σ num, Σ den per stat
    stale: StaleSampler | None = None  # trainer.staleness > 0: the sampler lags the policy


class StaleSampler:
    """Rollout staleness (`trainer.staleness: k`): the rollouts of step s are sampled by the policy
    of version max(0, s - 1 - k) (version v = the weights after v steps; a fresh sampler uses s - 1),
    as in asynchronous RL where generation runs k policy updates behind the learner. The behaviour
    log-probs (the ratio's denominator) are those of that lagged policy, so ratios start away from 1
    and clipping binds from the first mini-batch. Keeps the last k + 1 versions' weights."""

    def __init__(self, model: torch.nn.Module, lag: int):
        self.lag = lag
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.versions: deque[dict[str, torch.Tensor]] = deque(maxlen=lag + 1)
        self.push(model)

    def push(self, model: torch.nn.Module) -> None:
        """Record the policy's weights after a step (call once per step)."""
        self.versions.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    def policy(self) -> torch.nn.Module:
        """The lagged policy for this step's rollouts: the oldest version kept."""
        self.model.load_state_dict(self.versions[0])
        return self.model


def train(cfg: DictConfig, log: Logger) -> dict[str, float]:
    t = cfg.trainer
    streams = seed_run(cfg)
    model, tok = load_policy(cfg)
    task = build_task(cfg.task, tok)
    model.train()
    backend = make_backend(t.rollout, tok, task.stop_strings)  # trainer.rollout: engine | hf | vllm
    learner = Learner(cfg, task, model, backend, optimizer(model, t), streams)
    start = weight_snapshot(model)  # for train/delta_norm
    if t.staleness > 0:
        learner.stale = StaleSampler(model, t.staleness)
    # Target accuracy, retention (F/R vs step 0) and drift of its own (= training) states vs base.
    held = HeldOut.build(cfg, task, model, tok, backend)
    # maj@G and self-certainty vs correctness on held-out problems (trainer.vote_samples > 0).
    vote = VoteEval.build(cfg, task, backend) if t.get("vote_samples") else None

    def evaluate(step: int) -> dict[str, float]:
        out = held.evaluate(model, step, train_states=None)
        return out | vote.evaluate(model, step) if vote is not None else out

    last_eval = evaluate(0)
    log(last_eval, 0)
    reward_curve: list[float] = []
    acc_curve, eval_steps = [last_eval["eval/id/greedy_acc"]], [0]
    t0, last_loss = time.time(), math.nan
    for step in range(1, t.steps + 1):
        metrics = update(learner, step)
        last_loss = metrics.get("train/loss", last_loss)  # a step with no informative group has none
        if learner.stale is not None:
            learner.stale.push(model)  # this step's version, for the lagged sampler
        log(metrics, step)
        reward_curve.append(metrics["train/reward_mean"])
        if step % t.eval_every == 0 or step == t.steps:
            last_eval = evaluate(step)
            log(last_eval, step)
            acc_curve.append(last_eval["eval/id/greedy_acc"])
            eval_steps.append(step)
        log.progress(step, t.steps, reward=metrics["train/reward_mean"], acc=last_eval["eval/id/greedy_acc"])

    final = dict(last_eval)
    final["osc/reward"] = diff_std(reward_curve)
    final["osc/id_acc"] = diff_std(acc_curve)
    final |= {f"run/{k}": float(v) for k, v in learner.shares.items()}
    final |= stability_summary(eval_steps, acc_curve)  # peak, end/peak, collapse step of id accuracy
    final["train/final_loss"] = last_loss
    final["train/delta_norm"] = delta_norm(model, start)  # ||theta - theta_0||
    final["train/seconds"] = time.time() - t0
    if t.save:
        save_checkpoint(cfg, model, tok, held.reference())  # later stages measure against its origin
    return final


def update(learner: Learner, step: int) -> dict[str, float]:
    """One GRPO-family step: rollout -> reward -> advantage -> updates. Returns the step's metrics."""
    cfg, t, model = learner.cfg, learner.cfg.trainer, learner.model
    # 1-2. Rollout and reward (+ DAPO dynamic sampling: keep only groups whose rewards differ, refilling),
    # sampled by the policy itself or, with trainer.staleness = k, by its version of k steps before.
    behaviour = learner.stale.policy() if learner.stale is not None else model
    roll, rewards, group, sampled = rollout_and_reward(learner, step, behaviour)
    metrics = {
        # Over everything sampled (before dynamic sampling drops groups): the policy's reward.
        "train/reward_mean": sampled["reward_mean"],
        "train/reward_std": sampled["reward_std"],
        "rollout/len_mean": sampled["len_mean"],
        "rollout/truncated_frac": sampled["truncated_frac"],  # cut by the budget (no EOS): gate <= 1%
        "train/groups_kept_frac": group.unique().numel() / sampled["groups"],
    }
    metrics |= {f"train/{k}": v for k, v in sampled["reward_stats"].items()}  # e.g. vote/gold_agree
    if rewards.shape[0] == 0:  # every group was uninformative: nothing to learn from
        return metrics

    # 3. Advantage per sequence, group-relative (rewards are scored on the CPU; moved to the model's device).
    adv = ADVANTAGES[cfg.advantage.name](rewards, group, **cfg.advantage.kw)  # (B,)
    if rewards.shape[1] > 1:  # several reward channels: the share of |A| each one carries
        names = _channel_names([c.name for c in cfg.reward])
        shares = channel_shares(cfg.advantage.name, rewards, group, names, **cfg.advantage.kw)
        metrics |= {f"train/{k}": v for k, v in shares.items()}
    adv = adv.to(roll.completion_ids.device)

    # 4. Log-probs of the behaviour policy (the weights that sampled), recomputed by the learner.
    with torch.no_grad():
        old_logits = learner.backend.sequence_logits(behaviour, roll)  # (B, T, V)
        old_logp = token_logp(old_logits, roll.completion_ids)  # (B, T)
        # Learner vs sampler on the same tokens at the sampling temperature: ~0 for the hf backend,
        # the kernel/precision mismatch for vllm (correct it with is_weight: tis).
        learner_logp = token_logp(old_logits, roll.completion_ids, t.temperature)  # (B, T)
    mask = roll.completion_mask  # (B, T)
    metrics |= sampler_mismatch(learner_logp, roll.sampler_logp, mask)

    # 5. Several updates per rollout batch, so that the ratio moves and clipping acts.
    B = adv.shape[0]
    shuffle = learner.streams.gen("shuffle", step)
    rescue = learner.streams.gen("rescue", step, device=model.device)  # noise where the model is
    per_minibatch: list[dict[str, float | Share]] = []
    for _epoch in range(t.epochs):
        for idx in minibatch_order(B, t.minibatches, shuffle):
            logits = learner.backend.sequence_logits(model, roll, idx)  # (b, T, V)
            logp = token_logp(logits, roll.completion_ids[idx])  # (b, T)
            m = mask[idx]  # (b, T)
            # The sampler's log-probs are at the sampling temperature: compare like with like.
            at_T = logp if t.temperature == 1 else token_logp(logits, roll.completion_ids[idx], t.temperature)
            loss, pg_stats = pg_loss(
                cfg, logp, old_logp[idx], adv[idx], m, at_T, roll.sampler_logp[idx], generator=rescue
            )
            grad_norm = optimizer_step(model, learner.opt, loss, t, step)

            with torch.no_grad():
                ent = (token_entropy(logits.detach()) * m).sum() / m.sum().clamp(min=1)
            mb_stats = {"loss": loss.item(), "grad_norm": grad_norm, "entropy": ent.item()}
            per_minibatch.append(mb_stats | pg_stats)
    step_stats, shares = pool(per_minibatch)
    metrics |= {f"train/{k}": v for k, v in step_stats.items()}
    for k, v in shares.items():  # the run's totals
        learner.shares[k] = learner.shares[k] + v if k in learner.shares else v
    return metrics


def pg_loss(
    cfg: DictConfig,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    logp_at_T: torch.Tensor,
    sampler_logp: torch.Tensor,
    *,
    generator: torch.Generator,
    keep: torch.Tensor | None = None,
    agg_coef: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Share | torch.Tensor]]:
    """Stages 3-5 on one batch: is_weight -> objective -> aggregate. Returns the loss to minimise
    and the stages' stats (objective stats by name, IS-weight stats as `is/<name>`; shares as Share).

    logp (b, T) with gradient; old_logp (b, T); adv (b,); mask (b, T) bool; logp_at_T (b, T): the
    learner's log-probs at the sampling temperature (logp itself at temperature 1), compared with
    the sampler's `sampler_logp` (b, T) by the IS weight. generator: a stochastic objective's noise.
    keep (b,): 0/1 per completion from an IS filter (repro.algos IS_FILTERS), multiplied into the
    weight; None keeps all. agg_coef (b, T): d loss / d loss_mat of the aggregation over a larger
    batch this one is a chunk of (every aggregation is linear in loss_mat), so that summing the
    chunks' losses gives the whole batch's loss; None aggregates this batch on its own."""
    w, w_stats = IS_WEIGHTS[cfg.is_weight.name](
        logp_at_T.detach(), sampler_logp, mask, **cfg.is_weight.kw
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
    probe = torch.zeros(mask.shape, device=mask.device, requires_grad=True)
    (coef,) = torch.autograd.grad(AGGREGATIONS[cfg.agg.name](probe, mask, **cfg.agg.kw), probe)
    return coef


def pool(per_minibatch: list[dict[str, float | Share]]) -> tuple[dict[str, float], dict[str, Share]]:
    """One step's stats from its mini-batches': a share is Σ numerators / Σ denominators, divided
    once (a mini-batch with nothing eligible adds nothing; NaN if no mini-batch had anything), a
    `*_max` the maximum, anything else the mean. Returns (stats, the step's shares as Share)."""
    shares: dict[str, Share] = {}
    values: dict[str, list[float]] = {}
    for stats in per_minibatch:
        for k, v in stats.items():
            if isinstance(v, Share):
                shares[k] = shares[k] + v if k in shares else v
            else:
                values.setdefault(k, []).append(float(v))
    out = {k: max(v) if k.endswith("_max") else sum(v) / len(v) for k, v in values.items()}
    return out | {k: float(v) for k, v in shares.items()}, shares


def minibatch_order(B: int, minibatches: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """A random split of the B sequences into `minibatches` index sets (fewer if B is smaller)."""
    return torch.randperm(B, generator=generator).chunk(min(minibatches, B))


def rollout_and_reward(
    learner: Learner, step: int, behaviour: torch.nn.Module | None = None
) -> tuple[Rollout, torch.Tensor, torch.Tensor, dict[str, float]]:
    """Sample prompts and G completions each; score them; with dynamic sampling drop groups whose
    rewards are all equal and sample more prompts (up to `dynamic_sampling_rounds` rounds).
    Prompts and sampling noise of (step, round) come from the run's streams, so every arm draws
    the same first-round prompts at a step whatever happened before. `behaviour` samples (default:
    the policy; a lagged copy with trainer.staleness).
    Returns (rollout, rewards (B, K), group ids (B,), stats of everything sampled)."""
    cfg, t, task = learner.cfg, learner.cfg.trainer, learner.task
    G = t.group_size
    rolls, rewards, groups, offset = [], [], [], 0
    seen_r, seen_len, seen_cut, reward_stats = [], [], [], {}
    eos = learner.backend.tok.eos_token_id
    extract = answer_extractor(task)
    for round_ in range(t.dynamic_sampling_rounds if t.dynamic_sampling else 1):
        missing = t.prompts_per_step - offset
        if missing <= 0:
            break
        problems = task.sample_problems(learner.streams.rng("prompts", step, round_), missing)
        roll = learner.backend.generate(
            behaviour if behaviour is not None else learner.model,
            [p.prompt for p in problems],
            n=G,
            max_new_tokens=t.max_new_tokens,
            temperature=t.temperature,
            generator=learner.streams.gen("rollout", step, round_),
        )
        group = torch.arange(len(problems)).repeat_interleave(G)  # (B,)
        # Label-free rewards read the policy's logits (computed only if one asks) and the task's
        # answer parser; any reward may report diagnostics in extras["stats"].
        policy = PolicyView(
            lambda idx, roll=roll: learner.backend.sequence_logits(learner.model, roll, idx),
            roll.completion_ids,
            roll.completion_mask,
        )
        extras = {"policy": policy, "extract_answer": extract, "stats": {}}
        ctx = RewardContext(
            roll.texts, [p.answer for p in problems for _ in range(G)], group, task.verify, extras
        )
        r = torch.stack([REWARDS[c.name](ctx, **c.kw) for c in cfg.reward], -1)  # (B, K)
        for k, v in extras["stats"].items():
            reward_stats.setdefault(k, []).append(v)
        seen_r.append(r[:, 0])
        lens = roll.completion_mask.sum(1)
        seen_len.append(lens.float())
        seen_cut.append(truncated(roll.completion_ids, lens, t.max_new_tokens, eos))
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
        "truncated_frac": torch.cat(seen_cut).mean().item(),
        "groups": all_r.numel() // G,
        "reward_stats": {k: sum(v) / len(v) for k, v in reward_stats.items()},
    }
    pad = learner.backend.tok.pad_token_id
    return cat_rollouts(rolls, pad), torch.cat(rewards), torch.cat(groups), sampled


def sampler_mismatch(learner_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor) -> dict:
    """How far the sampler's log-probs are from the learner's on the sampled tokens (B, T each):
    mean and max |difference| and the k3 estimate of KL(sampler || learner), over valid tokens."""
    diff = (learner_logp - sampler_logp).masked_fill(~mask, 0.0)  # (B, T) log(pi_learner / pi_sampler)
    n = mask.sum().clamp(min=1)
    k3 = (diff.exp() - 1 - diff).masked_fill(~mask, 0.0)  # (B, T) >= 0
    return {
        "rollout/logp_diff_mean": (diff.abs().sum() / n).item(),
        "rollout/logp_diff_max": diff.abs().max().item() if mask.any() else 0.0,
        "rollout/sampler_kl_k3": (k3.sum() / n).item(),
    }


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


def _channel_names(names: list[str]) -> list[str]:
    """Reward names as metric suffixes; a name used twice gets its channel index."""
    return [n if names.count(n) == 1 else f"{n}{k}" for k, n in enumerate(names)]


def diff_std(xs: list[float]) -> float:
    """Oscillation of a curve: sd of its step-to-step differences (NaN below 3 points)."""
    xs = [x for x in xs if not math.isnan(x)]
    if len(xs) < 3:
        return float("nan")
    return float(np.std(np.diff(xs), ddof=1))


TRAINERS.register("grpo")(TrainerSpec(train=train))
