"""Bookkeeping every trainer shares (grpo, collab_grpo, sft, opd, offline_distill, eval_only), so that a
trainer's loop is the algorithm:

    streams = seed_run(cfg)                          # torch threads; seeds; named random streams
    opt = optimizer(model, cfg.trainer)              # AdamW over the trainable parameters
    grad_norm = optimizer_step(model, opt, loss, cfg.trainer, step)   # backward, clip, step
    model = with_lora(model, cfg.trainer.lora, streams.seed_of("init"))   # peft adapters, or the model
    teacher = load_teacher(cfg, tok)                 # the frozen teacher of opd / offline_distill
    batch = encode_pairs(tok, [(context, target)])   # teacher-forcing batch as a Rollout
    mask = cap_supervised(mask, done, t.supervised_tokens)   # a token budget across trainers
    start = weight_snapshot(model); ...; delta_norm(model, start)   # ||theta - theta_0|| (train/delta_norm)
    save_checkpoint(cfg, model, tok, held.reference())   # <cache_dir>/checkpoints/<hash>/seed<N>/

The evaluator they share is repro.eval.micro.HeldOut.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from repro import devices
from repro.errors import ConfigError, NonFiniteError
from repro.eval.micro import REFERENCE_FILE
from repro.io import atomic_write_text
from repro.models import load_policy
from repro.models.micro import load_checkpoint
from repro.provenance import checkpoint_dir
from repro.rollout import Rollout
from repro.streams import Streams


def seed_run(cfg: DictConfig) -> Streams:
    """Use `trainer.threads` torch threads; seed Python, NumPy and torch with `cfg.seed` (for
    anything outside the named streams); return the run's named streams."""
    torch.set_num_threads(cfg.trainer.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    return Streams(int(cfg.seed))


def optimizer(model, t: DictConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters only (LoRA adapters when the base is frozen)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=t.lr, betas=(0.9, 0.99), weight_decay=t.weight_decay)


def optimizer_step(model, opt, loss: torch.Tensor, t: DictConfig, step_no: int) -> float:
    """Backward, clip to `t.grad_clip`, step; raises NonFiniteError on a NaN/inf loss or gradient.
    Returns the gradient norm before clipping."""
    if not torch.isfinite(loss):
        raise NonFiniteError(f"non-finite loss {loss.item()} at step {step_no}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
    if not torch.isfinite(grad_norm):
        raise NonFiniteError(f"non-finite grad norm at step {step_no}")
    opt.step()
    return grad_norm.item()


def with_lora(model, lora: DictConfig | None, seed: int | None = None):
    """`model` unchanged when `lora` is null, else wrapped by peft with only the adapters trainable.
    The adapters' random init draws from torch's global generator: seeded here with `seed` (the
    run's `init` stream) under fork_rng, so it depends on nothing that ran before."""
    if lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    targets = lora.get("target_modules", "all-linear")
    peft_cfg = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return get_peft_model(model, peft_cfg)


def load_teacher(cfg: DictConfig, tok):
    """The frozen teacher named by `trainer.teacher`: a checkpoint dir, a model config, or null
    for the student's own starting model. Its vocabulary must be the student's."""
    spec = cfg.trainer.teacher
    if spec is None:
        teacher, t_tok = load_policy(cfg, frozen=True)
    elif isinstance(spec, str):
        teacher, t_tok = load_checkpoint(spec)
        teacher = devices.place(teacher, *devices.of(cfg), frozen=True)
    else:
        c = cfg.copy()
        with open_dict(c):
            c.model = OmegaConf.create(OmegaConf.to_container(spec, resolve=True))
        teacher, t_tok = load_policy(c, frozen=True)
    if t_tok.get_vocab() != tok.get_vocab():
        raise ConfigError("trainer.teacher: its tokenizer differs from the student's")
    teacher.eval().requires_grad_(False)
    return teacher


def encode_pairs(tok, pairs: list[tuple[str, str]]) -> Rollout:
    """Teacher-forcing batch of (context, target) texts as a Rollout: context left-padded, target
    right-padded and ended with eos, so `sequence_logits` scores exactly the target tokens."""
    ctx = tok([c for c, _ in pairs], return_tensors="pt", padding=True)  # left-padded
    targets = [tok(y, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for _, y in pairs]
    T = max(len(y) for y in targets)
    ids = torch.full((len(pairs), T), tok.pad_token_id)  # (B, T)
    mask = torch.zeros(len(pairs), T, dtype=torch.bool)  # (B, T)
    for i, y in enumerate(targets):
        ids[i, : len(y)] = torch.tensor(y)
        mask[i, : len(y)] = True
    return Rollout(
        ctx["input_ids"], ctx["attention_mask"], ids, mask, torch.zeros(ids.shape), [y for _, y in pairs]
    )


def cap_supervised(mask: torch.Tensor, done: int, budget: int | None) -> torch.Tensor:
    """`mask` (B, T) with only its first `budget - done` supervised tokens kept (in row order: whole
    completions first), so that a run stopping at `budget` (`trainer.supervised_tokens`) learns
    from exactly that many tokens whatever its batch holds; `mask` itself when budget is None."""
    if budget is None:
        return mask
    keep = mask.flatten().cumsum(0) <= max(budget - done, 0)  # (B*T,)
    return mask & keep.view_as(mask)


def weight_snapshot(model) -> dict[str, torch.Tensor] | None:
    """The trainable weights before training (for `delta_norm`), or None for a peft model, whose
    delta is its adapters' own (B starts at 0)."""
    if _lora_layers(model):
        return None
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def delta_norm(model, start: dict[str, torch.Tensor] | None) -> float:
    """||theta - theta_0||_2 over all weights (`train/delta_norm`): for a peft model the merged
    LoRA delta, sum over adapted layers of ||B A * alpha / r||_F^2 (every other weight is frozen),
    else against the `weight_snapshot` taken before training."""
    layers = _lora_layers(model)
    if layers:
        sq = sum(float(m.get_delta_weight(a).float().pow(2).sum()) for m in layers for a in m.active_adapters)
        return math.sqrt(sq)
    if start is None:
        raise ValueError("delta_norm: a model without LoRA adapters needs its weight_snapshot")
    params = dict(model.named_parameters())
    return math.sqrt(sum(float((params[n].detach() - w).float().pow(2).sum()) for n, w in start.items()))


def _lora_layers(model) -> list:
    """The peft LoRA layers of `model` (none for a plain model)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # peft not installed: no model can have adapters
        return []
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def save_checkpoint(cfg: DictConfig, model, tok, reference: dict | None = None) -> Path:
    """save_pretrained the final model (LoRA merged into the weights) and tokenizer; returns the dir.
    Load it later with `model=hf model.path=<dir>` or as `trainer.teacher=<dir>`. `reference`
    (HeldOut.reference()) is saved beside it, so a run starting from it measures forgetting and
    drift against the chain's origin."""
    out = checkpoint_dir(cfg)
    if hasattr(model, "merge_and_unload"):  # peft: save a plain model later stages can load
        model = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if reference is not None:
        atomic_write_text(out / REFERENCE_FILE, json.dumps(reference))
    return out
