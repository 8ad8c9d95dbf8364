"""The evaluator every trainer shares, on any task (repro.tasks.Task), micro world or GSM8K.

    held = HeldOut.build(cfg, task, model, tok, backend)    # eval sets + the base model's states
    metrics = held.evaluate(model, step, train_states)      # eval/*, retention/*, drift/*, drift_policy/*
    accuracy(model, backend, problems, verify, greedy=True, max_new_tokens=24)   # one split
    split_accuracies(model, backend, {"id": ..., "ood": ...}, budgets, verify, greedy=True)  # one pass
    split_results(...)                                      # ... and each split's truncated share
    mc_accuracy(model, tok, items)                          # log-likelihood multiple choice

Eval metrics: eval/<split>/{greedy,sample}_acc and eval/<split>/truncated_frac (greedy completions
cut by the budget before EOS) for the task's eval_splits, eval/retention/<name>_acc
for its retention_tasks (id, ood, facts, truths in the micro world; id (GSM8K test),
truthfulqa_mc1, mmlu on real data), forgetting/retention against the step-0 evaluation (eq. 12)
and state drift against the base model's own rollouts. A run that starts from a checkpoint saved
with its reference (`reference.json`, written by `save_checkpoint`; a chained `stages: {init: ...}`
run) measures both against the chain's origin instead: the model the first stage started from.
Real-model benchmarks through lm-eval (`repro eval`) are repro.eval.lm_eval_tasks and repro.eval.run.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from repro.metrics import (
    drift_report,
    drop_words,
    featurize,
    forgetting,
    mmd2_unbiased,
    prefix_states,
    retention_report,
    within_bandwidth,
)
from repro.progress import ProgressReport
from repro.rollout import HFGenerateBackend, truncated
from repro.streams import Streams
from repro.tasks import Task

DRIFT_SEED = "drift"  # the fixed prompt set the drift metrics roll out on
REFERENCE_FILE = "reference.json"  # in a checkpoint dir: the origin's retention scores and states
# What makes two runs' base states comparable: the same drift prompts, seed and rollout length.
_REFERENCE_KEYS = ("seed", "drift_n", "drift_every", "max_new_tokens")

log = logging.getLogger(__name__)


class ItemScores(float):
    """An accuracy that keeps its items: the float is the share correct, `correct` the per-item
    0/1 results in the eval set's fixed order (bool array). The run logger stores them compactly in
    the record (`items`), so tables can resample items as well as seeds; anything else sees a float."""

    correct: np.ndarray

    def __new__(cls, correct) -> ItemScores:
        bits = np.asarray(correct, dtype=bool).reshape(-1)
        obj = super().__new__(cls, bits.mean() if bits.size else math.nan)
        obj.correct = bits
        return obj


@torch.no_grad()
def accuracy(
    model,
    backend: HFGenerateBackend,
    problems,
    verify,
    *,
    greedy: bool,
    max_new_tokens: int,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> ItemScores:
    """Share of `problems` whose completion `verify` accepts (greedy, or sampled with `generator`,
    else with `seed`), with its per-item results."""
    roll = backend.generate(
        model,
        [p.prompt for p in problems],
        n=1,
        max_new_tokens=max_new_tokens,
        temperature=1.0,
        greedy=greedy,
        **({"generator": generator} if generator is not None else {"seed": seed}),
    )
    return ItemScores([bool(verify(t, p.answer)) for t, p in zip(roll.texts, problems)])


def split_accuracies(
    model,
    backend: HFGenerateBackend,
    splits: dict[str, list],
    budgets: dict[str, int],
    verify,
    *,
    greedy: bool,
    generator: torch.Generator | None = None,
) -> dict[str, ItemScores]:
    """`accuracy` of every split in `splits` from one generate call (`split_results` without the
    truncated shares)."""
    return split_results(model, backend, splits, budgets, verify, greedy=greedy, generator=generator)[0]


@torch.no_grad()
def split_results(
    model,
    backend: HFGenerateBackend,
    splits: dict[str, list],
    budgets: dict[str, int],
    verify,
    *,
    greedy: bool,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, ItemScores], dict[str, float]]:
    """(accuracy, truncated share) of every split in `splits` from one generate call over all their
    prompts, at the largest budget; each split's completions are then cut to its own budget
    (`budgets`), which leaves them as a call at that budget would have made them (a token never
    depends on later ones), and scored. The truncated share is that of completions cut by the
    split's budget without EOS (repro.rollout.truncated): answers the budget may have cut off."""
    problems = [p for probs in splits.values() for p in probs]
    roll = backend.generate(
        model,
        [p.prompt for p in problems],
        n=1,
        max_new_tokens=max(budgets.values()),
        temperature=1.0,
        greedy=greedy,
        generator=generator,
    )
    lens = roll.completion_mask.sum(1)  # (B,)
    acc, cut, start = {}, {}, 0
    for split, probs in splits.items():
        rows = slice(start, start + len(probs))
        start += len(probs)
        texts = _cut(backend.tok, roll, rows, budgets[split])
        acc[split] = ItemScores([bool(verify(t, p.answer)) for t, p in zip(texts, probs)])
        cut_rows = truncated(roll.completion_ids[rows], lens[rows], budgets[split], backend.tok.eos_token_id)
        cut[split] = cut_rows.mean().item() if len(probs) else math.nan
    return acc, cut


def _cut(tok, roll, rows: slice, budget: int) -> list[str]:
    """Texts of the completions in `rows`, cut to their first `budget` tokens (re-decoded only
    where a completion is longer)."""
    texts = roll.texts[rows]
    mask = roll.completion_mask[rows]  # (b, T)
    longer = mask[:, budget:].any(1).nonzero().squeeze(1).tolist()
    if longer:
        ids = roll.completion_ids[rows][longer, :budget].masked_fill(~mask[longer, :budget], tok.pad_token_id)
        for i, text in zip(longer, tok.batch_decode(ids, skip_special_tokens=True)):
            texts[i] = text
    return texts


def mc_accuracy(model, tok, items, batch_size: int | None = None) -> ItemScores:
    """Share of items whose gold choice has the highest summed log-likelihood after the prompt,
    with its per-item results."""
    return mc_results(model, tok, items, batch_size)[0]


def mc_results(model, tok, items, batch_size: int | None = None) -> tuple[ItemScores, float]:
    """(accuracy as `mc_accuracy`, mean gold margin): the margin is, per item, the gold choice's
    summed log-likelihood minus the best other choice's (> 0 where the item is right), averaged
    over items. A continuous score beside the accuracy: it moves before an item flips, so it shows
    forgetting that an accuracy near its ceiling or floor cannot. NaN without items."""
    if not items:
        return ItemScores([]), math.nan
    scores = mc_scores(model, tok, items, batch_size)
    right = ItemScores([s.argmax().item() == it.gold for s, it in zip(scores, items)])
    return right, gold_margin(scores, [it.gold for it in items])


def gold_margin(scores: list[torch.Tensor], golds: list[int]) -> float:
    """Mean over items of score[gold] - max(score[other choices])."""
    margins = []
    for s, gold in zip(scores, golds, strict=True):
        others = torch.cat([s[:gold], s[gold + 1 :]])
        margins.append(float(s[gold] - others.max()))
    return sum(margins) / len(margins)


@torch.no_grad()
def mc_scores(model, tok, items, batch_size: int | None = None) -> list[torch.Tensor]:
    """Per item, the summed log-likelihood of each choice's tokens after the prompt; all
    (item, choice) texts in one forward pass, or `batch_size` texts at a time (long prompts)."""
    texts, owners, n_prompt = [], [], []
    for i, it in enumerate(items):
        plen = len(tok(it.prompt)["input_ids"])
        for c in it.choices:
            texts.append(f"{it.prompt} {c}")
            owners.append(i)
            n_prompt.append(plen)
    was_training = model.training
    model.eval()
    step = batch_size or len(texts)
    scores = torch.cat(
        [
            _choice_logp(model, tok, texts[i : i + step], n_prompt[i : i + step])
            for i in range(0, len(texts), step)
        ]
    )
    model.train(was_training)
    return list(scores.split([len(it.choices) for it in items]))


def _choice_logp(model, tok, texts: list[str], n_prompt: list[int]) -> torch.Tensor:
    """(B,) summed log-likelihood of the tokens after the first n_prompt[i] of each text."""
    old_side = tok.padding_side
    tok.padding_side = "right"
    enc = tok(texts, return_tensors="pt", padding=True)
    tok.padding_side = old_side
    logits = model(
        **{k: v.to(model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    ).logits
    ids = enc["input_ids"].to(logits.device)
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    logp = logp.cpu()
    pos = torch.arange(logp.shape[1])[None, :] + 1  # position of the predicted token
    lengths = enc["attention_mask"].sum(1)
    choice_mask = (pos >= torch.tensor(n_prompt)[:, None]) & (pos < lengths[:, None])
    return (logp * choice_mask).sum(1)


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
    # The RBF bandwidth of every drift MMD of this run: fixed once from the base model's states
    # (`base_bandwidth`), so every evaluation and every arm of a base share one kernel.
    bandwidth: float | None = field(default=None)
    # The base model's sampled completions of the drift prompts, and the bandwidth of their
    # style-free states (drift_policy/mmd2_nostyle; None where the task has no style words).
    base_completions: list[str] | None = field(default=None)
    bandwidth_nostyle: float | None = field(default=None)
    _base_nostyle: np.ndarray | None = field(default=None, init=False, repr=False)  # featurized once

    @classmethod
    def build(cls, cfg: DictConfig, task: Task, model, tok, backend: HFGenerateBackend) -> HeldOut:
        """The eval sets of `task` (sizes from cfg.trainer) and `model`'s own states, before training."""
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
        origin = held.origin_reference()
        if origin is None:
            held.base_completions = held.policy_completions(model)
            held.base_states = states_of(held.drift_prompts, held.base_completions, t.drift_every)
            held.bandwidth, held.bandwidth_nostyle = held.base_bandwidth(model)
        else:
            held.base_states, held.base_retention = list(origin["states"]), dict(origin["retention"])
            held.base_completions = origin.get("completions")
            # References saved before the fixed bandwidth: the median within the origin's states.
            held.bandwidth = origin.get("bandwidth") or within_bandwidth(featurize(held.base_states))
            held.bandwidth_nostyle = origin.get("bandwidth_nostyle")
        return held

    def base_bandwidth(self, model) -> tuple[float, float | None]:
        """(bandwidth, bandwidth of the style-free states) of this run's drift kernel: the median
        pairwise distance within the base model's greedy states on the drift prompts
        (metrics.drift.within_bandwidth). Greedy, so that it is the same for every arm of a base:
        the sampled states are not (the engine and transformers.generate, which LoRA arms go
        through, draw differently from one seed)."""
        t = self.cfg.trainer
        prompts = self.drift_prompts
        roll = self.backend.generate(model, prompts, n=1, max_new_tokens=t.max_new_tokens, greedy=True)
        greedy = within_bandwidth(featurize(states_of(self.drift_prompts, roll.texts, t.drift_every)))
        style = tuple(self.task.style_words)
        if not style:
            return greedy, None
        plain = states_of(self.drift_prompts, drop_words(roll.texts, style), t.drift_every)
        return greedy, within_bandwidth(featurize(plain))

    def _reference_settings(self) -> dict:
        t = self.cfg.trainer
        return {"seed": self.cfg.seed, "drift_n": t.drift_n, "drift_every": t.drift_every,
                "max_new_tokens": t.max_new_tokens}  # fmt: skip

    def reference(self) -> dict:
        """What later stages measure against (saved beside a checkpoint): the base retention
        scores, states, completions and drift bandwidths of this run, i.e. of its own origin, with
        the settings they were made under."""
        return {
            **self._reference_settings(),
            "retention": self.base_retention,
            "states": self.base_states,
            "completions": self.base_completions,
            "bandwidth": self.bandwidth,
            "bandwidth_nostyle": self.bandwidth_nostyle,
        }

    def origin_reference(self) -> dict | None:
        """The reference saved with the starting checkpoint (`model.path`/reference.json) when
        its settings match this run's; None (measure the starting model) otherwise."""
        path = self.cfg.model.get("path")
        file = Path(str(path)) / REFERENCE_FILE if path else None
        if file is None or not file.exists():
            return None
        ref = json.loads(file.read_text())
        mine = self._reference_settings()
        if {k: ref.get(k) for k in _REFERENCE_KEYS} != mine or not ref.get("retention"):
            log.warning("%s: made under other settings than %s; measuring against the start", file, mine)
            return None
        return ref

    def demo_states(self, style: str) -> list[str]:
        """Prefix states of SFT demonstrations (in `style`) on the drift prompts (fixed, off-policy)."""
        demos = self.task.sft_examples(random.Random(DRIFT_SEED), self.cfg.trainer.drift_n, style)
        return states_of([p for p, _ in demos], [c for _, c in demos], self.cfg.trainer.drift_every)

    def policy_states(self, model) -> list[str]:
        """Prefix states of `model`'s own sampled rollouts on the fixed drift prompts (fixed seed)."""
        return states_of(self.drift_prompts, self.policy_completions(model), self.cfg.trainer.drift_every)

    def policy_completions(self, model) -> list[str]:
        """`model`'s own sampled completions of the fixed drift prompts (fixed seed)."""
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
        return roll.texts

    def evaluate(self, model, step: int, train_states: list[str] | None) -> dict[str, float]:
        """Target accuracy, retention, forgetting vs step 0, and drift of the training states
        (None: the policy's own states, as in on-policy training) and of the policy's own states
        against the base model's states."""
        t, out = self.cfg.trainer, {}
        streams = Streams(int(self.cfg.seed))
        # Minutes on a real model: plain progress lines in a log file after 30 s; silent when quick.
        parts = 2 + len(self.mc) + 1
        progress = ProgressReport(f"evaluation at step {step}", quiet_s=30.0)
        budgets = {s: self.task.eval_max_new_tokens(s, t.max_new_tokens) for s in self.evals}
        kw = dict(verify=self.task.verify)
        # All splits in one batched pass, greedy then sampled (sampling noise of the run's eval
        # stream at this step: the same for every arm).
        greedy, greedy_cut = split_results(model, self.backend, self.evals, budgets, greedy=True, **kw)
        progress(done := 1, parts)
        sampled = split_accuracies(
            model, self.backend, self.evals, budgets, greedy=False, generator=streams.gen("eval", step), **kw
        )
        progress(done := done + 1, parts)
        for split in self.evals:
            out[f"eval/{split}/greedy_acc"], out[f"eval/{split}/sample_acc"] = greedy[split], sampled[split]
            # Greedy completions the split's budget cut before EOS (a gate: <= 1% for rows decided on them).
            out[f"eval/{split}/truncated_frac"] = greedy_cut[split]
        scores = {}
        for name, items in self.mc.items():
            scores[name], out[f"eval/retention/{name}_margin"] = mc_results(
                model, self.tok, items, batch_size=self.task.mc_batch_size
            )
            out[f"eval/retention/{name}_acc"] = scores[name]
            progress(done := done + 1, parts)
        if self.base_retention is None:
            self.base_retention = scores
        out |= retention_metrics(self.base_retention, scores)
        own_completions = self.policy_completions(model)
        own = states_of(self.drift_prompts, own_completions, t.drift_every)
        progress(done + 1, parts)
        fixed = dict(bandwidth=self.bandwidth)
        out |= drift_report(self.base_states, own if train_states is None else train_states, **fixed)
        policy = drift_report(self.base_states, own, **fixed)
        out |= {k.replace("drift/", "drift_policy/"): v for k, v in policy.items()}
        if self.bandwidth_nostyle is not None and self.base_completions is not None:
            out["drift_policy/mmd2_nostyle"] = self.nostyle_mmd2(own_completions)
        return out

    def nostyle_mmd2(self, completions: list[str]) -> float:
        """MMD^2 of the policy's states against the base model's with the task's style words
        (`task.style_words`) dropped from both sides' completions before they are cut into states,
        under the fixed style-free bandwidth: drift that a change of solution style alone cannot show."""
        t, style = self.cfg.trainer, tuple(self.task.style_words)
        if self._base_nostyle is None:  # the base's side is the same at every evaluation
            base = states_of(self.drift_prompts, drop_words(self.base_completions, style), t.drift_every)
            self._base_nostyle = featurize(base)
        own = states_of(self.drift_prompts, drop_words(completions, style), t.drift_every)
        return mmd2_unbiased(self._base_nostyle, featurize(own), bandwidth=self.bandwidth_nostyle)


def retention_metrics(base: dict[str, float], post: dict[str, float]) -> dict[str, float]:
    """retention/forgetting and retention/ratio (eq. 12); the ratio is NaN if a base score is 0."""
    if any(v == 0 for v in base.values()):
        return {"retention/forgetting": forgetting(base, post), "retention/ratio": math.nan}
    return retention_report(base, post)
