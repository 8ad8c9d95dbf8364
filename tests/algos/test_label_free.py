"""Label-free rewards: soft cluster vote, hard majority vote, self-certainty; answer parsing."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.algos import REWARDS
from repro.algos.label_free import (
    PolicyView,
    final_answer,
    group_votes,
    normalize_number,
    sequence_self_certainty,
    token_self_certainty,
)
from repro.algos.rewards import RewardContext
from repro.errors import ConfigError
from repro.eval.vote import within_group_corr

from . import reference_label_free as ref

VOTES = ("soft_vote", "majority_vote")


def _ctx(answers, group, gold=None, extras=None):
    texts = [f"so #### {a}" if a is not None else "no idea" for a in answers]
    gold = gold if gold is not None else [None] * len(answers)
    verify = lambda c, a: final_answer(c) == a  # noqa: E731
    return RewardContext(
        texts, gold, torch.tensor(group), verify, extras if extras is not None else {"stats": {}}
    )


answer_lists = st.integers(1, 12).flatmap(
    lambda n: st.tuples(
        st.lists(st.one_of(st.none(), st.sampled_from(["1", "2", "3", "17"])), min_size=n, max_size=n),
        st.lists(st.integers(0, 3), min_size=n, max_size=n),
    )
)


@pytest.mark.parametrize(
    "text,kw,want",
    [
        ("first 5 + 3 = 8 . #### 8", {}, "8"),
        ("#### 1,234.", {}, "1234"),
        ("#### $5.50", {}, "5.5"),
        ("#### -0", {}, "0"),
        ("the answer is 12", {}, None),
        ("the answer is 12", {"last_number": True}, "12"),
        ("it is 7\nQuestion: what is 9", {"last_number": True, "cut_at": ["Question:"]}, "7"),
        ("#### 4 and then #### 5", {}, "4"),
    ],
)
def test_final_answer(text, kw, want):
    assert final_answer(text, **kw) == want


def test_normalize_number_leaves_words():
    assert normalize_number(" red. ") == "red"


@settings(max_examples=60, deadline=None)
@given(data=answer_lists)
def test_votes_equal_the_slow_reference(data):
    answers, group = data
    for name, slow in (("soft_vote", ref.soft_vote), ("majority_vote", ref.majority_vote)):
        got = REWARDS[name](_ctx(answers, group))
        assert got.dtype == torch.float32 and got.shape == (len(answers),)
        assert torch.allclose(got, torch.tensor(slow(answers, group)))


@settings(max_examples=60, deadline=None)
@given(data=answer_lists, gold=st.sampled_from(["1", "2", "99"]))
def test_votes_never_read_the_gold_answer(data, gold):
    answers, group = data
    for name in VOTES:
        blind = REWARDS[name](_ctx(answers, group))
        told = REWARDS[name](_ctx(answers, group, gold=[gold] * len(answers)))
        assert torch.equal(blind, told)


@settings(max_examples=60, deadline=None)
@given(data=answer_lists)
def test_vote_properties(data):
    answers, group = data
    soft = REWARDS["soft_vote"](_ctx(answers, group))
    hard = REWARDS["majority_vote"](_ctx(answers, group))
    none = torch.tensor([a is None for a in answers])
    assert torch.all(soft[none] == 0) and torch.all(hard[none] == 0)  # unparseable -> 0
    assert torch.all((soft >= 0) & (soft <= 1)) and set(hard.tolist()) <= {0.0, 1.0}
    for g in set(group):
        idx = [i for i, h in enumerate(group) if h == g and answers[i] is not None]
        if idx:  # someone holds the plurality answer; its soft vote is the group's largest
            assert hard[idx].max() == 1
            assert soft[idx].max() == max(soft[i] for i in idx)
            assert hard[idx][soft[idx] < soft[idx].max()].sum() == 0


def test_soft_vote_example_and_gold_agreement_stat():
    stats: dict = {}
    r = REWARDS["soft_vote"](
        _ctx(["3", "3", "5", None], [0, 0, 0, 0], gold=["5"] * 4, extras={"stats": stats})
    )
    assert r.tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 3, 0.0])
    assert stats == {"vote/gold_agree": 0.0, "vote/parseable": 0.75}  # the vote picked 3, gold is 5


def test_group_votes_breaks_ties_by_first_seen():
    _, _, winners = group_votes(["4", "2", "2", "4"], torch.tensor([0, 0, 0, 0]))
    assert winners == ["4"] * 4


# ------------------------------------------------------------------------------ self-certainty

logit_batches = st.builds(
    lambda seed, B, T, V, scale: (
        scale * torch.randn(B, T, V, generator=torch.Generator().manual_seed(seed)),
        torch.arange(T)[None, :]
        < torch.randint(0, T + 1, (B, 1), generator=torch.Generator().manual_seed(seed + 1)),
    ),
    seed=st.integers(0, 2**31),
    B=st.integers(1, 4),
    T=st.integers(1, 5),
    V=st.integers(2, 9),
    scale=st.sampled_from([0.0, 0.5, 3.0, 20.0]),
)


@settings(max_examples=60, deadline=None)
@given(batch=logit_batches)
def test_self_certainty_equals_the_slow_reference(batch):
    logits, mask = batch
    got = sequence_self_certainty(logits, mask)
    assert torch.allclose(got, torch.tensor(ref.self_certainty(logits, mask)), atol=1e-4, rtol=1e-4)


@settings(max_examples=60, deadline=None)
@given(batch=logit_batches, shift=st.floats(-50, 50))
def test_self_certainty_properties(batch, shift):
    logits, mask = batch
    tok = token_self_certainty(logits)
    assert torch.all(tok >= -1e-5)  # a KL divergence
    assert torch.allclose(tok, token_self_certainty(logits + shift), atol=1e-4)  # softmax invariance
    assert torch.allclose(token_self_certainty(torch.zeros_like(logits)), torch.zeros_like(tok), atol=1e-6)
    sharper = token_self_certainty(2 * logits)
    assert torch.all(sharper >= tok - 1e-4)  # a sharper distribution is at least as certain


@settings(max_examples=30, deadline=None)
@given(batch=logit_batches, chunk=st.integers(1, 5), junk=st.integers(0, 2**16))
def test_self_certainty_reward_chunks_and_ignores_padding(batch, chunk, junk):
    logits, mask = batch
    B, T, V = logits.shape
    ids = torch.zeros(B, T, dtype=torch.long)
    noisy = torch.where(
        mask[..., None],
        logits,
        100 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(junk)),
    )

    def reward(lg, chunk_size):
        view = PolicyView(lambda idx: lg[idx], ids, mask, chunk=chunk_size)
        ctx = RewardContext(
            ["x"] * B, [None] * B, torch.zeros(B, dtype=torch.long), lambda c, a: False, {"policy": view}
        )
        return REWARDS["self_certainty"](ctx)

    want = sequence_self_certainty(logits, mask)
    assert torch.allclose(reward(logits, chunk), want, atol=1e-5)
    assert torch.allclose(reward(noisy, B), want, atol=1e-5)


def test_self_certainty_needs_the_policy_view():
    ctx = RewardContext(["x"], [None], torch.zeros(1, dtype=torch.long), lambda c, a: False)
    with pytest.raises(ConfigError, match="PolicyView"):
        REWARDS["self_certainty"](ctx)


def test_within_group_corr_matches_numpy():
    import numpy as np

    g = torch.tensor([0, 0, 0, 1, 1, 1])
    x = torch.tensor([1.0, 2.0, 3.0, 0.0, 5.0, 1.0])
    y = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    cx = np.concatenate([v - v.mean() for v in np.split(x.numpy(), 2)])
    cy = np.concatenate([v - v.mean() for v in np.split(y.numpy(), 2)])
    assert within_group_corr(x, y, g) == pytest.approx(float(np.corrcoef(cx, cy)[0, 1]))
    assert math.isnan(within_group_corr(x, torch.ones(6), g))
