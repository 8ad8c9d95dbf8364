"""Collaborative GRPO: peers with models of their own pool the groups they generate.

Each step, every peer (its own model: another size, another pretraining mixture, LoRA-only, or
its own older checkpoint) generates whole groups for its share of the step's prompts (`layout:
vertical`) or its share of every group (`horizontal`), scores them, and publishes them as a rollout
message (repro.trainers.collab_wire: token ids, its log-probs, rewards, lengths for masks,
generator id, policy version). Every training peer then takes the groups it receives (`pool: all`,
or only its own: `own`, the "alone" baseline) and makes one optimizer step on them:

    rollout -> reward -> message -> exchange -> advantage (over whole groups, whoever sampled them)
    -> learner log-probs -> IS filter (keep per completion) -> IS weight -> objective -> aggregate
    -> step

The stages are the registered functions of repro.algos, called through repro.trainers.grpo's
`pg_loss`; `ratio_vs: generator` puts the generator's log-probs in the objective's ratio
(PPO-clip against the generator), `learner` keeps the ratio at 1 (one step per batch: clipping
inactive) so that only the IS weight corrects for the generator. A completion the filter drops
still counted in its group's mean and std (advantages come first). Rollouts go through the
backend `trainer.rollout` names (repro.rollout.make_backend; the engine falls back to
transformers.generate for LoRA peers).

Two execution modes with the same numbers (`exchange`):
    local   every peer in this process, stepped in turn (micro sweeps);
    dist    one process per peer (repro.trainers.collab_peer), messages all-gathered over a
            torch.distributed gloo group; `launcher: spawn` starts them here (a peer that dies or
            sends a malformed message is reported by name and the others go on), `torchrun` under
            torchrun (its agent stops every worker when one fails). The launching process logs.
Randomness comes from the run's named streams (repro.streams), keyed by step and by the peer's or
generator's index: the step's prompts from ("prompts", step), each generator's sampling noise from
("rollout", step, generator), a stochastic objective's from ("rescue", step, peer), LoRA adapters'
init from ("init", peer). So the modes agree bit for bit at equal thread counts, and two arms with
the same seed and peers draw the same prompts and, until their weights differ, the same samples.

Metrics: `peer/<name>/<metric>` per peer (train/*, eval/*, time/*); the same name without the prefix
over the peers that logged it: a share (`Share`: every train/* ratio such as the KL per token, the
truncated or filtered fractions, the entropy) pooled as Σ numerators / Σ denominators, anything
else (evaluations) the mean; `collab/*` for the exchange. The final metrics add each share pooled
over the whole run, `peer/<name>/run/<stat>` and `run/<stat>` (over peers).

Run:  repro run experiment=<paper>/<arm> seed=1 [trainer.exchange=dist]
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from repro.algos import ADVANTAGES, IS_FILTERS, REWARDS
from repro.algos.is_weights import k3, sequence_kl
from repro.algos.objectives import Share
from repro.algos.rewards import RewardContext
from repro.errors import ConfigError, NonFiniteError
from repro.eval.micro import HeldOut
from repro.models import load_policy, weights_provenance
from repro.rollout import Rollout, RolloutBackend, make_backend, sequence_logits, token_entropy, token_logp
from repro.tasks import Task, build_task
from repro.trainers.base import TRAINERS, Logger, TrainerSpec
from repro.trainers.collab_wire import (
    SEP,
    Exchange,
    LocalExchange,
    MalformedMessage,
    RolloutMessage,
    decode_bundle,
    encode,
    mark_dead,
)
from repro.trainers.common import Streams, optimizer, seed_run, with_lora
from repro.trainers.grpo import aggregation_coef, pg_loss, pool

log = logging.getLogger(__name__)

PEER_PREFIX = "peer/"
_EVAL_KEYS = ("eval/", "retention/", "drift")  # what the final metrics keep of each peer
DIAG_CAP = 2.0  # rho above which truncation would act, for arms without a `cap` (F-TIS's C)


# ---------------------------------------------------------------------------------------------
# Peers


@dataclass
class Peer:
    """One participant: its model and optimiser, its evaluator, its checkpoint history, and its
    share statistics pooled over the run so far."""

    name: str
    index: int  # its rank: the entry of trainer.peers, and its key in the run's random streams
    spec: DictConfig  # its entry in trainer.peers
    model: torch.nn.Module
    tok: object
    backend: RolloutBackend
    opt: torch.optim.Optimizer
    held: HeldOut
    streams: Streams
    base_sha256: str  # "" when its weights have no local file (a hub id)
    version: int = 0  # optimizer updates applied
    stale_model: torch.nn.Module | None = None
    stale_backend: RolloutBackend | None = None
    history: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # version -> trainable state
    shares: dict[str, Share] = field(default_factory=dict)  # run totals: Σ num, Σ den per stat


def peer_names(cfg: DictConfig) -> list[str]:
    return [str(p.name) for p in cfg.trainer.peers]


def peer_cfg(cfg: DictConfig, spec: DictConfig) -> DictConfig:
    """The run's config with `model` replaced by the peer's (what load_policy and HeldOut read)."""
    out = cfg.copy()
    with open_dict(out):
        out.model = OmegaConf.create(OmegaConf.to_container(spec.model, resolve=True))
    return out


def build_peer(cfg: DictConfig, spec: DictConfig, index: int, streams: Streams) -> Peer:
    """Load the peer's base (a shipped micro base, or one pretrained on first use), wrap LoRA
    adapters if it has them, and build its optimiser, evaluator and rollout backend."""
    t, name = cfg.trainer, str(spec.name)
    c = peer_cfg(cfg, spec)
    base = weights_provenance(c)  # builds a micro base that is neither shipped nor cached
    model, tok = load_policy(c)
    model = with_lora(model, spec.get("lora"), streams.seed_of("init", index))
    model.train()
    task = build_task(cfg.task, tok)
    backend = make_backend(t.rollout, tok, task.stop_strings)
    lr = spec.get("lr") or t.lr
    opt = optimizer(model, SimpleNamespace(lr=lr, weight_decay=t.weight_decay))
    held = HeldOut.build(c, task, model, tok, backend)
    peer = Peer(name, index, spec, model, tok, backend, opt, held, streams, base["sha256"] or "")
    if t.stale_lag > 0:
        peer.stale_model = copy.deepcopy(model)
        peer.stale_backend = make_backend(t.rollout, tok, task.stop_strings)
        peer.history[0] = _trainable_state(model)
    return peer


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------------------------------
# Generation: who samples which prompts, and the message each generator publishes


@dataclass(frozen=True)
class Work:
    """What one generator samples in one step: `n` completions of each problem, with group ids."""

    group_ids: list[int]
    problems: list
    n: int


def generators(cfg: DictConfig) -> list[str]:
    """Generator ids of every step, in a fixed order: each peer, then each peer's stale checkpoint."""
    names = peer_names(cfg)
    lag = cfg.trainer.stale_lag
    return names + ([f"{n}{SEP}{lag}" for n in names] if lag > 0 else [])


def assign(cfg: DictConfig, task: Task, step: int, streams: Streams) -> dict[str, Work]:
    """The step's prompts, drawn from the run's ("prompts", step) stream (every process and every
    arm with this seed draws the same), split among the generators: whole groups each (vertical),
    or a share of every group (horizontal; G split as evenly as possible, earlier generators taking
    the remainder)."""
    t, gens = cfg.trainer, generators(cfg)
    n_prompts = t.prompts_per_step * len(gens)
    problems = task.sample_problems(streams.rng("prompts", step), n_prompts)
    ids = list(range(n_prompts))
    if t.layout == "vertical":
        k = t.prompts_per_step
        return {
            g: Work(ids[i * k : (i + 1) * k], problems[i * k : (i + 1) * k], t.group_size)
            for i, g in enumerate(gens)
        }
    base, extra = divmod(t.group_size, len(gens))
    return {g: Work(ids, problems, base + (i < extra)) for i, g in enumerate(gens)}


def generate(
    cfg: DictConfig, peer: Peer, task: Task, step: int, generator: str, work: Work
) -> RolloutMessage:
    """Sample `work` with the peer's current weights (or, for "<name>~<k>", its weights k updates
    ago), score it, and pack it as a rollout message. The sampling noise is the run's ("rollout",
    step, generator index) stream."""
    t = cfg.trainer
    stale = SEP in generator
    model, backend, version = peer.model, peer.backend, peer.version
    if stale:
        version = max(0, peer.version - t.stale_lag)
        with torch.no_grad():
            params = dict(peer.stale_model.named_parameters())
            for k, v in peer.history[version].items():
                params[k].copy_(v)
        model, backend = peer.stale_model, peer.stale_backend
    empty = work.n == 0 or not work.problems
    roll = None
    if not empty:
        roll = backend.generate(
            model,
            [p.prompt for p in work.problems],
            n=work.n,
            max_new_tokens=t.max_new_tokens,
            temperature=t.temperature,
            generator=peer.streams.gen("rollout", step, generators(cfg).index(generator)),
        ).to("cpu")  # messages are built from host memory
    S = 0 if roll is None else roll.completion_ids.shape[0]
    local_group = torch.arange(len(work.problems)).repeat_interleave(work.n)  # (S,)
    if roll is None:
        rewards = np.zeros((0, len(cfg.reward)), dtype=np.float32)
    else:
        answers = [p.answer for p in work.problems for _ in range(work.n)]
        ctx = RewardContext(roll.texts, answers, local_group, task.verify)
        rewards = torch.stack([REWARDS[c.name](ctx, **c.kw) for c in cfg.reward], -1).numpy()  # (S, K)
    prompts, completions, logps, masks = [], [], [], []
    if roll is not None:
        for g in range(len(work.problems)):
            row = g * work.n
            prompts.append(roll.prompt_ids[row][roll.prompt_mask[row].bool()].numpy())
        mask = roll.completion_mask  # (S, T)
        T = mask.shape[1]
        # Up to the last valid token; a sampled pad token inside stays, masked.
        lengths = torch.where(mask.any(1), T - mask.flip(1).int().argmax(1), 0)  # (S,)
        for i in range(S):
            completions.append(roll.completion_ids[i, : lengths[i]].numpy())
            logps.append(roll.sampler_logp[i, : lengths[i]].float().numpy())
            masks.append(mask[i, : lengths[i]].numpy())
    return RolloutMessage(
        generator=generator,
        step=step,
        policy_version=version,
        group_ids=np.asarray(work.group_ids if roll is not None else [], dtype=np.int64),
        prompts=prompts,
        seq_group=local_group.numpy(),
        completions=completions,
        logps=logps,
        masks=masks,
        rewards=np.asarray(rewards, dtype=np.float32).reshape(S, len(cfg.reward)),
    )


# ---------------------------------------------------------------------------------------------
# Learning: one optimizer step on the pooled groups


def assemble(msgs: list[RolloutMessage], pad: int) -> tuple[Rollout, torch.Tensor, torch.Tensor, list[str]]:
    """The messages as one batch: (rollout, rewards (B, K), global group ids (B,), generator of
    each sequence)."""
    prompt_rows, comp_rows, logp_rows, mask_rows, rewards, groups, gens = [], [], [], [], [], [], []
    for m in msgs:
        for i, comp in enumerate(m.completions):
            g = int(m.seq_group[i])
            prompt_rows.append(torch.as_tensor(m.prompts[g]))
            comp_rows.append(torch.as_tensor(comp))
            logp_rows.append(torch.as_tensor(m.logps[i]))
            mask_rows.append(torch.as_tensor(m.masks[i]))
            groups.append(int(m.group_ids[g]))
            gens.append(m.generator)
        rewards.append(torch.as_tensor(m.rewards))
    B = len(comp_rows)
    P = max((len(p) for p in prompt_rows), default=1)
    T = max(1, max((len(c) for c in comp_rows), default=1))
    prompt_ids = torch.full((B, P), pad, dtype=torch.long)
    prompt_mask = torch.zeros(B, P, dtype=torch.long)
    comp_ids = torch.full((B, T), pad, dtype=torch.long)
    sampler_logp = torch.zeros(B, T)
    mask = torch.zeros(B, T, dtype=torch.bool)
    for i in range(B):
        p, c = prompt_rows[i], comp_rows[i]
        prompt_ids[i, P - len(p) :] = p
        prompt_mask[i, P - len(p) :] = 1
        comp_ids[i, : len(c)] = c
        sampler_logp[i, : len(c)] = logp_rows[i]
        mask[i, : len(c)] = mask_rows[i]
    roll = Rollout(prompt_ids, prompt_mask, comp_ids, mask, sampler_logp, [""] * B)
    return roll, torch.cat(rewards).float(), torch.tensor(groups), gens


def learn(cfg: DictConfig, peer: Peer, step: int, msgs: list[RolloutMessage]) -> dict[str, float | Share]:
    """One optimizer step of `peer` on the groups it pools; returns its train/* metrics (ratios as
    Share, pooled over the step's micro-batches) and adds its shares to the peer's run totals."""
    t = cfg.trainer
    if t.pool == "own":
        msgs = [m for m in msgs if m.owner == peer.name]
    roll, rewards, group, gens = assemble(msgs, peer.tok.pad_token_id)
    B = len(gens)
    if B == 0:
        return {}
    device = peer.model.device
    roll = roll.to(device)
    # (B,) sampled by the learner's current weights
    own = torch.tensor([g == peer.name for g in gens], device=device)
    mask = roll.completion_mask  # (B, T)
    # 3. Advantages over whole groups, whichever peer sampled each member (before any filtering).
    adv = ADVANTAGES[cfg.advantage.name](rewards, group, **cfg.advantage.kw).to(device)  # (B,)

    coef = aggregation_coef(cfg, mask) if t.microbatch else None  # (B, T)
    chunks = torch.arange(B).split(t.microbatch or B)
    rescue = peer.streams.gen("rescue", step, peer.index, device=device)  # a stochastic objective's noise
    peer.opt.zero_grad(set_to_none=True)
    logp_all = torch.zeros(mask.shape, device=device)  # (B, T) at the sampling temperature
    keep_all = torch.ones(B, device=device)
    per_chunk: list[dict[str, float | Share]] = []
    loss_total = 0.0
    for idx in chunks:
        idx = idx.to(device)
        logits = sequence_logits(peer.model, roll, idx)  # (b, T, V)
        logp = token_logp(logits, roll.completion_ids[idx])  # (b, T)
        # The generator's log-probs are at the sampling temperature: compare like with like.
        at_T = logp if t.temperature == 1 else token_logp(logits, roll.completion_ids[idx], t.temperature)
        m = mask[idx]  # (b, T)
        sampler_logp = roll.sampler_logp[idx]  # (b, T)
        keep, _ = IS_FILTERS[t.filter.name](at_T.detach(), sampler_logp, m, adv[idx], **t.filter.kw)  # (b,)
        # One step per batch: the learner's own log-probs as old_logp give the ratio 1 (PPO clipping
        # inactive); ratio_vs=generator clips the learner/generator ratio instead (at the sampling
        # temperature, as the generator's log-probs are).
        pg_logp, old = (at_T, sampler_logp) if t.ratio_vs == "generator" else (logp, logp.detach())
        loss, stats = pg_loss(
            cfg,
            pg_logp,
            old,
            adv[idx],
            m,
            at_T,
            sampler_logp,
            generator=rescue,
            keep=keep,
            agg_coef=None if coef is None else coef[idx],
        )
        if not torch.isfinite(loss):
            raise NonFiniteError(f"peer {peer.name}: non-finite loss {loss.item()} at step {step}")
        loss.backward()
        with torch.no_grad():
            ent = (token_entropy(logits.detach()) * m).sum()
        per_chunk.append(stats | {"entropy": Share(ent.cpu(), m.sum().float().cpu())})
        loss_total += float(loss.detach())
        logp_all[idx] = at_T.detach()
        keep_all[idx] = keep.detach().to(keep_all.dtype)
    grad_norm = _clip_and_step(peer, t, step)
    peer.version += 1
    if t.stale_lag > 0:
        peer.history[peer.version] = _trainable_state(peer.model)
        for v in [v for v in peer.history if v < peer.version - t.stale_lag]:
            del peer.history[v]

    pooled, shares = pool(per_chunk)
    means = {k: v for k, v in pooled.items() if k not in shares}  # e.g. ratio_max
    shares |= _diagnostics(cfg, logp_all, roll.sampler_logp, mask, adv, keep_all, own)
    for k, v in shares.items():  # the run's totals
        peer.shares[k] = peer.shares[k] + v if k in peer.shares else v
    metrics: dict[str, float | Share] = {
        "train/loss": loss_total,
        "train/grad_norm": grad_norm,
        "train/n_seq": float(B),
    }
    metrics |= {f"train/{k}": v for k, v in means.items()}
    metrics |= {f"train/{k}": v for k, v in shares.items()}
    metrics |= _kl_summaries(cfg, logp_all, roll.sampler_logp, mask, own, shares)
    return metrics


def _clip_and_step(peer: Peer, t: DictConfig, step: int) -> float:
    """The gradients are accumulated already: clip and step (optimizer_step without backward)."""
    params = [p for p in peer.model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
    if not torch.isfinite(grad_norm):
        raise NonFiniteError(f"peer {peer.name}: non-finite grad norm at step {step}")
    peer.opt.step()
    return grad_norm.item()


def _diagnostics(cfg, logp, sampler_logp, mask, adv, keep, own) -> dict[str, Share]:
    """Shares of one batch, for own and other peers' samples apart: learner-generator KL (mean k3
    per token, `kl_<side>`; per completion, summed over its tokens, `kl_seq_<side>`), tokens with
    rho > C (`trunc_frac_<side>`), completions the filter dropped (`filtered_frac_<side>`) and
    with a positive advantage (`adv_pos_frac_<side>`); and other peers' share of the batch
    (`other_frac`). A side with no samples is left out."""
    out: dict[str, Share] = {}
    cap = float(cfg.is_weight.kw.get("cap", DIAG_CAP))
    kl_tok = k3(logp, sampler_logp, mask)  # (B, T)
    rho = torch.where(mask, logp - sampler_logp, 0.0).exp()  # (B, T)
    kl_seq = sequence_kl(logp, sampler_logp, mask, "seq")  # (B,)
    total = lambda x: x.sum().float().cpu()  # noqa: E731  (0-d, on the host: pooled across peers)
    for side, rows in (("own", own), ("other", ~own)):
        if not rows.any():
            continue
        m = mask[rows]
        n_tok, n_seq = total(m), total(rows)
        out[f"kl_{side}"] = Share(total(kl_tok[rows]), n_tok)
        out[f"kl_seq_{side}"] = Share(total(kl_seq[rows]), n_seq)
        out[f"trunc_frac_{side}"] = Share(total((rho[rows] > cap) & m), n_tok)
        out[f"filtered_frac_{side}"] = Share(total(1 - keep[rows]), n_seq)
        out[f"adv_pos_frac_{side}"] = Share(total(adv[rows] > 0), n_seq)
    out["other_frac"] = Share(total(~own), torch.tensor(float(own.numel())))
    return out


def _kl_summaries(cfg, logp, sampler_logp, mask, own, shares) -> dict[str, float]:
    """train/kl_gap (KL per token, other minus own) when both sides are present; quantiles of the
    other peers' samples' KL in both definitions (per sequence, mean per token)."""
    out: dict[str, float] = {}
    if "kl_own" in shares and "kl_other" in shares:
        out["train/kl_gap"] = float(shares["kl_other"]) - float(shares["kl_own"])
    if (~own).any():
        kl_seq = sequence_kl(logp, sampler_logp, mask, "seq")[~own].cpu()
        tok_mean = sequence_kl(logp, sampler_logp, mask, "token_mean")[~own].cpu()
        for q in (10, 50, 90):
            out[f"train/kl_seq_other_p{q}"] = float(torch.quantile(kl_seq, q / 100))
            out[f"train/kl_token_mean_other_p{q}"] = float(torch.quantile(tok_mean, q / 100))
    return out


# ---------------------------------------------------------------------------------------------
# The loop both modes run: local peers generate, share, learn, evaluate


Metrics = dict[str, float | Share]
Emit = Callable[[int, dict[str, Metrics], dict[str, float]], None]


def run_loop(
    cfg: DictConfig, streams: Streams, peers: list[Peer], task: Task, exchange: Exchange, emit: Emit
) -> dict[str, str]:
    """Steps 1..trainer.steps for the peers hosted here; `emit(step, {peer: metrics}, shared)` after
    the step-0 evaluation and after each step. Returns the peers dropped, by name, with why."""
    t = cfg.trainer
    vocab = len(peers[0].tok) if peers else None
    dropped: dict[str, str] = {}
    fault = os.environ.get("REPRO_COLLAB_KILL")  # tests: "<peer>@<step>": that peer's process dies (SIGKILL)

    emit(0, {p.name: _evaluate(p, 0) for p in peers}, {})
    for step in range(1, t.steps + 1):
        if not peers:
            break
        for p in peers:
            if fault == f"{p.name}@{step}":
                os.kill(os.getpid(), signal.SIGKILL)
        work = assign(cfg, task, step, streams)
        outgoing, gen_s = {}, {}
        for p in peers:
            tic = time.perf_counter()
            mine = [g for g in generators(cfg) if g.split(SEP, 1)[0] == p.name]
            outgoing[p.name] = b"".join(encode(generate(cfg, p, task, step, g, work[g])) for g in mine)
            gen_s[p.name] = time.perf_counter() - tic
        received = exchange.share(step, outgoing)
        dropped |= {n: why for n, why in exchange.dropped.items() if n not in dropped}
        msgs: list[RolloutMessage] = []
        n_bytes = 0
        for sender in sorted(received, key=peer_names(cfg).index):
            if sender in dropped:
                continue
            try:
                got = decode_bundle(received[sender], vocab)
                for m in got:
                    if m.owner != sender or m.step != step:
                        raise MalformedMessage(f"says it is {m.generator!r} at step {m.step}")
            except MalformedMessage as exc:
                dropped[sender] = f"malformed message at step {step}: {exc}"
                log.warning("peer %s dropped: %s", sender, dropped[sender])
                continue
            msgs += got
            n_bytes += len(received[sender])
        n_tok = sum(m.completion_tokens for m in msgs)
        shared = {
            "collab/bytes": float(n_bytes),
            "collab/bytes_per_token": n_bytes / max(1, n_tok),
            "collab/peers_live": float(len(peer_names(cfg)) - len(dropped)),
        }
        # A peer whose messages were rejected leaves: every peer read the same bytes, so all agree.
        for p in [p for p in peers if p.name in dropped]:
            exchange.leave(p.name, dropped[p.name])
            peers.remove(p)
        per_peer: dict[str, Metrics] = {}
        for p in peers:
            own = [m for m in msgs if m.owner == p.name]
            rew = np.concatenate([m.rewards[:, 0] for m in own if m.generator == p.name] or [np.zeros(0)])
            lens = [int(k.sum()) for m in own if m.generator == p.name for k in m.masks]
            tic = time.perf_counter()
            metrics = learn(cfg, p, step, msgs)
            metrics["time/learn_s"] = time.perf_counter() - tic
            metrics["time/gen_s"] = gen_s[p.name]
            if len(rew):
                metrics["train/reward_mean"] = float(rew.mean())
                metrics["rollout/len_mean"] = float(np.mean(lens))
            if step % t.eval_every == 0 or step == t.steps:
                metrics |= _evaluate(p, step)
            per_peer[p.name] = metrics
        emit(step, per_peer, shared)
    return dropped


def _evaluate(peer: Peer, step: int) -> dict[str, float]:
    tic = time.perf_counter()
    out = peer.held.evaluate(peer.model, step, train_states=None)
    out["time/eval_s"] = time.perf_counter() - tic
    return out


def merge(per_peer: dict[str, Metrics], shared: dict[str, float]) -> dict[str, float]:
    """One step's metrics as logged: `peer/<name>/<m>`, every m over the peers (time/* excepted: a
    share pooled as Σ num / Σ den, anything else the mean of the finite values), and the shared
    `collab/*` values."""
    out = dict(shared)
    by_metric: dict[str, list[float | Share]] = {}
    for name in per_peer:
        for k, v in per_peer[name].items():
            out[f"{PEER_PREFIX}{name}/{k}"] = float(v)
            if not k.startswith("time/"):
                by_metric.setdefault(k, []).append(v)
    for k, vs in by_metric.items():
        if all(isinstance(v, Share) for v in vs):
            # Host floats, so that every process pools the same numbers the same way.
            num, den = sum(float(v.num) for v in vs), sum(float(v.den) for v in vs)
            out[k] = num / den if den > 0 else math.nan
        else:
            finite = [float(v) for v in vs if math.isfinite(float(v))]
            out[k] = float(np.mean(finite)) if finite else math.nan
    return out


def to_json(metrics: Metrics) -> dict[str, float | list[float]]:
    """Metrics as JSON values (a Share as [num, den]), for a peer process's metric lines."""
    return {k: [float(v.num), float(v.den)] if isinstance(v, Share) else v for k, v in metrics.items()}


def from_json(metrics: dict[str, float | list[float]]) -> Metrics:
    """Inverse of `to_json` (float64 holds every float32 numerator and denominator exactly)."""
    return {
        k: Share(torch.tensor(v[0], dtype=torch.float64), torch.tensor(v[1], dtype=torch.float64))
        if isinstance(v, list)
        else v
        for k, v in metrics.items()
    }


# ---------------------------------------------------------------------------------------------
# The trainer: local mode here, dist mode through worker processes


def train(cfg: DictConfig, log_: Logger) -> dict[str, object]:
    t = cfg.trainer
    if t.exchange == "dist":
        return train_dist(cfg, log_)
    streams = seed_run(cfg)
    check_peers(cfg)
    peers = build_all(cfg, streams)
    task = build_task(cfg.task, peers[0].tok)
    last: dict[str, dict[str, float]] = {}
    tic = time.time()

    def emit(step, per_peer, shared):
        for name, m in per_peer.items():
            last.setdefault(name, {}).update({k: v for k, v in m.items() if k.startswith(_EVAL_KEYS)})
        log_(merge(per_peer, shared), step)
        acc = merge({n: last[n] for n in last}, {}).get("eval/id/greedy_acc", float("nan"))
        log_.progress(step, t.steps, acc=acc)

    dropped = run_loop(cfg, streams, list(peers), task, LocalExchange(), emit)
    shas = {p.name: p.base_sha256 for p in peers}
    return finalize(cfg, last, {p.name: p.shares for p in peers}, shas, dropped, time.time() - tic)


def build_all(cfg: DictConfig, streams: Streams, names: list[str] | None = None) -> list[Peer]:
    """The peers named (default: all), in config order."""
    return [
        build_peer(cfg, spec, i, streams)
        for i, spec in enumerate(cfg.trainer.peers)
        if names is None or str(spec.name) in names
    ]


def check_peers(cfg: DictConfig) -> None:
    """Before any peer trains: every peer's model config is a valid `model` (repro.config.schema;
    ConfigError naming trainer.peers[i].model.<key>), every base exists (micro bases are pretrained
    now, once) and every peer's tokenizer is peer 0's (messages carry token ids)."""
    from pydantic import TypeAdapter, ValidationError
    from transformers import AutoTokenizer

    from repro.config.schema import Model
    from repro.config.schema_errors import first_error

    for i, spec in enumerate(cfg.trainer.peers):
        try:
            TypeAdapter(Model).validate_python(OmegaConf.to_container(spec.model, resolve=True))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            err["loc"] = tuple(p for p in err["loc"] if p not in ("micro", "hf", "gguf_pip"))  # union tags
            key, what = first_error(err, f"trainer.peers[{i}].model")
            raise ConfigError(f"{key}: {what}") from None
    vocab0 = None
    for spec in cfg.trainer.peers:
        c = peer_cfg(cfg, spec)
        if c.model.kind == "micro":
            from repro.models.micro import load_or_pretrain

            tok = AutoTokenizer.from_pretrained(load_or_pretrain(c.task, c.model, c.paths.cache_dir))
        elif c.model.kind == "hf":
            tok = AutoTokenizer.from_pretrained(c.model.path)
        else:
            tok = load_policy(c)[1]
        vocab = tok.get_vocab()
        if vocab0 is not None and vocab != vocab0:
            raise ConfigError(
                f"trainer.peers: peer {spec.name!r} has another tokenizer than peer "
                f"{cfg.trainer.peers[0].name!r}; collaborating peers must share one"
            )
        vocab0 = vocab


def finalize(
    cfg,
    last: dict[str, dict[str, float]],
    run_shares: dict[str, dict[str, Share]],
    shas: dict[str, str],
    dropped: dict[str, str],
    seconds: float,
):
    """The run's final metrics: the last evaluation of every peer (and their means), every share
    pooled over the run (`peer/<name>/run/<stat>`, and over peers `run/<stat>`; `run/kl_gap` =
    run/kl_other - run/kl_own), the base checksums, and who was dropped."""
    final: dict[str, object] = dict(merge(last, {}))
    totals = {n: {f"run/{k}": v for k, v in shares.items()} for n, shares in run_shares.items()}
    final |= merge(totals, {})
    # How much further off-policy other peers' (or stale) samples are than the learner's own.
    for prefix in [f"{PEER_PREFIX}{n}/" for n in totals] + [""]:
        own, other = final.get(f"{prefix}run/kl_own"), final.get(f"{prefix}run/kl_other")
        if own is not None and other is not None:
            final[f"{prefix}run/kl_gap"] = float(other) - float(own)
    for spec in cfg.trainer.peers:
        name, want = str(spec.name), spec.get("base_sha256")
        got = shas.get(name, "")
        final[f"{PEER_PREFIX}{name}/base_sha256"] = got
        if want:
            final[f"{PEER_PREFIX}{name}/base_sha256_ok"] = float(got == want)
            if got != want:
                log.warning(
                    "peer %s: base weights sha256 %s, expected %s (rebuilt differently here)", name, got, want
                )
    final["collab/dropped"] = float(len(dropped))
    if dropped:
        final["collab/dropped_peers"] = "; ".join(f"{n}: {why}" for n, why in sorted(dropped.items()))
        for n, why in sorted(dropped.items()):
            log.warning("peer %s was dropped: %s", n, why)
    final["train/seconds"] = seconds
    return final


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_dist(cfg: DictConfig, log_: Logger) -> dict[str, object]:
    """One worker process per peer (repro.trainers.collab_peer), launched here (`spawn`: this process
    hosts the TCPStore and marks dead workers) or by torchrun; their per-step metrics are merged and
    logged here as they arrive."""
    t = cfg.trainer
    names = peer_names(cfg)
    check_peers(cfg)  # micro bases are pretrained here, once, before the workers start
    cache = Path(str(cfg.paths.cache_dir))
    cache.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="collab-", dir=cache))
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    port = _free_port()
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(len(names)))
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable,
        "-m",
        "repro.trainers.collab_peer",
        "--config",
        str(out / "config.yaml"),
        "--out",
        str(out),
    ]
    store = None
    procs: dict[str, subprocess.Popen] = {}
    tic = time.time()
    try:
        if t.launcher == "spawn":
            store = torch.distributed.TCPStore(
                "127.0.0.1",
                port,
                is_master=True,
                wait_for_workers=False,
                timeout=timedelta(seconds=t.peer_timeout),
            )
            env["REPRO_COLLAB_STORE"] = "external"
            for rank, name in enumerate(names):
                with (out / f"{name}.log").open("w") as f:
                    procs[name] = subprocess.Popen(
                        cmd,
                        env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)),
                        stdout=f,
                        stderr=subprocess.STDOUT,
                    )
        else:
            torchrun = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                f"--nproc-per-node={len(names)}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "--max-restarts=0",
                "--monitor-interval=0.5",
                "-m",
                "repro.trainers.collab_peer",
                *cmd[3:],
            ]
            with (out / "torchrun.log").open("w") as f:
                procs["torchrun"] = subprocess.Popen(torchrun, env=env, stdout=f, stderr=subprocess.STDOUT)
        results = _follow(cfg, out, names, procs, store, log_)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    last, run_shares, shas, dropped = results
    final = finalize(cfg, last, run_shares, shas, dropped, time.time() - tic)
    shutil.rmtree(out, ignore_errors=True)
    return final


def _follow(cfg, out: Path, names: list[str], procs: dict[str, subprocess.Popen], store, log_: Logger):
    """Read the workers' metric lines as they come and log step s once every peer has sent it, has
    finished, or is dead; mark workers that exit abnormally as dead (spawn: the survivors stop
    waiting for them). Returns (last evaluation per peer, run shares per peer, base checksums,
    dropped peers)."""
    t = cfg.trainer
    lines: dict[str, dict[int, dict]] = {n: {} for n in names}
    offsets = dict.fromkeys(names, 0)
    finals: dict[str, dict] = {}
    dead: dict[str, str] = {}
    last: dict[str, dict[str, float]] = {}
    step = 0

    def read_new_lines() -> None:
        for n in names:
            path = out / f"{n}.jsonl"
            if path.exists():
                with path.open("rb") as f:
                    f.seek(offsets[n])
                    chunk = f.read()
                complete = chunk[: chunk.rfind(b"\n") + 1]
                offsets[n] += len(complete)
                for line in complete.decode().splitlines():
                    rec = json.loads(line)
                    if "final" in rec:
                        finals[n] = rec
                    else:
                        lines[n][rec["step"]] = rec

    while step <= t.steps:
        read_new_lines()
        for n, p in procs.items():
            if n in names and n not in dead and p.poll() not in (None, 0):
                dead[n] = f"process exited with code {p.returncode}"
                log.warning("peer %s: %s", n, dead[n])
                if store is not None:
                    mark_dead(store, n, dead[n])
        done = all(p.poll() is not None for p in procs.values())
        if not done and any(step not in lines[n] and n not in dead and n not in finals for n in names):
            time.sleep(0.2)
            continue
        per_peer = {n: from_json(lines[n][step]["metrics"]) for n in names if step in lines[n]}
        if per_peer:
            shared = next(lines[n][step]["shared"] for n in names if step in lines[n])
            for n, m in per_peer.items():
                last.setdefault(n, {}).update({k: v for k, v in m.items() if k.startswith(_EVAL_KEYS)})
            log_(merge(per_peer, shared), step)
            log_.progress(step, t.steps)
        step += 1
    for p in procs.values():
        p.wait()
    read_new_lines()  # a peer writes its final line after its last step's: read it once it has exited
    if not finals:
        tails = "\n".join(f"--- {p.name}:\n" + p.read_text()[-3000:] for p in sorted(out.glob("*.log")))
        raise RuntimeError(f"every collaborating peer failed:\n{tails}")
    dropped = dict(dead)
    for rec in finals.values():
        for n, why in rec["dropped"].items():
            dropped.setdefault(n, why)
    shas = {n: rec["base_sha256"] for n, rec in finals.items()}
    run_shares = {n: from_json(rec["shares"]) for n, rec in finals.items()}
    return last, run_shares, shas, dropped


def worker_main(config_path: str, out_dir: str) -> None:
    """A peer's process (python -m repro.trainers.collab_peer): RANK picks the peer; the gloo group
    lives on the TCPStore at MASTER_ADDR:MASTER_PORT (hosted by the launcher or torchrun's agent;
    by rank 0 when started by hand without REPRO_COLLAB_STORE). Writes <out>/<peer>.jsonl."""
    from repro import config
    from repro.trainers.collab_wire import GlooExchange

    cfg = OmegaConf.load(config_path)
    config.import_paper_modules(cfg.paths.root, cfg.get("paper"))
    rank = int(os.environ["RANK"])
    names = peer_names(cfg)
    name = names[rank]
    hosted_elsewhere = os.environ.get("REPRO_COLLAB_STORE") == "external" or os.environ.get(
        "TORCHELASTIC_USE_AGENT_STORE", ""
    ).lower() in ("true", "1")
    store = torch.distributed.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=rank == 0 and not hosted_elsewhere,
        timeout=timedelta(seconds=cfg.trainer.peer_timeout),
        wait_for_workers=False,
    )
    streams = seed_run(cfg)
    (peer,) = build_all(cfg, streams, [name])
    task = build_task(cfg.task, peer.tok)
    sink = (Path(out_dir) / f"{name}.jsonl").open("a")

    def emit(step, per_peer, shared):
        sink.write(json.dumps({"step": step, "metrics": to_json(per_peer[name]), "shared": shared}) + "\n")
        sink.flush()

    exchange = GlooExchange(store, name, names, cfg.trainer.peer_timeout)
    try:
        dropped = run_loop(cfg, streams, [peer], task, exchange, emit)
    finally:
        exchange.close()
    final = {"final": True, "dropped": dropped, "base_sha256": peer.base_sha256}
    sink.write(json.dumps(final | {"shares": to_json(peer.shares)}) + "\n")
    sink.close()


TRAINERS.register("collab_grpo")(TrainerSpec(train=train))
