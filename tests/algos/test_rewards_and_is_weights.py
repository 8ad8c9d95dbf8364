"""Rewards and the `none` IS weight: the built-ins and their contracts (tis and the IS filters:
test_is_weights.py)."""

from __future__ import annotations

import pytest
import torch

from repro.algos import IS_WEIGHTS, REWARDS
from repro.algos.rewards import RewardContext
from repro.registry import UnknownNameError

from . import reference as ref


def _ctx(completions, answers):
    return RewardContext(
        completions=completions,
        answers=answers,
        group=torch.arange(len(completions)),
        verify=lambda completion, answer: completion.strip().endswith(answer),
    )


def test_exact_answer_scores_with_the_task_verifier():
    ctx = _ctx(["so 4", "so 5", "so 4", "no idea"], ["4", "4", None, "7"])
    r = REWARDS["exact_answer"](ctx)
    assert r.dtype == torch.float32 and r.shape == (4,)
    assert r.tolist() == [1.0, 0.0, 0.0, 0.0]  # no gold answer -> 0


def test_reward_context_checks_lengths():
    with pytest.raises(ValueError, match="same length"):
        _ctx(["a", "b"], ["a"])


def test_reward_context_has_room_for_label_free_signals():
    ctx = _ctx(["a"], [None])
    assert ctx.extras == {}
    ctx.extras["self_certainty"] = torch.tensor([0.3])


@pytest.mark.parametrize("seed", range(5))
def test_none_is_weight_is_one_everywhere(seed):
    logp, old_logp, _, mask = ref.make_batch(seed, 3, 5, 0.3)
    w, stats = IS_WEIGHTS["none"](logp.detach(), old_logp, mask)
    assert w.shape == logp.shape and torch.all(w == 1) and stats == {}
    w_same, _ = IS_WEIGHTS["none"](logp.detach(), logp.detach(), mask)  # sampler == learner
    assert torch.all(w_same == 1)


def test_unknown_names_list_registered():
    with pytest.raises(UnknownNameError, match="exact_answer"):
        REWARDS["format"]
    with pytest.raises(UnknownNameError, match="none, tis"):
        IS_WEIGHTS["nope"]


def test_matches_reward_is_a_regex_format_check():
    from repro.algos.rewards import REWARDS, RewardContext

    texts = ["1 + 1 = 2 . #### 2", "#### x", "2"]
    ctx = RewardContext(texts, ["2", "2", "2"], torch.tensor([0, 0, 0]), lambda c, a: False)
    assert REWARDS["matches"](ctx, pattern=r"####\s*\d").tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="reward.kw.pattern"):
        REWARDS["matches"](ctx, pattern="(")
