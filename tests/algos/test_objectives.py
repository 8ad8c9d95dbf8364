"""The clipped objective at both levels, its rescue and stats hooks, and comparisons with the loop
references in `reference.py`. A paper's rescue rules are tested in its own tests (e.g.
tests/clipping_bottleneck/), with the same properties (`properties.py`)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.algos import AGGREGATIONS, CLIP_STATS, OBJECTIVES, RESCUES
from repro.algos.objectives import STAT_NAMES, zeroed_by_clip
from repro.errors import ConfigError
from repro.registry import UnknownNameError

from . import properties as prop
from . import reference as ref
from .properties import batches, grad_or_zeros, loss_and_grad

GSPO_EPS = {"eps_low": 3e-4, "eps_high": 4e-4}  # GSPO paper (v2) §5.1
# Every built-in objective configuration: PPO/GRPO, DAPO, and GSPO's sequence level.
CONFIGS = [
    ("clip", {}),
    ("clip", {"eps_high": 0.28}),
    ("clip", {"level": "sequence"}),
    ("clip", {"level": "sequence", **GSPO_EPS}),
]
CONFIG_IDS = [prop.config_id(c) for c in CONFIGS]
# Fewer examples per config keeps the module within its time budget; each still sees a spread.
per_config = settings(max_examples=25)
SHARES = [s for s in STAT_NAMES if s not in ("ratio_dev", "kl_k3", "ratio_max")]


def _builtin(registry) -> set[str]:
    return {name for name in registry if registry[name].__module__.startswith("repro.")}


def test_every_builtin_function_is_covered():
    from .test_cov_objectives import CONFIGS as COV_CONFIGS  # KL-Cov, Clip-Cov: their own module

    assert _builtin(OBJECTIVES) == {name for name, _ in CONFIGS + COV_CONFIGS}
    assert _builtin(RESCUES) == {"none"}
    assert _builtin(CLIP_STATS) == set()  # papers register theirs


# ------------------------------------------------------------------------------------------
# Properties of every configuration
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
@per_config
@given(batch=batches)
def test_zero_advantage_gives_zero_loss_and_gradient(name, kw, batch):
    prop.check_zero_advantage_gives_zero_loss_and_gradient(name, kw, batch)


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
@per_config
@given(batch=batches, junk_seed=st.integers(0, 2**16), agg=st.sampled_from(AGGREGATIONS.names()))
def test_padding_changes_nothing(name, kw, batch, junk_seed, agg):
    prop.check_padding_changes_nothing(name, kw, batch, junk_seed, agg)


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
@per_config
@given(batch=batches)
def test_at_ratio_one_gradient_is_reinforce(name, kw, batch):
    prop.check_at_ratio_one_gradient_is_reinforce(name, kw, batch)


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
@per_config
@given(batch=batches)
def test_stats_are_named_finite_scalars_and_shares_are_in_unit_interval(name, kw, batch):
    prop.check_stats_are_named_finite_scalars(name, kw, batch, STAT_NAMES, SHARES)
    stats = loss_and_grad(name, kw, *batch)[3]
    assert stats["kl_k3"].num >= 0 and stats["ratio_dev"].num >= 0


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
@per_config
@given(batch=batches, seed=st.integers(0, 2**16))
def test_same_generator_seed_same_output(name, kw, batch, seed):
    prop.check_same_generator_seed_same_output(name, kw, batch, seed)


# ------------------------------------------------------------------------------------------
# Token level (PPO/GRPO/DAPO), sequence level (GSPO), and the reductions between them
# ------------------------------------------------------------------------------------------

eps_pairs = st.sampled_from([(0.2, 0.2), (0.2, 0.28), (0.1, 0.3), (0.05, 0.01)])


@given(batch=batches, eps=eps_pairs)
def test_token_level_matches_ppo_reference(batch, eps):
    logp, old_logp, adv, mask = batch
    eps_low, eps_high = eps
    kw = {"eps_low": eps_low, "eps_high": eps_high}
    loss_mat, _, grad, stats = loss_and_grad("clip", kw, *batch, agg="token_mean")
    logp_ref = logp.detach().clone().requires_grad_()
    ref_mat = ref.ppo_clip_loss(logp_ref, old_logp, adv, mask, eps_low, eps_high)
    ref_loss = ref_mat.sum() / mask.sum().clamp(min=1)
    ref_grad = grad_or_zeros(ref_loss, logp_ref)
    assert torch.allclose(loss_mat, ref_mat.detach(), atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)
    ratio = torch.where(mask, logp.detach() - old_logp, 0.0).exp()  # (B, T)
    ref_stats = ref.clip_stats(ratio, adv, mask, *eps)
    for key in STAT_NAMES:
        assert stats[key].item() == pytest.approx(ref_stats[key], rel=1e-5, abs=1e-6, nan_ok=True), key


@given(batch=batches)
def test_symmetric_eps_is_grpo(batch):
    # DAPO's clip-higher with eps_high == eps_low is GRPO's symmetric clip.
    grpo = loss_and_grad("clip", {}, *batch)
    dapo = loss_and_grad("clip", {"eps_low": 0.2, "eps_high": 0.2}, *batch)
    assert torch.equal(grpo[0], dapo[0]) and torch.equal(grpo[2], dapo[2])


@pytest.mark.parametrize("level", ["token", "sequence"])
@given(batch=batches)
def test_explicit_defaults_change_nothing(level, batch):
    a = loss_and_grad("clip", {"level": level}, *batch)
    b = loss_and_grad("clip", {"level": level, "rescue": "none", "stats": []}, *batch)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert all(prop.stat_equal(a[3][k], b[3][k]) for k in STAT_NAMES)


one_token_batches = st.builds(
    ref.make_batch,
    seed=st.integers(0, 2**32 - 1),
    B=st.integers(1, 6),
    T=st.just(1),
    spread=st.sampled_from([0.05, 0.3, 1.0]),
)


@given(batch=one_token_batches, eps=eps_pairs)
def test_sequence_level_with_one_token_equals_token_level(batch, eps):
    kw = {"eps_low": eps[0], "eps_high": eps[1]}
    a = loss_and_grad("clip", kw, *batch)
    b = loss_and_grad("clip", {**kw, "level": "sequence"}, *batch)
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[2], b[2], atol=1e-6)


@given(batch=batches, eps=st.sampled_from([(3e-4, 4e-4), (0.2, 0.2), (0.05, 0.1)]))
def test_sequence_level_matches_gspo_reference(batch, eps):
    # GSPO-token with sequence-mean aggregation has GSPO's sequence-level value and gradient.
    logp, old_logp, adv, mask = batch
    kw = {"level": "sequence", "eps_low": eps[0], "eps_high": eps[1]}
    _, loss, grad, stats = loss_and_grad("clip", kw, *batch, agg="seq_mean_token_mean")
    logp_ref = logp.detach().clone().requires_grad_()
    ref_loss = ref.gspo_sequence_loss(logp_ref, old_logp, adv, mask, *eps)
    ref_grad = grad_or_zeros(ref_loss, logp_ref)
    assert torch.allclose(loss, ref_loss.detach(), atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)
    # Stats count valid tokens, with the sequence ratio on each of its tokens.
    log_ratio = torch.where(mask, logp.detach() - old_logp, 0.0)
    s = (log_ratio.sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)).exp()  # (B, 1)
    ref_stats = ref.clip_stats(s.expand_as(logp), adv, mask, *eps)
    for key in STAT_NAMES:
        assert stats[key].item() == pytest.approx(ref_stats[key], rel=1e-5, abs=1e-6, nan_ok=True), key


def test_stats_by_side_and_sign_on_a_hand_built_batch():
    # ratios: 1.5 (A>0: zeroed high), 1.5 (A<0), 0.5 (A>0), 0.5 (A<0: zeroed low), 1.0 (in bound)
    ratio = torch.tensor([[1.5], [1.5], [0.5], [0.5], [1.0]])
    old_logp = torch.zeros(5, 1)
    adv = torch.tensor([1.0, -1.0, 1.0, -3.0, 1.0])
    mask = torch.ones(5, 1, dtype=torch.bool)
    _, stats = OBJECTIVES["clip"](ratio.log(), old_logp, adv, mask)
    assert float(stats["clipfrac"]) == pytest.approx(0.4)
    for side in ("high_pos", "high_neg", "low_pos", "low_neg"):
        key = f"clipfrac_{side}_adv"
        assert float(stats[key]) == pytest.approx(0.2), key
    assert stats["ratio_max"] == pytest.approx(1.5)


# ------------------------------------------------------------------------------------------
# The hooks: a rescue rule and a stats function registered from outside the core
# ------------------------------------------------------------------------------------------


def keep_share(ratio, adv, eps_low, eps_high, generator=None, *, share: float = 1.0):
    """A toy rescue: zeroed units get g = share (1 = no clipping at all)."""
    return torch.where(zeroed_by_clip(ratio, adv, eps_low, eps_high), share, 1.0)


def g_mean(ratio, log_ratio, adv, g, weight, eps_low, eps_high, *, offset: float = 0.0):
    """A toy stats function: the token-weighted mean of g, plus `offset`."""
    return {"g_mean": (g * weight).sum() / weight.sum().clamp(min=1) + offset}


@pytest.fixture(scope="module")
def toy_hooks():
    """Registers the toy rescue and stats for this module's tests only (the registries are global)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(RESCUES._fns, "keep_share", keep_share)
        mp.setitem(CLIP_STATS._fns, "g_mean", g_mean)
        yield


@pytest.mark.parametrize("level", ["token", "sequence"])
@settings(max_examples=25)
@given(batch=batches, share=st.sampled_from([0.0, 0.3, 1.0]))
def test_rescue_hook_sets_the_gradient_weight_of_zeroed_units(toy_hooks, level, batch, share):
    logp, old_logp, adv, mask = batch
    kw = {"level": level, "eps_high": 0.28}
    hard = loss_and_grad("clip", kw, *batch)
    rescued = loss_and_grad("clip", {**kw, "rescue": "keep_share", "share": share}, *batch)
    if share == 0.0:  # g = 0 on zeroed units is hard clipping, exactly
        assert torch.equal(hard[0], rescued[0]) and torch.equal(hard[2], rescued[2])
    # The reference: loss_t = -(g r A + (1 - g) sg(min(r A, clip(r) A))) with the toy's g.
    log_ratio = torch.where(mask, logp.detach() - old_logp, 0.0)  # (B, T)
    logp_ref = logp.detach().clone().requires_grad_()
    if level == "token":
        r = log_ratio.exp()  # (B, T)
        live = torch.exp(logp_ref - old_logp)
    else:
        r = (log_ratio.sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)).exp().expand_as(logp)
        live = r * torch.exp(logp_ref - logp_ref.detach())  # value s_i, gradient s_i d(logp_t)
    g = keep_share(r, adv[:, None].expand_as(r), 0.2, 0.28, share=share)
    ref_mat = ref.general_loss(r, live, adv, mask, g, 0.2, 0.28)
    ref_grad = grad_or_zeros(ref_mat.sum() / mask.sum().clamp(min=1), logp_ref)
    assert torch.allclose(rescued[0], ref_mat.detach(), atol=1e-6)
    assert torch.allclose(rescued[2], ref_grad, atol=1e-6)


@settings(max_examples=25)
@given(batch=batches)
def test_keep_all_rescue_is_the_unclipped_surrogate(toy_hooks, batch):
    # g = 1 everywhere: loss_t = -r_t A, whose gradient is -r_t A d(logp_t) (no clipping).
    logp, old_logp, adv, mask = batch
    loss_mat, _, grad, stats = loss_and_grad("clip", {"rescue": "keep_share"}, *batch, agg="token_mean")
    ratio = torch.where(mask, logp.detach() - old_logp, 0.0).exp()  # (B, T)
    assert torch.allclose(loss_mat, -ratio * adv[:, None] * mask, atol=1e-6)
    assert torch.allclose(grad, -ratio * adv[:, None] * mask / mask.sum().clamp(min=1), atol=1e-6)
    # The generic stats still report what hard clipping would zero.
    expected = ref.clip_stats(ratio, adv, mask, 0.2, 0.2)["clipfrac"]
    assert float(stats["clipfrac"]) == pytest.approx(expected, nan_ok=True)


def test_stats_hook_adds_its_stats_after_the_generic_ones_and_gets_its_kw(toy_hooks):
    logp, old_logp, adv, mask = ref.make_batch(0, 4, 5, 0.3)
    kw = {"eps_high": 0.28, "rescue": "keep_share", "share": 0.0, "stats": ["g_mean"], "offset": 2.0}
    loss_mat, stats = OBJECTIVES["clip"](logp, old_logp, adv, mask, **kw)
    assert tuple(stats) == (*STAT_NAMES, "g_mean")
    # share 0: g is 0 exactly on the zeroed tokens, so its mean is 1 - clipfrac.
    assert stats["g_mean"] - 2.0 == pytest.approx(1 - stats["clipfrac"].item())
    hard, _ = OBJECTIVES["clip"](logp, old_logp, adv, mask, eps_high=0.28)
    assert torch.equal(loss_mat, hard)  # stats never change the loss


def test_a_stat_reported_twice_raises(toy_hooks, monkeypatch):
    monkeypatch.setitem(CLIP_STATS._fns, "bad", lambda *a, **k: {"clipfrac": torch.tensor(0.0)})
    logp, old_logp, adv, mask = ref.make_batch(0, 2, 3, 0.3)
    with pytest.raises(ValueError, match="clipfrac"):
        OBJECTIVES["clip"](logp, old_logp, adv, mask, stats=["bad"])


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


def test_unknown_objective_lists_registered_names():
    with pytest.raises(UnknownNameError, match="registered objectives: clip"):
        OBJECTIVES["ppo"]


def test_unknown_rescue_and_stats_name_the_key_and_list_registered_names():
    logp, old_logp, adv, mask = ref.make_batch(0, 2, 3, 0.3)
    with pytest.raises(
        ConfigError, match=r"objective\.kw\.rescue: unknown rescue 'nope'; registered rescues: .*none"
    ):
        OBJECTIVES["clip"](logp, old_logp, adv, mask, rescue="nope")
    with pytest.raises(ConfigError, match=r"objective\.kw\.stats: unknown clip stats 'nope'"):
        OBJECTIVES["clip"](logp, old_logp, adv, mask, stats=["nope"])


BAD_KW = [
    ({"eps_high": -0.1}, "objective.kw.eps_high"),
    ({"eps_low": 0.0}, "objective.kw.eps_low"),
    ({"eps_low": 1.0}, "objective.kw.eps_low"),
    ({"level": "sequence", "eps_high": 0.0}, "objective.kw.eps_high"),
    ({"level": "tokens"}, "objective.kw.level"),
    ({"stats": "g_mean"}, "objective.kw.stats"),
    ({"delta": 0.1}, "objective.kw.delta"),  # rescue none takes no kw
    ({"rescue": "keep_share", "offset": 1.0}, "objective.kw.offset"),  # a stats kw, no stats named
    ({"stats": ["g_mean"], "share": 0.5}, "objective.kw.share"),  # a rescue kw, rescue not named
]


@pytest.mark.parametrize(("kw", "key"), BAD_KW)
def test_bad_kw_raises_config_error_naming_the_key(toy_hooks, kw, key):
    logp, old_logp, adv, mask = ref.make_batch(0, 2, 3, 0.3)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        OBJECTIVES["clip"](logp, old_logp, adv, mask, **kw)


def test_bad_shapes_raise():
    logp, old_logp, adv, mask = ref.make_batch(0, 2, 3, 0.3)
    with pytest.raises(ValueError, match="adv"):
        OBJECTIVES["clip"](logp, old_logp, adv[:1], mask)
    with pytest.raises(ValueError, match="mask must be bool"):
        OBJECTIVES["clip"](logp, old_logp, adv, mask.float())


def _minibatch(ratios: list[float], adv: float, valid: int) -> tuple:
    """One sequence whose first `valid` tokens have these ratios (the rest padding)."""
    old_logp = torch.full((1, len(ratios)), -1.0)
    logp = old_logp + torch.log(torch.tensor([ratios]))
    mask = torch.arange(len(ratios))[None, :] < valid
    return logp, old_logp, torch.tensor([adv]), mask


def test_shares_pool_over_minibatches_as_a_ratio_of_sums_and_an_empty_one_adds_nothing():
    """A step of three mini-batches, hand-computed (eps 0.2):
    A: 4 valid tokens, A > 0, ratios 1.5, 1.3, 1.0, 0.9 -> 2 zeroed (above 1.2), |A| = 1
    B: no valid token at all (padding only)           -> nothing eligible
    C: 2 valid tokens, A < 0, ratios 1.0, 1.1         -> 0 zeroed, |A| = 0.5
    clipfrac of the step = (2 + 0) / (4 + 0 + 2) = 1/3; averaging the mini-batches' own fractions
    with 0/0 = 0 (what the trainer used to do) gives (1/2 + 0 + 0) / 3 = 1/6."""
    from repro.trainers.grpo import pool

    batches_ = [
        _minibatch([1.5, 1.3, 1.0, 0.9], 1.0, valid=4),
        _minibatch([1.0, 1.0], 1.0, valid=0),
        _minibatch([1.0, 1.1], -0.5, valid=2),
    ]
    stats = [OBJECTIVES["clip"](*b)[1] for b in batches_]
    assert [s["clipfrac"].den.item() for s in stats] == [4, 0, 2]
    assert math.isnan(float(stats[1]["clipfrac"]))  # nothing eligible: undefined, not 0
    step, shares = pool(stats)
    assert step["clipfrac"] == pytest.approx(1 / 3)
    assert step["clipfrac_high_pos_adv"] == pytest.approx(1 / 3)
    assert shares["clipfrac"].num.item() == 2 and shares["clipfrac"].den.item() == 6
    # ratio_max is the step's maximum, not a mean of per-mini-batch maxima.
    assert step["ratio_max"] == pytest.approx(1.5)
    # A step where nothing was eligible is NaN, never 0.
    empty, _ = pool([stats[1]])
    assert math.isnan(empty["clipfrac"])
