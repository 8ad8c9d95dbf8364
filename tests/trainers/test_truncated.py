"""`rollout/truncated_frac`: a completion counts as truncated when it used the whole generation
budget without ending in EOS (its answer may be cut off); checked against a per-row reference."""

from __future__ import annotations

import torch
from hydra_helpers import compose, train
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.trainers.grpo import truncated

EOS, PAD = 1, 0


def _reference(rows: list[list[int]], budget: int) -> list[float]:
    return [1.0 if len(r) >= budget and r[-1] != EOS else 0.0 for r in rows]


@settings(max_examples=100, deadline=None)
@given(data=st.data(), budget=st.integers(1, 6), B=st.integers(1, 5))
def test_truncated_matches_the_reference(data, budget, B):
    rows = []
    for _ in range(B):
        n = data.draw(st.integers(0, budget))
        body = data.draw(st.lists(st.integers(2, 9), min_size=n, max_size=n))
        if n and data.draw(st.booleans()):
            body[-1] = EOS  # stopped by EOS (possibly on the budget's last token)
        rows.append(body)
    ids = torch.full((B, budget), PAD)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
    lens = torch.tensor([len(r) for r in rows])
    assert truncated(ids, lens, budget, EOS).tolist() == _reference(rows, budget)


def test_a_tiny_budget_truncates_and_the_share_is_logged():
    """With a 2-token budget almost every completion is cut; the trainer logs the share per step."""
    cfg = compose("experiment=clipping_bottleneck/grpo", "scale=tiny", "trainer.max_new_tokens=2")
    _, curves = train(cfg)
    shares = [v for _, v in curves["rollout/truncated_frac"]]
    assert shares and all(0.0 <= v <= 1.0 for v in shares) and max(shares) > 0.5
