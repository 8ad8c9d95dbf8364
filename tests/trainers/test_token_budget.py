"""Issue 10's confound fixes in the distillation and SFT trainers, at scale=tiny:
`trainer.supervised_tokens` (stop at a budget of loss-bearing tokens, exactly; null = unchanged),
`train/supervised_tokens`, `train/delta_norm` (||theta - theta_0||, LoRA merged) and
`train/final_loss` in the final metrics (grpo too), and the truncated shares a gate reads
(`eval/<split>/truncated_frac`, `train/teacher_truncated_frac`).

    pytest tests/trainers/test_token_budget.py
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hydra_helpers import compose, train
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.errors import ConfigError
from repro.rollout import truncated
from repro.trainers.common import cap_supervised, delta_norm, weight_snapshot, with_lora


@settings(max_examples=200, deadline=None)
@given(data=st.data(), B=st.integers(1, 5), T=st.integers(1, 6), done=st.integers(0, 40))
def test_cap_supervised_keeps_the_first_tokens_up_to_the_budget(data, B, T, done):
    lens = data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B))
    mask = torch.arange(T)[None, :] < torch.tensor(lens)[:, None]  # (B, T) right-padded
    budget = data.draw(st.one_of(st.none(), st.integers(1, 60)))
    got = cap_supervised(mask, done, budget)
    if budget is None:
        assert torch.equal(got, mask)
        return
    # Reference: walk the tokens row by row and keep them while the budget lasts.
    want, left = torch.zeros_like(mask), max(budget - done, 0)
    for b in range(B):
        for t in range(T):
            if mask[b, t] and left > 0:
                want[b, t], left = True, left - 1
    assert torch.equal(got, want)
    assert int(got.sum()) == min(int(mask.sum()), max(budget - done, 0))


@settings(max_examples=100, deadline=None)
@given(data=st.data(), budget=st.integers(1, 6), extra=st.integers(0, 4), B=st.integers(1, 5))
def test_truncated_at_a_smaller_budget_than_generated(data, budget, extra, B):
    """A completion generated at budget + extra counts as cut at `budget` exactly when its first
    `budget` tokens hold no EOS (what a call at `budget` would have returned without EOS)."""
    EOS, PAD = 1, 0
    width = budget + extra
    rows = []
    for _ in range(B):
        n = data.draw(st.integers(0, width))
        body = data.draw(st.lists(st.integers(2, 9), min_size=n, max_size=n))
        if n and data.draw(st.booleans()):
            body[-1] = EOS
        rows.append(body)
    ids = torch.full((B, width), PAD)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
    lens = torch.tensor([len(r) for r in rows])
    want = [1.0 if len(r) >= budget and EOS not in r[:budget] else 0.0 for r in rows]
    assert truncated(ids, lens, budget, EOS).tolist() == want


@pytest.mark.parametrize("trainer", ["opd", "offline_distill"])
def test_supervised_tokens_stops_the_run_at_exactly_the_budget(trainer):
    free = compose(f"trainer={trainer}", "scale=tiny", "trainer.steps=6", "trainer.eval_every=100")
    final_free, curves_free = train(free)
    assert final_free["train/steps"] == 6  # null: behaviour unchanged, every step runs
    per_step = [v for _, v in curves_free["train/supervised_tokens"]]
    assert per_step == sorted(per_step) and per_step[-1] == final_free["train/supervised_tokens"]
    # A budget the free run passes during step 3: the capped run stops there, on the budget.
    budget = int(per_step[1]) + 1
    capped = compose(
        f"trainer={trainer}",
        "scale=tiny",
        "trainer.steps=6",
        "trainer.eval_every=100",
        f"trainer.supervised_tokens={budget}",
    )
    final, curves = train(capped)
    assert final["train/supervised_tokens"] == budget
    assert final["train/steps"] == 3
    assert [s for s, _ in curves["train/loss"]] == [1, 2, 3]
    assert [s for s, _ in curves["eval/id/greedy_acc"]] == [0, 3]  # evaluated where it stopped
    # Up to the stop, the same tokens as the free run (the cap only trims the last batch).
    assert [v for _, v in curves["train/supervised_tokens"]][:2] == per_step[:2]


def test_supervised_tokens_must_be_positive():
    with pytest.raises(ConfigError, match="trainer.supervised_tokens"):
        compose("trainer=offline_distill", "scale=tiny", "trainer.supervised_tokens=0")


TRAINERS = [
    ["trainer=sft"],
    ["trainer=sft", "trainer.lora=null"],
    ["trainer=opd"],
    ["trainer=offline_distill"],
]


@pytest.mark.parametrize("overrides", TRAINERS, ids=["sft_lora", "sft_full", "opd", "offline"])
def test_final_metrics_carry_delta_norm_final_loss_and_truncated_shares(overrides):
    final, curves = train(compose(*overrides, "scale=tiny"))
    assert final["train/delta_norm"] > 0
    assert final["train/final_loss"] == curves["train/loss"][-1][1]
    for split in ("id", "ood"):
        assert 0.0 <= final[f"eval/{split}/truncated_frac"] <= 1.0
    assert final["drift/bandwidth"] == final["drift_policy/bandwidth"] > 0
    assert math.isfinite(final["drift_policy/mmd2_nostyle"])
    if overrides == ["trainer=offline_distill"]:
        shares = [v for _, v in curves["train/teacher_truncated_frac"]]
        assert final["train/teacher_truncated_frac"] == pytest.approx(sum(shares) / len(shares))


def test_a_tiny_budget_shows_in_the_truncated_shares():
    """With a 2-token budget nearly every completion is cut: the eval and the teacher's shares say so."""
    final, _ = train(compose("trainer=offline_distill", "scale=tiny", "trainer.max_new_tokens=2"))
    assert final["eval/id/truncated_frac"] > 0.5
    assert final["train/teacher_truncated_frac"] > 0.5


def test_delta_norm_equals_the_merged_weights_distance():
    """LoRA: the norm of the merged adapters' delta equals ||merged - base|| over the state dict;
    full fine-tune: the distance from the snapshot."""
    from repro.models import load_policy

    cfg = compose("trainer=sft", "scale=tiny")
    model, _ = load_policy(cfg)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model = with_lora(copy.deepcopy(model), cfg.trainer.lora, seed=0)
    assert weight_snapshot(peft_model) is None
    assert delta_norm(peft_model, None) == 0.0  # B starts at 0: the identity
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    got = delta_norm(peft_model, None)
    merged = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    want = math.sqrt(sum(float((merged[k] - base[k]).pow(2).sum()) for k in base))
    assert got == pytest.approx(want, rel=1e-5) and got > 0
    start = weight_snapshot(model)
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    n = next(model.parameters()).numel()
    assert delta_norm(model, start) == pytest.approx(0.5 * math.sqrt(n), rel=1e-5)


def test_grpo_final_metrics_carry_delta_norm_and_final_loss():
    # A format reward (as the golden run): the barely pretrained tiny model gets a learning signal.
    reward = "reward=[{name:matches,kw:{pattern:'[0-9] [.]'}}]"
    final, curves = train(compose("experiment=clipping_bottleneck/grpo", "scale=tiny", reward))
    assert final["train/delta_norm"] > 0
    assert final["train/final_loss"] == curves["train/loss"][-1][1]
