"""Rollout staleness (`trainer.staleness: k`): step s samples with the policy of version
max(0, s - 1 - k), and that lagged policy's log-probs are the ratio's denominator, so clipping binds
even with one update per rollout batch (where on-policy sampling gives ratio exactly 1)."""

from __future__ import annotations

import pytest
import torch
from hydra_helpers import compose, train
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.trainers.grpo import StaleSampler


def _set(model: torch.nn.Module, version: int) -> None:
    with torch.no_grad():
        model.weight.fill_(float(version))


@settings(max_examples=30, deadline=None)
@given(lag=st.integers(1, 4), steps=st.integers(1, 10))
def test_the_sampler_runs_the_version_of_lag_steps_before(lag, steps):
    policy = torch.nn.Linear(2, 2, bias=False)
    _set(policy, 0)
    stale = StaleSampler(policy, lag)
    for s in range(1, steps + 1):
        sampler = stale.policy()
        assert sampler is not policy
        assert sampler.weight.unique().tolist() == [float(max(0, s - 1 - lag))]
        _set(policy, s)  # the step's update: version s
        stale.push(policy)


@pytest.mark.parametrize("lag", [0, 1])
def test_one_update_per_batch_moves_the_ratio_only_when_the_sampler_lags(lag):
    """minibatches = epochs = 1: on-policy, the ratio is exactly 1 at every step; with a sampler one
    version behind, the ratios of steps 2+ start away from 1 (micro: the shipped base 0, whose
    rewards vary, so the updates move the policy; a tiny untrained base gets reward 0 throughout)."""
    cfg = compose(
        "experiment=clipping_bottleneck/grpo",
        "trainer.minibatches=1",
        "trainer.epochs=1",
        "trainer.lr=3e-3",
        "trainer.steps=3",
        "trainer.prompts_per_step=4",
        "trainer.eval_every=3",
        "trainer.eval_n=8",
        "trainer.drift_n=4",
        f"trainer.staleness={lag}",
    )
    _, curves = train(cfg)
    dev = dict(curves["train/ratio_dev"])  # mean |r - 1| over the step's tokens
    assert dev[1] == 0.0  # step 1 samples with version 0 either way
    if lag == 0:
        assert max(dev.values()) == 0.0
    else:
        assert dev[2] > 0.01
