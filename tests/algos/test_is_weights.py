"""IS weights and filters against the sampler (repro/algos/is_weights.py): properties over random
batches (hypothesis) and comparisons with the loop references in `reference.py`, including the
whole filtered-truncated loss of a pooled batch."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from repro.algos import ADVANTAGES, IS_FILTERS, IS_WEIGHTS
from repro.algos.is_weights import k3, sequence_kl
from repro.algos.objectives import Share
from repro.errors import ConfigError
from repro.trainers.grpo import aggregation_coef, pg_loss

from . import reference as ref
from .properties import batches, stat_equal

CAPS = st.sampled_from([0.5, 1.0, 2.0, 5.0])
KLS = st.sampled_from(["seq", "token_mean"])
THRESHOLDS = st.sampled_from([0.01, 0.1, 1.0, 5.0, 50.0])


def _builtin(registry) -> set[str]:
    return {name for name in registry if registry[name].__module__.startswith("repro.")}


def test_every_builtin_function_is_covered():
    assert _builtin(IS_WEIGHTS) == {"none", "tis"}
    assert _builtin(IS_FILTERS) == {"none", "adv_or_kl"}


def _batch(batch):
    logp, sampler_logp, adv, mask = batch
    return logp.detach(), sampler_logp, adv, mask


# -- TIS -----------------------------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**32 - 1),
    B=st.integers(1, 5),
    T=st.integers(1, 7),
    spread=st.sampled_from([0.0, 0.05, 0.3, 2.0]),
    cap=st.sampled_from([0.5, 1.0, 2.0, 5.0]),
)
def test_tis_is_the_truncated_ratio_one_at_equal_policies_and_never_above_its_cap(seed, B, T, spread, cap):
    logp, sampler_logp, _, mask = ref.make_batch(seed, B, T, spread)
    w, stats = IS_WEIGHTS["tis"](logp.detach(), sampler_logp, mask, cap=cap)
    assert w.shape == logp.shape and not w.requires_grad
    assert torch.all(w[mask] <= cap) and torch.all(w[~mask] == 1)
    # Slow and obvious: one token at a time.
    for b in range(B):
        for t in range(T):
            if mask[b, t]:
                want = min(float((logp[b, t] - sampler_logp[b, t]).detach().exp()), cap)
                assert float(w[b, t]) == pytest.approx(want, rel=1e-5)
    same, same_stats = IS_WEIGHTS["tis"](logp.detach(), logp.detach(), mask, cap=max(cap, 1.0))
    assert torch.all(same == 1) and float(same_stats["trunc_frac"].num) == 0
    assert 0 <= float(stats["trunc_frac"].num) <= float(stats["trunc_frac"].den) == float(mask.sum())


@given(batch=batches, cap=CAPS)
def test_tis_equals_the_loop_reference_and_never_exceeds_its_cap(batch, cap):
    logp, sampler_logp, _, mask = _batch(batch)
    w, stats = IS_WEIGHTS["tis"](logp, sampler_logp, mask, cap=cap)
    want = ref.tis_weight(logp, sampler_logp, mask, cap)
    assert torch.allclose(w.double(), want, rtol=1e-5, atol=1e-7)
    assert torch.all(w[mask] <= cap) and torch.all(w[~mask] == 1)
    n = int(mask.sum())
    above = sum(math.exp(float(logp[b, t] - sampler_logp[b, t])) > cap for b, t in mask.nonzero().tolist())
    # A share of the valid tokens (NaN, undefined, when there are none).
    assert isinstance(stats["trunc_frac"], Share) and float(stats["trunc_frac"].den) == n
    assert float(stats["trunc_frac"].num) == above
    if n:
        ratio = [math.exp(float(logp[b, t] - sampler_logp[b, t])) for b, t in mask.nonzero().tolist()]
        assert float(stats["ratio_mean"]) == pytest.approx(sum(ratio) / n, rel=1e-5)
        assert float(stats["w_mean"]) == pytest.approx(sum(min(r, cap) for r in ratio) / n, rel=1e-5)
    else:
        assert all(math.isnan(float(v)) for v in stats.values())


@given(batch=batches, cap=CAPS)
def test_tis_is_one_when_sampler_is_learner_and_is_detached(batch, cap):
    logp, _, _, mask = _batch(batch)
    live = logp.clone().requires_grad_()
    w, stats = IS_WEIGHTS["tis"](live, logp, mask, cap=cap)
    assert not w.requires_grad
    assert torch.all(w[mask] == min(1.0, cap)) and torch.all(w[~mask] == 1)
    assert float(stats["trunc_frac"].num) == (0.0 if cap >= 1 else float(mask.sum()))


@given(batch=batches, cap=CAPS, junk=st.integers(0, 2**16))
def test_tis_padding_changes_nothing(batch, cap, junk):
    logp, sampler_logp, _, mask = _batch(batch)
    g = torch.Generator().manual_seed(junk)
    logp2 = torch.where(mask, logp, 50 * torch.randn(logp.shape, generator=g))
    sampler2 = torch.where(mask, sampler_logp, -50 * torch.rand(logp.shape, generator=g))
    a, sa = IS_WEIGHTS["tis"](logp, sampler_logp, mask, cap=cap)
    b, sb = IS_WEIGHTS["tis"](logp2, sampler2, mask, cap=cap)
    assert torch.equal(a, b) and all(stat_equal(sa[k], sb[k]) for k in sa)


def test_tis_with_a_huge_cap_is_the_plain_ratio():
    logp, sampler_logp, _, mask = _batch(ref.make_batch(3, 4, 6, 0.3))
    w, _ = IS_WEIGHTS["tis"](logp, sampler_logp, mask, cap=1e9)
    assert torch.allclose(w, torch.where(mask, (logp - sampler_logp).exp(), 1.0))


def test_tis_rejects_a_nonpositive_cap():
    logp, sampler_logp, _, mask = _batch(ref.make_batch(0, 2, 3, 0.3))
    with pytest.raises(ConfigError, match="is_weight.kw.cap"):
        IS_WEIGHTS["tis"](logp, sampler_logp, mask, cap=0.0)


# -- KL estimates and the advantage-or-KL filter -------------------------------------------------


@given(batch=batches, kl=KLS)
def test_kl_definitions_equal_the_loop_reference_and_are_nonnegative(batch, kl):
    logp, sampler_logp, _, mask = _batch(batch)
    got = sequence_kl(logp, sampler_logp, mask, kl)
    want = torch.tensor(ref.sequence_kl(logp, sampler_logp, mask, kl), dtype=got.dtype)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
    assert torch.all(k3(logp, sampler_logp, mask) >= 0) and torch.all(got >= 0)
    same = sequence_kl(logp, logp, mask, kl)
    assert torch.all(same == 0)  # no KL between a policy and itself
    if kl == "token_mean":
        total = sequence_kl(logp, sampler_logp, mask, "seq")
        assert torch.allclose(got * mask.sum(1).clamp(min=1), total, rtol=1e-5, atol=1e-6)


@given(batch=batches, kl=KLS, threshold=THRESHOLDS)
def test_adv_or_kl_equals_the_loop_reference(batch, kl, threshold):
    logp, sampler_logp, adv, mask = _batch(batch)
    keep, stats = IS_FILTERS["adv_or_kl"](logp, sampler_logp, mask, adv, kl=kl, threshold=threshold)
    want = ref.adv_or_kl_keep(logp, sampler_logp, mask, adv, kl, threshold)
    assert keep.tolist() == want
    B = logp.shape[0]
    assert float(stats["filtered_frac"]) == pytest.approx((B - sum(want)) / B)
    assert isinstance(stats["filtered_frac"], Share) and float(stats["filtered_frac"].den) == B
    kls = ref.sequence_kl(logp, sampler_logp, mask, kl)
    assert float(stats["kl_mean"]) == pytest.approx(sum(kls) / B, rel=1e-4, abs=1e-6)


@given(batch=batches, kl=KLS, threshold=THRESHOLDS)
def test_adv_or_kl_keeps_positive_advantages_and_on_policy_samples(batch, kl, threshold):
    logp, sampler_logp, adv, mask = _batch(batch)
    keep, _ = IS_FILTERS["adv_or_kl"](logp, sampler_logp, mask, adv, kl=kl, threshold=threshold)
    assert torch.all(keep[adv > 0] == 1)
    on_policy, _ = IS_FILTERS["adv_or_kl"](logp, logp, mask, adv, kl=kl, threshold=threshold)
    assert torch.all(on_policy == 1)


@given(batch=batches, kl=KLS, lo=THRESHOLDS, hi=THRESHOLDS)
def test_a_larger_threshold_keeps_a_superset(batch, kl, lo, hi):
    logp, sampler_logp, adv, mask = _batch(batch)
    lo, hi = min(lo, hi), max(lo, hi)
    a, _ = IS_FILTERS["adv_or_kl"](logp, sampler_logp, mask, adv, kl=kl, threshold=lo)
    b, _ = IS_FILTERS["adv_or_kl"](logp, sampler_logp, mask, adv, kl=kl, threshold=hi)
    assert torch.all(b >= a)


@given(batch=batches, kl=KLS, threshold=THRESHOLDS, junk=st.integers(0, 2**16))
def test_filter_padding_changes_nothing(batch, kl, threshold, junk):
    logp, sampler_logp, adv, mask = _batch(batch)
    g = torch.Generator().manual_seed(junk)
    logp2 = torch.where(mask, logp, 50 * torch.randn(logp.shape, generator=g))
    a, _ = IS_FILTERS["adv_or_kl"](logp, sampler_logp, mask, adv, kl=kl, threshold=threshold)
    b, _ = IS_FILTERS["adv_or_kl"](logp2, sampler_logp, mask, adv, kl=kl, threshold=threshold)
    assert torch.equal(a, b)


def test_filter_rejects_bad_settings():
    logp, sampler_logp, adv, mask = _batch(ref.make_batch(0, 2, 3, 0.3))
    with pytest.raises(ConfigError, match="trainer.filter.kw.kl"):
        IS_FILTERS["adv_or_kl"](logp, sampler_logp, mask, adv, kl="mean")
    with pytest.raises(ConfigError, match="trainer.filter.kw.threshold"):
        IS_FILTERS["adv_or_kl"](logp, sampler_logp, mask, adv, threshold=0)


# -- the whole filtered, truncated loss of a pooled batch ----------------------------------------

FTIS = OmegaConf.create(
    {
        "is_weight": {"name": "tis", "kw": {"cap": 2.0}},
        "objective": {"name": "clip", "kw": {"eps_low": 0.2, "eps_high": 0.2}},
        "agg": {"name": "seq_mean_token_mean", "kw": {}},
    }
)


@given(
    seed=st.integers(0, 2**32 - 1),
    groups=st.integers(1, 3),
    G=st.integers(2, 4),
    T=st.integers(1, 5),
    spread=st.sampled_from([0.05, 0.5, 2.0]),
    kl=KLS,
    threshold=THRESHOLDS,
    chunks=st.integers(1, 3),
)
def test_ftis_loss_and_gradient_equal_the_papers_formula(seed, groups, G, T, spread, kl, threshold, chunks):
    """Advantages over whole groups (a filtered completion still counts in its group's mean and
    std), then keep * min(rho, C) * the clipped term at R = 1, sequence-mean token-mean; computed in
    one batch or accumulated over chunks (aggregation_coef), value and gradient as the reference."""
    B = groups * G
    logp0, sampler_logp, _, mask = ref.make_batch(seed, B, T, spread)
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 2, (B,), generator=gen).float()
    group = torch.arange(groups).repeat_interleave(G)

    want_logp = logp0.detach().double().clone().requires_grad_()
    want = ref.ftis_loss(want_logp, sampler_logp.double(), mask, rewards, group, 2.0, kl, threshold)
    want_grad = torch.autograd.grad(want, want_logp, allow_unused=True)[0] if want.requires_grad else None

    logp = logp0.detach().clone().requires_grad_()
    adv = ADVANTAGES["grpo"](rewards[:, None], group)
    coef = aggregation_coef(FTIS, mask) if chunks > 1 else None
    total = torch.zeros(())
    for idx in torch.arange(B).chunk(chunks):
        keep, _ = IS_FILTERS["adv_or_kl"](
            logp[idx].detach(), sampler_logp[idx], mask[idx], adv[idx], kl=kl, threshold=threshold
        )
        loss, _ = pg_loss(
            FTIS,
            logp[idx],
            logp[idx].detach(),
            adv[idx],
            mask[idx],
            logp[idx],
            sampler_logp[idx],
            generator=torch.Generator(),
            keep=keep,
            agg_coef=None if coef is None else coef[idx],
        )
        total = total + loss
    assert float(total.detach()) == pytest.approx(float(want.detach()), rel=1e-4, abs=1e-6)
    got_grad = torch.autograd.grad(total, logp, allow_unused=True)[0] if total.requires_grad else None
    if want_grad is None or got_grad is None:
        assert (want_grad is None or torch.all(want_grad == 0)) and (
            got_grad is None or torch.all(got_grad == 0)
        )
    else:
        assert torch.allclose(got_grad.double(), want_grad, rtol=1e-4, atol=1e-6)
