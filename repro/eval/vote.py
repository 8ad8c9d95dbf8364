"""Votes and self-certainty on held-out problems: is a label-free reward informative here?

    vote = VoteEval.build(cfg, task, backend)          # when trainer.vote_samples > 0
    metrics = vote.evaluate(model, step)               # eval/<split>/maj_acc, pass1_acc, ...

Per held-out problem it samples `trainer.vote_samples` completions (temperature 1, a fixed seed per
run and step, on a private random stream so training's stream is untouched) and reports:
    maj_acc         the plurality answer (ties: first seen) is right: maj@G
    pass1_acc       mean correctness of the G samples (pass@1 estimated from G samples)
    maj_gain        maj_acc - pass1_acc: > 0 is what makes a vote a signal
    cert_corr       within-problem correlation of a sample's self-certainty with its correctness
                    (both centred per problem, pooled): what a group-normalised self-certainty
                    reward rewards; NaN when no problem has mixed outcomes
    cert_mean       mean self-certainty of the samples (nats)
    plurality_share mean share of the samples in the plurality answer (answer-space concentration)
    parseable       share of samples with a parseable answer
"""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig

from repro.algos.label_free import (
    PolicyView,
    answer_extractor,
    group_votes,
    masked_token_mean,
    token_self_certainty,
)
from repro.rollout import sequence_logits


def within_group_corr(x: torch.Tensor, y: torch.Tensor, group: torch.Tensor) -> float:
    """Pearson correlation of x and y after centring both within each group (pooled); NaN if
    either has no within-group variation."""
    _, gi = torch.unique(group, return_inverse=True)
    G = int(gi.max()) + 1 if gi.numel() else 0
    out = []
    for v in (x.double(), y.double()):
        count = torch.zeros(G, dtype=v.dtype).index_add_(0, gi, torch.ones_like(v))
        mean = torch.zeros(G, dtype=v.dtype).index_add_(0, gi, v) / count
        out.append(v - mean[gi])
    cx, cy = out
    den = math.sqrt(float((cx * cx).sum()) * float((cy * cy).sum()))
    return float((cx * cy).sum()) / den if den > 0 else float("nan")


class VoteEval:
    """maj@G, pass@1 and self-certainty vs correctness on the task's first eval split."""

    def __init__(self, cfg: DictConfig, task, backend, split: str, problems: list) -> None:
        self.cfg, self.task, self.backend, self.split, self.problems = cfg, task, backend, split, problems
        self.extract = answer_extractor(task)

    @classmethod
    def build(cls, cfg: DictConfig, task, backend) -> VoteEval:
        split = task.eval_splits[0]
        return cls(cfg, task, backend, split, task.eval_set(split, cfg.trainer.eval_n))

    @torch.no_grad()
    def evaluate(self, model, step: int) -> dict[str, float]:
        t, n = self.cfg.trainer, self.cfg.trainer.vote_samples
        prompts = [p.prompt for p in self.problems]
        with torch.random.fork_rng():  # a private stream: training's random numbers are untouched
            roll = self.backend.generate(
                model,
                prompts,
                n=n,
                max_new_tokens=self.task.eval_max_new_tokens(self.split, t.max_new_tokens),
                temperature=1.0,
                seed=int(self.cfg.seed) * 1000 + step + 7919,  # not the sample_acc eval's seed
            )
        gold = [p.answer for p in self.problems for _ in range(n)]
        group = torch.arange(len(prompts)).repeat_interleave(n)  # (B,)
        correct = torch.tensor([float(self.task.verify(c, a)) for c, a in zip(roll.texts, gold)])  # (B,)
        answers = [self.extract(c) for c in roll.texts]
        cluster, parseable, winners = group_votes(answers, group)
        was_training = model.training
        model.eval()
        view = PolicyView(
            lambda idx: sequence_logits(model, roll, idx), roll.completion_ids, roll.completion_mask
        )
        cert = masked_token_mean(
            view.token_stat(lambda lg, ids: token_self_certainty(lg)), roll.completion_mask
        )
        model.train(was_training)
        maj = [
            float(winners[i * n] is not None and self.task.verify(f"#### {winners[i * n]}", p.answer))
            for i, p in enumerate(self.problems)
        ]
        maj_acc = sum(maj) / max(1, len(maj))
        pass1 = correct.mean().item()
        share = _plurality(cluster, group) / n  # (B,) the same for every sample of a problem
        key = f"eval/{self.split}"
        return {
            f"{key}/maj_acc": maj_acc,
            f"{key}/pass1_acc": pass1,
            f"{key}/maj_gain": maj_acc - pass1,
            f"{key}/cert_corr": within_group_corr(cert, correct, group),
            f"{key}/cert_mean": cert.mean().item(),
            f"{key}/plurality_share": share.view(-1, n)[:, 0].mean().item(),
            f"{key}/parseable": sum(a is not None for a in answers) / max(1, len(answers)),
        }


def _plurality(cluster: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Per completion, the largest cluster size in its group."""
    _, gi = torch.unique(group, return_inverse=True)
    G = int(gi.max()) + 1 if gi.numel() else 0
    top = torch.zeros(G).scatter_reduce_(0, gi, cluster, "amax", include_self=False)
    return top[gi]


__all__ = ["VoteEval", "within_group_corr"]
