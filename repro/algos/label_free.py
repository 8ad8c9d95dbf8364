"""Label-free rewards (RL from internal feedback): answer votes within a prompt group and the
policy's own self-certainty. No gold answer enters any reward value here.

    REWARDS["soft_vote"](ctx)        # |own answer cluster| / n_parseable in the group; unparseable 0
    REWARDS["majority_vote"](ctx)    # 1 where the own answer is the group's most common one (TTRL)
    REWARDS["self_certainty"](ctx)   # mean over tokens of KL(U || pi(. | prefix)) (INTUITOR)

What they read from `RewardContext.extras` (the grpo trainer fills these for every run; they cost
nothing unless a reward uses them):
    extras["extract_answer"]  text -> canonical final answer or None (`answer_extractor(task)`);
                              votes fall back to `final_answer` when it is absent
    extras["policy"]          a `PolicyView`: the current policy's logits on the rollout's completions,
                              computed on demand in chunks (self-certainty needs the full softmax)
    extras["stats"]           a dict the rewards add diagnostics to; the trainer logs train/<key>

Diagnostics may look at `ctx.answers` (the gold answers) to report how often the vote picks the
right answer (`vote/gold_agree`); the reward values never depend on them (a test checks it).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from repro.algos.rewards import REWARDS, RewardContext
from repro.errors import ConfigError

# --------------------------------------------------------------------------------------------
# Final answers: parse, normalise, cluster.
# --------------------------------------------------------------------------------------------

_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
_STRICT = re.compile(rf"####\s*({_NUMBER})")
_ANY_NUMBER = re.compile(_NUMBER)


def normalize_number(text: str) -> str:
    """'1,234.' -> '1234', '$5' -> '5', '3.50' -> '3.5', '-0' -> '0'; non-numbers are stripped only."""
    s = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        x = float(s)
    except ValueError:
        return s
    if math.isfinite(x) and x == int(x):
        return str(int(x))
    return repr(x)


def final_answer(text: str, *, cut_at: Sequence[str] = (), last_number: bool = False) -> str | None:
    """The completion's final answer, normalised (`normalize_number`), or None if it has none.

    The number after the first `####` (GSM8K's and the micro world's format); with `last_number`,
    else the last number in the text (lm-eval's flexible extraction). The text is first cut at the
    first of `cut_at` (stop strings: a base model starting the next problem)."""
    for stop in cut_at:
        text = text.split(stop, 1)[0]
    m = _STRICT.search(text)
    if m:
        return normalize_number(m.group(1))
    if last_number:
        found = _ANY_NUMBER.findall(text)
        return normalize_number(found[-1]) if found else None
    return None


def answer_extractor(task) -> Callable[[str], str | None]:
    """The task's own `extract_answer` where it has one, else `final_answer` cut at its stop
    strings with the last-number fallback (what GSM8K's verifier accepts)."""
    own = getattr(task, "extract_answer", None)
    if callable(own):
        return own
    stops = tuple(getattr(task, "stop_strings", None) or ())
    return lambda text: final_answer(text, cut_at=stops, last_number=True)


def group_votes(answers: Sequence[str | None], group: Tensor) -> tuple[Tensor, Tensor, list[str | None]]:
    """Per completion: the size of its answer's cluster in its group (0 if unparseable) and the
    number of parseable answers in its group; per completion also its group's plurality answer
    (ties: the answer seen first, as `Counter.most_common`; None when nothing parses).
    Returns (cluster (B,), parseable (B,), winner list of B)."""
    gid = group.tolist()
    counts: dict[int, Counter] = {}
    for g, a in zip(gid, answers):
        c = counts.setdefault(g, Counter())
        if a is not None:
            c[a] += 1
    cluster = [float(counts[g][a]) if a is not None else 0.0 for g, a in zip(gid, answers)]
    parseable = [float(sum(counts[g].values())) for g in gid]
    winners = {g: (c.most_common(1)[0][0] if c else None) for g, c in counts.items()}
    return torch.tensor(cluster), torch.tensor(parseable), [winners[g] for g in gid]


def _answers(ctx: RewardContext) -> list[str | None]:
    extract = ctx.extras.get("extract_answer", final_answer)
    return [extract(c) for c in ctx.completions]


def _vote_stats(ctx: RewardContext, answers: list[str | None], winners: list[str | None]) -> None:
    """Diagnostics only (gold answers never enter a reward): how often the group's plurality answer
    is right, among groups with a parseable answer and a gold answer; the share of parseable answers."""
    stats = ctx.extras.get("stats")
    if stats is None:
        return
    first: dict[int, int] = {}
    for i, g in enumerate(ctx.group.tolist()):
        first.setdefault(g, i)
    judged = [
        ctx.verify(f"#### {winners[i]}", ctx.answers[i])
        for i in first.values()
        if winners[i] is not None and ctx.answers[i] is not None
    ]
    stats["vote/gold_agree"] = sum(judged) / len(judged) if judged else float("nan")
    stats["vote/parseable"] = sum(a is not None for a in answers) / max(1, len(answers))


@REWARDS.register("soft_vote")
def soft_vote(ctx: RewardContext) -> Tensor:
    """Soft cluster vote (CIRCA's answer reward): |own answer's cluster| / parseable answers in the
    group, in [0, 1]; an unparseable completion gets 0 and is left out of the denominator (our
    reading: the paper's treatment of unparseable answers is not public)."""
    answers = _answers(ctx)
    cluster, parseable, winners = group_votes(answers, ctx.group)
    _vote_stats(ctx, answers, winners)
    r = torch.where(parseable > 0, cluster / parseable.clamp(min=1), 0.0)
    return r.to(device=ctx.group.device, dtype=torch.float32)  # (B,)


@REWARDS.register("majority_vote")
def majority_vote(ctx: RewardContext) -> Tensor:
    """Hard majority vote (TTRL, Zuo et al. 2025, arXiv 2504.16084): 1.0 where the completion's
    answer equals its group's most common parseable answer (ties: the first seen), else 0.0."""
    answers = _answers(ctx)
    _, _, winners = group_votes(answers, ctx.group)
    _vote_stats(ctx, answers, winners)
    r = [1.0 if a is not None and a == w else 0.0 for a, w in zip(answers, winners)]
    return torch.tensor(r, dtype=torch.float32, device=ctx.group.device)  # (B,)


# --------------------------------------------------------------------------------------------
# Self-certainty (INTUITOR)
# --------------------------------------------------------------------------------------------


@dataclass
class PolicyView:
    """The current policy's view of a batch of completions, computed on demand.

    `logits(idx)` -> (b, T, V) logits at the completion positions of rows `idx` (teacher forcing);
    `token_stat(fn)` applies fn(logits (b, T, V), ids (b, T)) -> (b, T) over chunks of `chunk` rows
    under no_grad, so a (B, T, V) tensor never has to exist at once (paper-scale vocabularies)."""

    logits: Callable[[Tensor], Tensor]
    completion_ids: Tensor  # (B, T)
    mask: Tensor  # (B, T) bool
    chunk: int = 64

    @torch.no_grad()
    def token_stat(self, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        B = self.completion_ids.shape[0]
        parts = []
        for idx in torch.arange(B).split(self.chunk):
            parts.append(fn(self.logits(idx).float(), self.completion_ids[idx]))
        out = torch.cat(parts) if parts else torch.zeros(self.completion_ids.shape)  # (B, T)
        return out.where(self.mask, 0.0)


def token_self_certainty(logits: Tensor) -> Tensor:
    """KL(U || pi(. | prefix)) per position (nats), (..., V) -> (...):
    -log V - (1/V) sum_j log pi_j  (Zhao et al. 2025, INTUITOR, arXiv 2505.19590, eq. 3 per token).
    0 for a uniform distribution, larger the more peaked. V is the logits' last dimension."""
    V = logits.shape[-1]
    return -math.log(V) - torch.log_softmax(logits.float(), -1).mean(-1)


def sequence_self_certainty(logits: Tensor, mask: Tensor) -> Tensor:
    """Self-certainty of each completion: the mean of `token_self_certainty` over its valid tokens
    (logits (B, T, V), mask (B, T) -> (B,)); 0 for an empty completion."""
    tok = token_self_certainty(logits).where(mask, 0.0)  # (B, T)
    return tok.sum(1) / mask.sum(1).clamp(min=1)


def masked_token_mean(values: Tensor, mask: Tensor) -> Tensor:
    """(B, T) -> (B,) mean over valid tokens; 0 for an empty row."""
    return values.where(mask, 0.0).sum(1) / mask.sum(1).clamp(min=1)


def policy_of(ctx: RewardContext, who: str) -> PolicyView:
    policy = ctx.extras.get("policy")
    if not isinstance(policy, PolicyView):
        raise ConfigError(
            f"reward '{who}' needs the policy's logits (RewardContext.extras['policy'], a PolicyView); "
            "the grpo trainer provides it"
        )
    return policy


@REWARDS.register("self_certainty")
def self_certainty(ctx: RewardContext) -> Tensor:
    """INTUITOR's reward (Zhao et al. 2025, arXiv 2505.19590, eq. 3): the mean over the completion's
    tokens of KL(U || pi(. | prefix)) under the current policy. It *rewards* confident tokens."""
    policy = policy_of(ctx, "self_certainty")
    tok = policy.token_stat(lambda logits, ids: token_self_certainty(logits))  # (B, T)
    r = masked_token_mean(tok, policy.mask)  # (B,)
    stats = ctx.extras.get("stats")
    if stats is not None:
        stats["self_certainty_mean"] = r.mean().item()
    return r.to(device=ctx.group.device, dtype=torch.float32)
