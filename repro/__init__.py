"""repro: rerun the claims of 2026 LLM post-training papers, claim by claim.

The library (`repro/`) is paper-agnostic: tasks, models, rollouts, the five policy-gradient
stages (reward -> advantage -> IS weight -> objective -> aggregation), trainers, tracking and
table generation. Papers live in `experiments/<slug>/` as Hydra configs on top of it.
"""

__version__ = "0.1.0"
