"""CIRCA (Joarder et al., arXiv 2605.22620): what is specific to this paper's package.

Everything CIRCA is built from is general and lives in the library: the soft cluster vote, the hard
majority vote and self-certainty (repro/algos/label_free.py), GDPO's per-channel normalisation
(repro/algos/multi_reward.py) and KL-Cov / Clip-Cov (repro/algos/cov_objectives.py). The arms pick
them by name in their YAML files.

Only the popular summary's variant is here, because no paper has it: "penalize any token where the
model assigned >99% probability" (shared/papers/two_rewards_rlif.md, "Popular summary vs paper": the
paper *rewards* confidence). `repro run` imports this module for the paper's jobs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from repro.algos.label_free import masked_token_mean, policy_of
from repro.algos.rewards import REWARDS, RewardContext
from repro.errors import ConfigError


def sampled_token_prob(logits: Tensor, ids: Tensor) -> Tensor:
    """pi(y_t | prefix) of each sampled token: (B, T, V), (B, T) -> (B, T)."""
    return torch.softmax(logits.float(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


@REWARDS.register("confident_token_penalty")
def confident_token_penalty(ctx: RewardContext, *, threshold: float = 0.99) -> Tensor:
    """The popular summary's token reward, NOT the paper's: minus the share of a completion's tokens
    whose sampled token had probability > `threshold` under the current policy, in [-1, 0].

    The summary describes a per-token penalty; the grpo trainer's advantage is per sequence, so the
    penalty is summed over the completion's tokens and divided by its length (DEVIATION: a
    per-token advantage is not implemented). 0.99 is the summary's number."""
    if not 0 < threshold < 1:
        raise ConfigError(f"reward.kw.threshold must be in (0, 1), got {threshold}")
    policy = policy_of(ctx, "confident_token_penalty")
    confident = policy.token_stat(lambda logits, ids: (sampled_token_prob(logits, ids) > threshold).float())
    r = -masked_token_mean(confident, policy.mask)  # (B,)
    stats = ctx.extras.get("stats")
    if stats is not None:
        stats["confident_token_share"] = -r.mean().item()
    return r.to(device=ctx.group.device, dtype=torch.float32)
