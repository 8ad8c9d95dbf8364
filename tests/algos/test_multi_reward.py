"""GDPO (per-channel group normalisation) and each channel's share of the advantage."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.algos import ADVANTAGES
from repro.algos.multi_reward import channel_shares, channel_terms

from . import reference_label_free as ref

batches = st.builds(
    lambda seed, n_groups, G, K: (
        torch.randn(n_groups * G, K, generator=torch.Generator().manual_seed(seed)).round(decimals=1),
        torch.arange(n_groups).repeat_interleave(G)[
            torch.randperm(n_groups * G, generator=torch.Generator().manual_seed(seed))
        ],
    ),
    seed=st.integers(0, 2**31),
    n_groups=st.integers(1, 4),
    G=st.integers(1, 5),
    K=st.integers(1, 3),
)


@settings(max_examples=80, deadline=None)
@given(batch=batches)
def test_gdpo_equals_the_slow_reference(batch):
    rewards, group = batch
    K = rewards.shape[1]
    w = [0.5 + k for k in range(K)]
    got = ADVANTAGES["gdpo"](rewards.double(), group, weights=w, eps=1e-6)
    assert torch.allclose(
        got, torch.tensor(ref.gdpo(rewards.double(), group.tolist(), w, 1e-6), dtype=torch.float64)
    )


@settings(max_examples=80, deadline=None)
@given(batch=batches, scale=st.floats(0.01, 100), shift=st.floats(-10, 10))
def test_gdpo_is_invariant_to_a_channels_scale_and_shift(batch, scale, shift):
    rewards, group = batch
    moved = rewards.double().clone()
    moved[:, 0] = scale * moved[:, 0] + shift
    a = ADVANTAGES["gdpo"](rewards.double(), group, eps=0.0)
    b = ADVANTAGES["gdpo"](moved, group, eps=0.0)
    assert torch.allclose(a, b, atol=1e-8)


@settings(max_examples=80, deadline=None)
@given(batch=batches)
def test_gdpo_properties(batch):
    rewards, group = batch
    adv = ADVANTAGES["gdpo"](rewards, group)
    for g in group.unique():  # group advantages sum to zero
        assert abs(float(adv[group == g].sum())) < 1e-4
    if rewards.shape[1] == 1:  # one channel: GRPO
        assert torch.allclose(adv, ADVANTAGES["grpo"](rewards, group))
    assert torch.equal(ADVANTAGES["gdpo"](torch.zeros_like(rewards), group), torch.zeros(len(group)))


@settings(max_examples=80, deadline=None)
@given(batch=batches, scale_std=st.booleans())
def test_channel_terms_sum_to_the_advantage(batch, scale_std):
    rewards, group = batch
    rewards = rewards.double()
    K = rewards.shape[1]
    w = [1.0 / K + 0.1 * k for k in range(K)]
    for name, kw in (
        ("gdpo", {"weights": w}),
        ("grpo", {"weights": w, "scale_std": scale_std}),
        ("mean_only", {"weights": w}),
    ):
        terms = channel_terms(name, rewards, group, **kw)
        assert terms.shape == rewards.shape
        assert torch.allclose(terms.sum(1), ADVANTAGES[name](rewards, group, **kw), atol=1e-8), name
        shares = channel_shares(name, rewards, group, [f"c{k}" for k in range(K)], **kw)
        if shares:
            assert sum(shares.values()) == pytest.approx(1.0)


def test_without_per_channel_normalisation_the_wider_channel_dominates():
    gen = torch.Generator().manual_seed(0)
    group = torch.arange(16).repeat_interleave(7)
    vote = (torch.rand(112, generator=gen) < 0.5).double()  # spread ~0.5
    cert = 10 * torch.randn(112, generator=gen, dtype=torch.float64)  # spread ~10
    rewards = torch.stack([vote, cert], 1)
    names = ["soft_vote", "self_certainty"]
    summed = channel_shares("grpo", rewards, group, names, weights=[0.5, 0.5])
    decoupled = channel_shares("gdpo", rewards, group, names, weights=[0.5, 0.5])
    assert summed["adv_share/self_certainty"] > 0.9
    assert 0.35 < decoupled["adv_share/self_certainty"] < 0.65


def test_unknown_advantage_has_no_shares_and_bad_weights_fail():
    rewards, group = torch.ones(4, 2), torch.tensor([0, 0, 1, 1])
    assert channel_shares("nope", rewards, group, ["a", "b"]) == {}
    from repro.errors import ConfigError

    with pytest.raises(ConfigError, match="advantage.kw.weights"):
        ADVANTAGES["gdpo"](rewards, group, weights=[1.0])
