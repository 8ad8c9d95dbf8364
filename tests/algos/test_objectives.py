"""Properties of every registered objective (and every rescue spec inside the NSR ones), and
comparisons with the loop references in `reference.py`."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.algos import AGGREGATIONS, OBJECTIVES, RESCUES
from repro.algos.objectives import STAT_NAMES
from repro.errors import ConfigError
from repro.registry import UnknownNameError

from . import reference as ref

# Every objective, and every rescue spec under both NSR objectives, at default kw.
CONFIGS = [
    ("clip", {}),
    ("clip", {"eps_high": 0.28}),
    ("gspo", {}),
    *[("clip_nsr", {"spec": spec}) for spec in RESCUES],
    *[("gspo_nsr", {"spec": spec}) for spec in RESCUES],
    ("clip_nsr", {"spec": "band", "band_mult": 3.0, "keep_prob": 0.7, "eps_high": 0.28}),
    ("gspo_nsr", {"spec": "perturb", "delta": 5e-4}),
]


def config_id(config: tuple[str, dict]) -> str:
    name, kw = config
    return "-".join([name, *(f"{k}={v}" for k, v in kw.items())])


CONFIG_IDS = [config_id(c) for c in CONFIGS]
NO_PUSH = [c for c in CONFIGS if c[1].get("spec") != "push_only"]
# The per-config properties run for each of the configs above; fewer examples each keeps the
# module within its time budget while every config still sees a spread of batches.
per_config = settings(max_examples=25)
SHARES = [s for s in STAT_NAMES if s not in ("ratio_dev", "kl_k3", "ratio_max")]


def test_every_registered_function_is_covered():
    assert {name for name, _ in CONFIGS} == set(OBJECTIVES)
    assert set(RESCUES) == {"none", "perturb", "band", "decay", "push_only"}


batches = st.builds(
    ref.make_batch,
    seed=st.integers(0, 2**32 - 1),
    B=st.integers(1, 5),
    T=st.integers(1, 7),
    spread=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
)


def run(name, kw, logp, old_logp, adv, mask, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return OBJECTIVES[name](logp, old_logp, adv, mask, generator=gen, **kw)


def grad_or_zeros(loss, x):
    """d loss / d x, or zeros when loss does not depend on x (e.g. an all-padding batch)."""
    if not loss.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def loss_and_grad(name, kw, logp, old_logp, adv, mask, agg="token_mean", seed=0):
    logp = logp.detach().clone().requires_grad_()
    loss_mat, stats = run(name, kw, logp, old_logp, adv, mask, seed)
    loss = AGGREGATIONS[agg](loss_mat, mask)
    grad = grad_or_zeros(loss, logp)
    return loss_mat.detach(), loss.detach(), grad, stats


# ------------------------------------------------------------------------------------------
# Properties of every objective
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
@per_config
@given(batch=batches)
def test_zero_advantage_gives_zero_loss_and_gradient(name, kw, batch):
    logp, old_logp, adv, mask = batch
    loss_mat, loss, grad, _ = loss_and_grad(name, kw, logp, old_logp, torch.zeros_like(adv), mask)
    assert torch.all(loss_mat == 0) and loss == 0 and torch.all(grad == 0)


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
@per_config
@given(batch=batches, junk_seed=st.integers(0, 2**16), agg=st.sampled_from(AGGREGATIONS.names()))
def test_padding_changes_nothing(name, kw, batch, junk_seed, agg):
    logp, old_logp, adv, mask = batch
    junk = torch.Generator().manual_seed(junk_seed)
    logp2 = torch.where(mask, logp.detach(), 50 * torch.randn(logp.shape, generator=junk))
    old2 = torch.where(mask, old_logp, -50 * torch.rand(logp.shape, generator=junk))
    a = loss_and_grad(name, kw, logp, old_logp, adv, mask, agg)
    b = loss_and_grad(name, kw, logp2, old2, adv, mask, agg)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert torch.all(a[0][~mask] == 0) and torch.all(a[2][~mask] == 0)
    for key in STAT_NAMES:
        assert torch.equal(a[3][key], b[3][key]), key


@pytest.mark.parametrize(("name", "kw"), NO_PUSH, ids=[config_id(c) for c in NO_PUSH])
@per_config
@given(batch=batches)
def test_at_ratio_one_gradient_is_reinforce(name, kw, batch):
    # push_only is excluded: it pushes in-bound tokens out even at r = 1, by design.
    _, old_logp, adv, mask = batch
    logp = old_logp.clone().requires_grad_()
    loss_mat, _ = run(name, kw, logp, old_logp, adv, mask)
    (grad,) = torch.autograd.grad(loss_mat.sum(), logp)
    reinforce = -adv[:, None] * mask  # d(-A logp_t)/d logp_t per valid token
    assert torch.allclose(grad, reinforce.expand_as(grad))
    assert torch.allclose(loss_mat, -adv[:, None] * mask)


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
@per_config
@given(batch=batches)
def test_stats_are_named_finite_scalars_and_shares_are_in_unit_interval(name, kw, batch):
    _, _, _, stats = loss_and_grad(name, kw, *batch)
    assert tuple(stats) == STAT_NAMES
    for key, value in stats.items():
        assert value.ndim == 0 and torch.isfinite(value), key
        assert not value.requires_grad, key
    for key in SHARES:
        assert 0 <= stats[key] <= 1 + 1e-6, key
    assert stats["kl_k3"] >= 0 and stats["ratio_dev"] >= 0


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
@per_config
@given(batch=batches, seed=st.integers(0, 2**16))
def test_same_generator_seed_same_output(name, kw, batch, seed):
    a = loss_and_grad(name, kw, *batch, seed=seed)
    b = loss_and_grad(name, kw, *batch, seed=seed)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert all(torch.equal(a[3][k], b[3][k]) for k in STAT_NAMES)


# ------------------------------------------------------------------------------------------
# Hard clipping, GSPO, and the variants that must reduce to them
# ------------------------------------------------------------------------------------------

eps_pairs = st.sampled_from([(0.2, 0.2), (0.2, 0.28), (0.1, 0.3), (0.05, 0.01)])


@given(batch=batches, eps=eps_pairs)
def test_clip_matches_ppo_reference(batch, eps):
    logp, old_logp, adv, mask = batch
    eps_low, eps_high = eps
    kw = {"eps_low": eps_low, "eps_high": eps_high}
    loss_mat, _, grad, _ = loss_and_grad("clip", kw, *batch, agg="token_mean")
    logp_ref = logp.detach().clone().requires_grad_()
    ref_mat = ref.ppo_clip_loss(logp_ref, old_logp, adv, mask, eps_low, eps_high)
    ref_loss = ref_mat.sum() / mask.sum().clamp(min=1)
    ref_grad = grad_or_zeros(ref_loss, logp_ref)
    assert torch.allclose(loss_mat, ref_mat.detach(), atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)


@given(batch=batches)
def test_symmetric_eps_is_grpo(batch):
    # DAPO's clip-higher with eps_high == eps_low is GRPO's symmetric clip.
    grpo = loss_and_grad("clip", {}, *batch)
    dapo = loss_and_grad("clip", {"eps_low": 0.2, "eps_high": 0.2}, *batch)
    assert torch.equal(grpo[0], dapo[0]) and torch.equal(grpo[2], dapo[2])


REDUCES_TO = [
    ("clip", {"eps_high": 0.28}, "clip_nsr", {"spec": "none", "eps_high": 0.28}),
    ("clip", {"eps_high": 0.28}, "clip_nsr", {"spec": "band", "keep_prob": 0.0, "eps_high": 0.28}),
    ("clip", {}, "clip_nsr", {"spec": "perturb", "delta": 0.0}),
    ("clip", {}, "clip_nsr", {"spec": "decay", "delta": 0.0}),
    ("gspo", {}, "gspo_nsr", {"spec": "none"}),
    ("gspo", {}, "gspo_nsr", {"spec": "band", "keep_prob": 0.0}),
    ("gspo", {}, "gspo_nsr", {"spec": "perturb", "delta": 0.0}),
]


@pytest.mark.parametrize(("base", "base_kw", "variant", "variant_kw"), REDUCES_TO)
@given(batch=batches)
def test_variant_at_baseline_parameters_equals_baseline_exactly(base, base_kw, variant, variant_kw, batch):
    a = loss_and_grad(base, base_kw, *batch)
    b = loss_and_grad(variant, variant_kw, *batch)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


one_token_batches = st.builds(
    ref.make_batch,
    seed=st.integers(0, 2**32 - 1),
    B=st.integers(1, 6),
    T=st.just(1),
    spread=st.sampled_from([0.05, 0.3, 1.0]),
)


@given(batch=one_token_batches, eps=eps_pairs)
def test_gspo_with_one_token_equals_clip(batch, eps):
    kw = {"eps_low": eps[0], "eps_high": eps[1]}
    a = loss_and_grad("clip", kw, *batch)
    b = loss_and_grad("gspo", kw, *batch)
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[2], b[2], atol=1e-6)


@given(batch=batches, eps=st.sampled_from([(3e-4, 4e-4), (0.2, 0.2), (0.05, 0.1)]))
def test_gspo_matches_sequence_level_reference(batch, eps):
    # GSPO-token with sequence-mean aggregation has GSPO's sequence-level value and gradient.
    logp, old_logp, adv, mask = batch
    kw = {"eps_low": eps[0], "eps_high": eps[1]}
    _, loss, grad, _ = loss_and_grad("gspo", kw, *batch, agg="seq_mean_token_mean")
    logp_ref = logp.detach().clone().requires_grad_()
    ref_loss = ref.gspo_sequence_loss(logp_ref, old_logp, adv, mask, *eps)
    ref_grad = grad_or_zeros(ref_loss, logp_ref)
    assert torch.allclose(loss, ref_loss.detach(), atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)


# ------------------------------------------------------------------------------------------
# NSR against the loop reference, with the same uniform draws
# ------------------------------------------------------------------------------------------

NSR_SPECS = [
    {"spec": "perturb"},
    {"spec": "perturb", "delta": 0.3},
    {"spec": "band"},
    {"spec": "band", "band_mult": 2.5, "keep_prob": 0.6},
    {"spec": "decay", "delta": 0.2},
    {"spec": "push_only", "delta": 0.3},
    {"spec": "none"},
]


@pytest.mark.parametrize("spec_kw", NSR_SPECS, ids=lambda kw: "-".join(map(str, kw.values())))
@given(batch=batches, seed=st.integers(0, 2**16), eps=st.sampled_from([(0.2, 0.28), (0.1, 0.1)]))
def test_clip_nsr_matches_reference(spec_kw, batch, seed, eps):
    logp, old_logp, adv, mask = batch
    kw = {"eps_low": eps[0], "eps_high": eps[1], **spec_kw}
    loss_mat, _, grad, stats = loss_and_grad("clip_nsr", kw, *batch, agg="token_mean", seed=seed)
    rescue_kw = {k: v for k, v in spec_kw.items() if k != "spec"}
    # The spec draws one torch.rand(ratio.shape) from the generator: replay it.
    u01 = torch.rand(logp.shape, generator=torch.Generator().manual_seed(seed))
    ratio = torch.where(mask, logp.detach() - old_logp, 0.0).exp()  # (B, T)
    g = ref.rescue_g(spec_kw["spec"], ratio, adv[:, None].expand_as(ratio), *eps, u01, **rescue_kw)
    logp_ref = logp.detach().clone().requires_grad_()
    live = torch.exp(logp_ref - old_logp)
    ref_mat = ref.general_loss(ratio, live, adv, mask, g, *eps)
    ref_loss = ref_mat.sum() / mask.sum().clamp(min=1)
    ref_grad = grad_or_zeros(ref_loss, logp_ref)
    assert torch.allclose(loss_mat, ref_mat.detach(), atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)
    ref_stats = ref.clip_stats(ratio, adv, g, mask, *eps, 0.05, 1.5)
    for key in STAT_NAMES:
        assert stats[key].item() == pytest.approx(ref_stats[key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("spec_kw", NSR_SPECS, ids=lambda kw: "-".join(map(str, kw.values())))
@given(batch=batches, seed=st.integers(0, 2**16), eps=st.sampled_from([(3e-4, 4e-4), (0.1, 0.1)]))
def test_gspo_nsr_matches_reference(spec_kw, batch, seed, eps):
    logp, old_logp, adv, mask = batch
    kw = {"eps_low": eps[0], "eps_high": eps[1], **spec_kw}
    loss_mat, _, grad, stats = loss_and_grad("gspo_nsr", kw, *batch, agg="token_mean", seed=seed)
    rescue_kw = {k: v for k, v in spec_kw.items() if k != "spec"}
    # One draw per sequence: torch.rand((B, 1)).
    u01 = torch.rand((logp.shape[0], 1), generator=torch.Generator().manual_seed(seed))
    length = mask.sum(1, keepdim=True)  # (B, 1)
    log_ratio = torch.where(mask, logp.detach() - old_logp, 0.0)
    s = (log_ratio.sum(1, keepdim=True) / length.clamp(min=1)).exp()  # (B, 1)
    g = ref.rescue_g(spec_kw["spec"], s, adv[:, None], *eps, u01, **rescue_kw)  # (B, 1)
    logp_ref = logp.detach().clone().requires_grad_()
    live = s * torch.exp(logp_ref - logp_ref.detach())  # GSPO-token: value s_i, gradient s_i d(logp_t)
    s_tok, g_tok = s.expand_as(logp), g.expand_as(logp)
    ref_mat = ref.general_loss(s_tok, live, adv, mask, g_tok, *eps)
    ref_loss = ref_mat.sum() / mask.sum().clamp(min=1)
    ref_grad = grad_or_zeros(ref_loss, logp_ref)
    assert torch.allclose(loss_mat, ref_mat.detach(), atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)
    ref_stats = ref.clip_stats(s_tok, adv, g_tok, mask, *eps, 0.05, 1.5)
    for key in STAT_NAMES:
        assert stats[key].item() == pytest.approx(ref_stats[key], rel=1e-5, abs=1e-6), key


def test_rescued_tokens_get_the_unclipped_gradient():
    # Two A > 0 tokens just past 1 + eps_high; band with keep_prob 1 rescues both.
    old_logp = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.25, 1.25]])).requires_grad_()
    adv, mask = torch.tensor([2.0]), torch.ones(1, 2, dtype=torch.bool)
    hard, _ = OBJECTIVES["clip"](logp, old_logp, adv, mask)
    nsr, stats = OBJECTIVES["clip_nsr"](logp, old_logp, adv, mask, spec="band", keep_prob=1.0)
    # Hard clip: value -clip(r) A = -1.2 * 2, no gradient. Rescued: the unclipped -r A and its gradient.
    assert torch.allclose(hard, torch.tensor([[-2.4, -2.4]]))
    assert torch.allclose(nsr, torch.tensor([[-2.5, -2.5]]))
    assert torch.autograd.grad(hard.sum(), logp)[0].abs().max() == 0
    assert torch.allclose(torch.autograd.grad(nsr.sum(), logp)[0], torch.tensor([[-2.5, -2.5]]))
    assert stats["rescued_frac"] == 1 and stats["clipfrac"] == 1 and stats["nbm_abs_tok"] == 1


def test_stats_by_side_and_sign_on_a_hand_built_batch():
    # ratios: 1.5 (A>0: zeroed high), 1.5 (A<0), 0.5 (A>0), 0.5 (A<0: zeroed low), 1.0 (in bound)
    ratio = torch.tensor([[1.5], [1.5], [0.5], [0.5], [1.0]])
    old_logp = torch.zeros(5, 1)
    adv = torch.tensor([1.0, -1.0, 1.0, -3.0, 1.0])
    mask = torch.ones(5, 1, dtype=torch.bool)
    _, stats = OBJECTIVES["clip"](ratio.log(), old_logp, adv, mask)
    assert stats["clipfrac"] == pytest.approx(0.4)
    for side in ("high_pos", "high_neg", "low_pos", "low_neg"):
        key = f"clipfrac_{side}_adv"
        assert stats[key] == pytest.approx(0.2), key
    assert stats["nbm_abs_tok"] == 0 and stats["nbm_rel_tok"] == 0  # 1.5 and 0.5 are deep
    assert stats["ratio_max"] == pytest.approx(1.5)


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


def test_unknown_objective_lists_registered_names():
    with pytest.raises(UnknownNameError, match="clip, clip_nsr, gspo, gspo_nsr"):
        OBJECTIVES["ppo"]


def test_unknown_spec_lists_registered_rescues():
    logp, old_logp, adv, mask = ref.make_batch(0, 2, 3, 0.3)
    with pytest.raises(UnknownNameError, match="band, decay, none, perturb, push_only"):
        OBJECTIVES["clip_nsr"](logp, old_logp, adv, mask, spec="rescue_only")


BAD_KW = [
    ("clip", {"eps_high": -0.1}, "objective.kw.eps_high"),
    ("clip", {"eps_low": 0.0}, "objective.kw.eps_low"),
    ("clip", {"eps_low": 1.0}, "objective.kw.eps_low"),
    ("gspo", {"eps_high": 0.0}, "objective.kw.eps_high"),
    ("clip", {"nbm_abs_width": 0.0}, "objective.kw.nbm_abs_width"),
    ("clip", {"nbm_rel_mult": 0.5}, "objective.kw.nbm_rel_mult"),
    ("clip_nsr", {"spec": "perturb", "delta": -0.1}, "objective.kw.delta"),
    ("clip_nsr", {"spec": "perturb", "delta": 1.0}, "objective.kw.delta"),
    ("gspo_nsr", {"spec": "decay", "delta": 1.5}, "objective.kw.delta"),
    ("clip_nsr", {"spec": "push_only", "delta": -1}, "objective.kw.delta"),
    ("clip_nsr", {"spec": "band", "keep_prob": 1.2}, "objective.kw.keep_prob"),
    ("clip_nsr", {"spec": "band", "keep_prob": -0.2}, "objective.kw.keep_prob"),
    ("clip_nsr", {"spec": "band", "band_mult": 0.9}, "objective.kw.band_mult"),
    ("clip_nsr", {"spec": "band", "delta": 0.1}, "objective.kw.delta"),  # not a band parameter
    ("gspo_nsr", {"spec": "perturb", "keep_prob": 0.5}, "objective.kw.keep_prob"),
    ("clip_nsr", {"spec": "none", "delta": 0.1}, "objective.kw.delta"),
]


@pytest.mark.parametrize(("name", "kw", "key"), BAD_KW)
def test_bad_kw_raises_value_error_naming_the_key(name, kw, key):
    logp, old_logp, adv, mask = ref.make_batch(0, 2, 3, 0.3)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as info:
        OBJECTIVES[name](logp, old_logp, adv, mask, **kw)
    assert isinstance(info.value, ConfigError)


def test_bad_shapes_raise():
    logp, old_logp, adv, mask = ref.make_batch(0, 2, 3, 0.3)
    with pytest.raises(ValueError, match="adv"):
        OBJECTIVES["clip"](logp, old_logp, adv[:1], mask)
    with pytest.raises(ValueError, match="mask must be bool"):
        OBJECTIVES["clip"](logp, old_logp, adv, mask.float())
