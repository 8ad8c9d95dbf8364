"""The policy-gradient step as five registries of small, pure tensor functions.

    reward -> advantage -> is_weight -> objective -> aggregate

plus DISTILL_LOSSES, the per-token losses of SFT-style and on-policy distillation trainers, and
IS_FILTERS, per-completion filters of off-policy samples (a trainer that pools other policies'
samples multiplies their keep flags into the IS weight).
Beyond the basic functions of each stage: label-free rewards (label_free.py: answer votes,
self-certainty), per-channel normalisation of several rewards (multi_reward.py: GDPO, channel
shares) and covariance-based objectives (cov_objectives.py: KL-Cov, Clip-Cov).

Importing this package registers every built-in function; papers add theirs from their own
package with the `register` decorators (e.g. `@RESCUES.register("my_rescue")`, a gradient-weight
rule for the clipped objective, or `@CLIP_STATS.register("my_stats")`, diagnostics it reports).
`check_stages(cfg)` checks, before any compute, that the functions a config picks exist and accept
its kwargs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from omegaconf import DictConfig

from repro.algos import (  # noqa: F401  (registers)
    advantages,
    aggregation,
    cov_objectives,
    distill,
    is_weights,
    label_free,
    multi_reward,
    objectives,
    rewards,
)
from repro.algos.advantages import ADVANTAGES
from repro.algos.aggregation import AGGREGATIONS
from repro.algos.distill import DISTILL_LOSSES
from repro.algos.is_weights import IS_FILTERS, IS_WEIGHTS
from repro.algos.objectives import CLIP_STATS, OBJECTIVES, RESCUES
from repro.algos.rewards import REWARDS
from repro.errors import ConfigError
from repro.registry import UnknownNameError

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "CLIP_STATS",
    "DISTILL_LOSSES",
    "IS_FILTERS",
    "IS_WEIGHTS",
    "OBJECTIVES",
    "PG_STAGES",
    "RESCUES",
    "REWARDS",
    "check_stages",
]

PG_STAGES = ("reward", "advantage", "is_weight", "objective", "agg")
"""The stages of the policy-gradient step; "loss" (trainer.loss, a DISTILL_LOSSES name) is the
distillation trainers' one, "filter" (trainer.filter, an IS_FILTERS name) the collaborative one's."""
_REGISTRIES = {"advantage": ADVANTAGES, "is_weight": IS_WEIGHTS, "objective": OBJECTIVES, "agg": AGGREGATIONS}


def check_stages(cfg: DictConfig, stages: Iterable[str] = PG_STAGES) -> None:
    """Raise ConfigError naming the key if a stage the config picks (cfg.reward[i], cfg.advantage,
    cfg.is_weight, cfg.objective, cfg.agg; "loss": cfg.trainer.loss; "filter": cfg.trainer.filter,
    an IS_FILTERS entry) is not registered, or if a
    stage rejects its kwargs on a 2x3 dummy batch: bad settings fail here, not mid-run."""
    stages = tuple(stages)
    picked = []  # (config key, registry, name)
    if "reward" in stages:
        picked += [(f"reward[{i}].name", REWARDS, r.name) for i, r in enumerate(cfg.reward)]
    picked += [(f"{s}.name", reg, cfg[s].name) for s, reg in _REGISTRIES.items() if s in stages]
    if "loss" in stages:
        picked.append(("trainer.loss", DISTILL_LOSSES, cfg.trainer.loss))
    if "filter" in stages:
        picked.append(("trainer.filter.name", IS_FILTERS, cfg.trainer.filter.name))
    for key, reg, name in picked:
        try:
            reg[name]
        except UnknownNameError as e:
            raise ConfigError(f"{key}: {e}") from None
    logp, mask = torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)  # (B, T)
    loss_mat = torch.zeros(2, 3)  # (B, T)
    try:
        if "advantage" in stages:
            K = len(cfg.reward) if cfg.get("reward") else 1  # one column per reward channel
            rewards, group = torch.tensor([[0.0], [1.0]]).repeat(1, K), torch.tensor([0, 0])  # (B, K), (B,)
            ADVANTAGES[cfg.advantage.name](rewards, group, **cfg.advantage.kw)
        if "is_weight" in stages:
            IS_WEIGHTS[cfg.is_weight.name](logp, logp, mask, **cfg.is_weight.kw)
        if "objective" in stages:
            loss_mat, _ = OBJECTIVES[cfg.objective.name](logp, logp, torch.ones(2), mask, **cfg.objective.kw)
        if "agg" in stages:
            AGGREGATIONS[cfg.agg.name](loss_mat, mask, **cfg.agg.kw)
        if "filter" in stages:
            IS_FILTERS[cfg.trainer.filter.name](logp, logp, mask, torch.ones(2), **cfg.trainer.filter.kw)
    except (TypeError, ValueError) as e:
        keys = ", ".join(
            "trainer.filter.kw" if s == "filter" else f"{s}.kw"
            for s in stages
            if s in _REGISTRIES or s in ("reward", "filter")
        )
        raise ConfigError(f"{keys}: bad settings: {e}") from None
