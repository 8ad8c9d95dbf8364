"""Pieces every trainer shares (grpo, sft, opd, offline_distill, eval_only).

    held = HeldOut.build(cfg, task, model, tok, backend)    # eval sets + the base model's states
    metrics = held.evaluate(model, step, train_states)      # eval/*, retention/*, drift/*, drift_policy/*
    ce_step(model, opt, roll, loss_mat_fn, cfg)             # one clipped optimiser step on a Rollout
    save_checkpoint(cfg, model, tok)                        # <cache_dir>/checkpoints/<hash>/seed<N>/

Eval metrics are those of the grpo trainer (eval/<split>/{greedy,sample}_acc for the task's
eval_splits, eval/retention/<name>_acc for its retention_tasks: id, ood, facts, truths in the micro
world; id (GSM8K test), truthfulqa_mc1, mmlu on real data) plus forgetting/retention against the
step-0 evaluation (eq. 12) and state drift against the base model's own rollouts.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from repro import provenance
from repro.errors import ConfigError, NonFiniteError
from repro.evaluation import accuracy, mc_accuracy
from repro.metrics import drift_report, prefix_states, retention_report
from repro.rollout import HFGenerateBackend, Rollout
from repro.tasks import Task

DRIFT_SEED = "drift"  # the fixed prompt set the drift metrics roll out on


def seed_all(seed: int) -> tuple[random.Random, torch.Generator]:
    """Seed Python, NumPy, torch; return a data rng and a torch generator of the run's own."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return random.Random(seed), torch.Generator().manual_seed(seed)


def need(t: DictConfig, key: str, ok: bool, what: str) -> None:
    """Raise ConfigError naming `trainer.<key>` unless `ok`."""
    if not ok:
        raise ConfigError(f"trainer.{key} {what}, got {OmegaConf.select(t, key)!r}")


def validate_eval(t: DictConfig) -> None:
    """Checks of the keys the shared evaluator (HeldOut) reads; every trainer has them."""
    need(t, "max_new_tokens", t.max_new_tokens >= 1, "must be >= 1")
    need(t, "eval_n", t.eval_n >= 1, "must be >= 1")
    need(t, "drift_n", t.drift_n >= 2, "must be >= 2 (MMD needs two states per side)")
    need(t, "drift_every", t.drift_every >= 1, "must be >= 1")
    need(t, "threads", t.threads >= 1, "must be >= 1")


def validate_common(t: DictConfig) -> None:
    """Checks of the keys every training trainer has (the evaluator's, plus optimiser and schedule)."""
    validate_eval(t)
    need(t, "lr", t.lr > 0, "must be > 0")
    need(t, "grad_clip", t.grad_clip > 0, "must be > 0")
    need(t, "eval_every", t.eval_every >= 1, "must be >= 1")


def validate_lora(t: DictConfig) -> None:
    """`trainer.lora` is null (full fine-tune) or {r, alpha, dropout, target_modules}."""
    if t.get("lora") is None:
        return
    need(t, "lora.r", t.lora.r >= 1, "must be >= 1")
    need(t, "lora.alpha", t.lora.alpha > 0, "must be > 0")
    need(t, "lora.dropout", 0.0 <= t.lora.dropout < 1.0, "must be in [0, 1)")


def with_lora(model, lora: DictConfig | None):
    """`model` unchanged when `lora` is null, else wrapped by peft with only the adapters trainable."""
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
    return get_peft_model(model, peft_cfg)


def states_of(prompts: list[str], completions: list[str], every: int) -> list[str]:
    """Prefix states (prompt + the first k words, every `every` words) of text completions."""
    return prefix_states(prompts, [c.split() for c in completions], every=every)


@dataclass
class HeldOut:
    """Fixed evaluation sets and the base model's reference numbers, built before training."""

    cfg: DictConfig
    task: Task
    tok: object
    backend: HFGenerateBackend
    evals: dict
    mc: dict
    drift_prompts: list[str]  # fixed train prompts the drift metrics roll out on
    base_states: list[str]
    base_retention: dict[str, float] | None = field(default=None)

    @classmethod
    def build(cls, cfg: DictConfig, task: Task, model, tok, backend: HFGenerateBackend) -> HeldOut:
        t = cfg.trainer
        held = cls(
            cfg,
            task,
            tok,
            backend,
            evals={split: task.eval_set(split, t.eval_n) for split in task.eval_splits},
            mc={name: task.mc_items(name) for name in task.retention_tasks},
            drift_prompts=[p for p, _ in task.sft_examples(random.Random(DRIFT_SEED), t.drift_n)],
            base_states=[],
        )
        held.base_states = held.policy_states(model)
        return held

    def demo_states(self, style: str) -> list[str]:
        """Prefix states of SFT demonstrations (in `style`) on the drift prompts (fixed, off-policy)."""
        demos = self.task.sft_examples(random.Random(DRIFT_SEED), self.cfg.trainer.drift_n, style)
        return states_of([p for p, _ in demos], [c for _, c in demos], self.cfg.trainer.drift_every)

    def policy_states(self, model) -> list[str]:
        """Prefix states of `model`'s own sampled rollouts on the fixed drift prompts (fixed seed)."""
        t = self.cfg.trainer
        with torch.random.fork_rng():  # reseeds privately: training's random stream is untouched
            roll = self.backend.generate(
                model,
                self.drift_prompts,
                n=1,
                max_new_tokens=t.max_new_tokens,
                temperature=1.0,
                seed=self.cfg.seed,
            )
        return states_of(self.drift_prompts, roll.texts, t.drift_every)

    def evaluate(self, model, step: int, train_states: list[str] | None) -> dict[str, float]:
        """Target accuracy, retention, forgetting vs step 0, and drift of the training states
        (None: the policy's own states, as in on-policy training) and of the policy's own states
        against the base model's states."""
        t, out = self.cfg.trainer, {}
        for split, probs in self.evals.items():
            max_new = self.task.eval_max_new_tokens(split, t.max_new_tokens)
            kw = dict(verify=self.task.verify, max_new_tokens=max_new)
            out[f"eval/{split}/greedy_acc"] = accuracy(model, self.backend, probs, greedy=True, **kw)
            out[f"eval/{split}/sample_acc"] = accuracy(
                model, self.backend, probs, greedy=False, seed=self.cfg.seed * 1000 + step, **kw
            )
        scores = {}
        for name, items in self.mc.items():
            scores[name] = out[f"eval/retention/{name}_acc"] = mc_accuracy(
                model, self.tok, items, batch_size=self.task.mc_batch_size
            )
        if self.base_retention is None:
            self.base_retention = scores
        out |= retention_metrics(self.base_retention, scores)
        own = self.policy_states(model)
        out |= drift_report(self.base_states, own if train_states is None else train_states)
        policy = drift_report(self.base_states, own)
        out |= {k.replace("drift/", "drift_policy/"): v for k, v in policy.items()}
        return out


def retention_metrics(base: dict[str, float], post: dict[str, float]) -> dict[str, float]:
    """retention/forgetting and retention/ratio (eq. 12); the ratio is NaN if a base score is 0."""
    if any(v == 0 for v in base.values()):
        from repro.metrics import forgetting

        return {"retention/forgetting": forgetting(base, post), "retention/ratio": math.nan}
    return retention_report(base, post)


def optimizer(model, t: DictConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters only (LoRA adapters when the base is frozen)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=t.lr, betas=(0.9, 0.99), weight_decay=t.weight_decay)


def optimizer_step(model, opt, loss: torch.Tensor, t: DictConfig, step_no: int) -> float:
    """Backward, clip, step; raises NonFiniteError on a NaN/inf loss or gradient. Returns grad norm."""
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


def checkpoint_dir(cfg: DictConfig) -> Path:
    """Where a trainer saves its final model: <cache_dir>/checkpoints/<config hash>/seed<N>/.
    The config hash leaves out the seed (repro.provenance), so seeds get their own folder."""
    digest = provenance.config_hash(provenance.portable_config(cfg))[:16]
    return Path(cfg.paths.cache_dir) / "checkpoints" / digest / f"seed{cfg.seed}"


def save_checkpoint(cfg: DictConfig, model, tok) -> Path:
    """save_pretrained the final model (LoRA merged into the weights) and tokenizer; returns the dir.
    Load it later with `model.kind=hf model.path=<dir>` or as `trainer.teacher=<dir>`."""
    out = checkpoint_dir(cfg)
    if hasattr(model, "merge_and_unload"):  # peft: save a plain model later stages can load
        model = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return out
