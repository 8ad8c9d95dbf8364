"""Group-relative advantages: properties over random groupings, and the loop reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from repro.algos import ADVANTAGES
from repro.errors import ConfigError
from repro.registry import UnknownNameError

from . import reference as ref


@st.composite
def rewards_and_groups(draw):
    """(B, K) rewards (binary or continuous) and arbitrary, unsorted group ids of unequal sizes."""
    B = draw(st.integers(1, 16))
    K = draw(st.integers(1, 3))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    n_groups = draw(st.integers(1, 5))
    ids = torch.tensor(draw(st.lists(st.integers(-3, 1000), min_size=n_groups, max_size=n_groups)))
    group = ids[torch.randint(0, n_groups, (B,), generator=gen)]  # (B,)
    if draw(st.booleans()):
        rewards = (torch.rand(B, K, generator=gen) < 0.5).float()  # pass/fail, many constant groups
    else:
        rewards = torch.randn(B, K, generator=gen)
    return rewards, group


@pytest.mark.parametrize("name", ["grpo", "mean_only"])
@given(case=rewards_and_groups())
def test_advantages_sum_to_zero_per_group(name, case):
    rewards, group = case
    adv = ADVANTAGES[name](rewards, group)
    assert adv.shape == group.shape and torch.isfinite(adv).all()
    for gid in group.unique():
        assert adv[group == gid].sum().abs() < 1e-4


@pytest.mark.parametrize("name", ["grpo", "mean_only"])
@given(case=rewards_and_groups(), eps=st.sampled_from([0.0, 1e-6]))
def test_constant_groups_get_exactly_zero(name, case, eps):
    rewards, group = case
    rewards = torch.full_like(rewards, 0.1) + 0.3 * (group[:, None] % 2)  # constant within each group
    kw = {"eps": eps} if name == "grpo" else {}
    adv = ADVANTAGES[name](rewards, group, **kw)
    assert torch.all(adv == 0)


@pytest.mark.parametrize("name", ["grpo", "mean_only"])
@given(case=rewards_and_groups(), perm_seed=st.integers(0, 2**16))
def test_invariant_to_permuting_sequences(name, case, perm_seed):
    rewards, group = case
    perm = torch.randperm(len(group), generator=torch.Generator().manual_seed(perm_seed))
    adv = ADVANTAGES[name](rewards, group)
    assert torch.allclose(ADVANTAGES[name](rewards[perm], group[perm]), adv[perm], atol=1e-6)


@given(case=rewards_and_groups())
def test_invariant_to_relabelling_groups(case):
    rewards, group = case
    assert torch.allclose(
        ADVANTAGES["grpo"](rewards, group), ADVANTAGES["grpo"](rewards, 7 * group + 11), atol=1e-6
    )


@given(
    case=rewards_and_groups(),
    eps=st.sampled_from([0.0, 1e-6, 0.1]),
    scale_std=st.booleans(),
    random_weights=st.booleans(),
)
def test_grpo_matches_reference(case, eps, scale_std, random_weights):
    rewards, group = case
    K = rewards.shape[1]
    weights = torch.linspace(0.5, 2.0, K).tolist() if random_weights else None
    adv = ADVANTAGES["grpo"](rewards, group, weights=weights, eps=eps, scale_std=scale_std)
    expected = ref.grpo_advantage(rewards, group, weights, eps, scale_std).float()
    assert torch.allclose(adv, expected, atol=1e-4, rtol=1e-4)


@given(case=rewards_and_groups())
def test_mean_only_is_grpo_without_std(case):
    rewards, group = case
    assert torch.allclose(
        ADVANTAGES["mean_only"](rewards, group), ADVANTAGES["grpo"](rewards, group, scale_std=False)
    )


def test_known_values():
    rewards = torch.tensor([[1.0], [0.0], [1.0], [1.0], [0.0]])
    group = torch.tensor([9, 9, 2, 2, 5])  # a 2-group, a constant group, a singleton
    adv = ADVANTAGES["grpo"](rewards, group, eps=0.0)
    assert torch.allclose(adv, torch.tensor([0.7071068, -0.7071068, 0.0, 0.0, 0.0]))
    assert torch.allclose(ADVANTAGES["mean_only"](rewards, group), torch.tensor([0.5, -0.5, 0.0, 0.0, 0.0]))


def test_weights_combine_channels():
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    group = torch.tensor([0, 0])
    adv = ADVANTAGES["mean_only"](rewards, group, weights=[0.75, 0.25])
    assert torch.allclose(adv, torch.tensor([0.25, -0.25]))


@pytest.mark.parametrize(
    ("name", "kw", "key"),
    [
        ("grpo", {"weights": [1.0]}, "advantage.kw.weights"),
        ("mean_only", {"weights": [1.0, 1.0, 1.0]}, "advantage.kw.weights"),
        ("grpo", {"eps": -1e-3}, "advantage.kw.eps"),
    ],
)
def test_bad_kw_raises_value_error_naming_the_key(name, kw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ADVANTAGES[name](torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), **kw)


def test_rewards_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        ADVANTAGES["grpo"](torch.zeros(4), torch.zeros(4, dtype=torch.long))


def test_unknown_name_lists_registered():
    with pytest.raises(UnknownNameError, match="grpo, mean_only"):
        ADVANTAGES["rloo"]
