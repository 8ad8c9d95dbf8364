"""Stage 1 of the policy-gradient step: score each completion.

    REWARDS[name](ctx, **kw) -> Tensor (B,)

A run may list several rewards (`cfg.reward`, a list of {name, kw}); the trainer stacks them into
the (B, K) channels the advantage stage combines. Label-free rewards (e.g. self-certainty) read
what they need from `ctx.extras`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from repro.registry import Registry

REWARDS = Registry("reward")


@dataclass
class RewardContext:
    """What a reward function may look at for one batch of B completions."""

    completions: list[str]  # B decoded completions
    answers: list[str | None]  # B gold answers; None where the task has none
    group: torch.Tensor  # (B,) long: prompt/group index of each completion
    verify: Callable[[str, str], bool]  # task verifier: (completion, gold answer) -> correct
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. per-sequence self-certainty (B,)

    def __post_init__(self) -> None:
        if len(self.completions) != len(self.answers) or len(self.completions) != self.group.numel():
            raise ValueError(
                f"RewardContext: {len(self.completions)} completions, {len(self.answers)} answers and "
                f"{self.group.numel()} group ids must be the same length"
            )


@REWARDS.register("exact_answer")
def exact_answer(ctx: RewardContext) -> Tensor:
    """1.0 where the task verifier accepts the completion's answer, else 0.0 (no gold answer -> 0.0)."""
    scores = [
        1.0 if answer is not None and ctx.verify(completion, answer) else 0.0
        for completion, answer in zip(ctx.completions, ctx.answers)
    ]
    return torch.tensor(scores, dtype=torch.float32, device=ctx.group.device)  # (B,)


@REWARDS.register("matches")
def matches(ctx: RewardContext, pattern: str = "####") -> Tensor:
    """1.0 where the completion contains the regex `pattern` (a format reward), else 0.0."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"reward.kw.pattern is not a valid regex ({e}): {pattern!r}") from None
    scores = [1.0 if rx.search(c) else 0.0 for c in ctx.completions]
    return torch.tensor(scores, dtype=torch.float32, device=ctx.group.device)  # (B,)
