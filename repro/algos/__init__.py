"""The policy-gradient step as five registries of small, pure tensor functions.

    reward -> advantage -> is_weight -> objective -> aggregate

plus DISTILL_LOSSES, the per-token losses of SFT-style and on-policy distillation trainers.

Importing this package registers every built-in function; papers add theirs from their own
package with the `register` decorators (e.g. `@RESCUES.register("my_rescue")`, a gradient-weight
rule for the clipped objective, or `@CLIP_STATS.register("my_stats")`, diagnostics it reports).
"""

from repro.algos import advantages, aggregation, distill, is_weights, objectives, rewards  # noqa: F401  (registers)
from repro.algos.advantages import ADVANTAGES
from repro.algos.aggregation import AGGREGATIONS
from repro.algos.distill import DISTILL_LOSSES
from repro.algos.is_weights import IS_WEIGHTS
from repro.algos.objectives import CLIP_STATS, OBJECTIVES, RESCUES
from repro.algos.rewards import REWARDS

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "CLIP_STATS",
    "DISTILL_LOSSES",
    "IS_WEIGHTS",
    "OBJECTIVES",
    "RESCUES",
    "REWARDS",
]
