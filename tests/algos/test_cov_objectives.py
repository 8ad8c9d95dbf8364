"""KL-Cov (original and CIRCA form) and Clip-Cov: against a line-by-line transcription of verl's
functions (and verl itself when it is importable), plus the objective properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.algos import AGGREGATIONS, OBJECTIVES
from repro.errors import ConfigError

from . import properties as prop
from . import reference as ref
from . import reference_label_free as vref
from .properties import batches

KL_COV = [
    ("kl_cov", {}),  # verl defaults: ratio 0.0002, coef 1, no clipping
    ("kl_cov", {"kl_cov_ratio": 0.02, "ppo_kl_coef": 0.05, "clip_others": True}),  # CIRCA's form
    ("kl_cov", {"kl_cov_ratio": 0.5, "ppo_kl_coef": 1.0}),
]
CLIP_COV = [("clip_cov", {}), ("clip_cov", {"clip_cov_ratio": 0.3, "clip_cov_lb": 0.0, "clip_cov_ub": 5.0})]
CONFIGS = KL_COV + CLIP_COV
STATS = (*__import__("repro.algos.objectives", fromlist=["STAT_NAMES"]).STAT_NAMES,)


def _tok(adv, mask):
    return adv[:, None].expand(mask.shape).to(torch.float64) * mask


def _ours(name, kw, logp, old_logp, adv, mask, seed=0):
    return prop.loss_and_grad(name, kw, logp, old_logp, adv, mask, agg="token_mean", seed=seed)


@settings(max_examples=80, deadline=None)
@given(batch=batches, cfg=st.sampled_from([c for c in KL_COV if not c[1].get("clip_others")]))
def test_kl_cov_equals_verls_on_the_same_tensors(batch, cfg):
    """CIRCA's form (clip_others) has no verl counterpart: test_circa_form_... below."""
    logp, old_logp, adv, mask = batch
    name, kw = cfg
    _, loss, grad, _ = _ours(name, kw, logp, old_logp, adv, mask)
    lp = logp.detach().clone().requires_grad_()
    want = vref.verl_kl_cov(
        old_logp,
        lp,
        _tok(adv, mask).float(),
        mask.float(),
        kw.get("kl_cov_ratio", 0.0002),
        kw.get("ppo_kl_coef", 1.0),
    )
    (want_grad,) = (
        torch.autograd.grad(want, lp) if want.requires_grad and mask.any() else (torch.zeros_like(lp),)
    )
    assert torch.allclose(loss, want.detach(), atol=1e-6, rtol=1e-5)
    assert torch.allclose(grad, want_grad, atol=1e-6, rtol=1e-5)


@settings(max_examples=80, deadline=None)
@given(batch=batches, cfg=st.sampled_from(CLIP_COV), seed=st.integers(0, 2**16))
def test_clip_cov_equals_verls_on_the_same_tensors(batch, cfg, seed):
    logp, old_logp, adv, mask = batch
    name, kw = cfg
    _, loss, grad, _ = _ours(name, kw, logp, old_logp, adv, mask, seed=seed)
    lp = logp.detach().clone().requires_grad_()
    want = vref.verl_clip_cov(
        old_logp,
        lp,
        _tok(adv, mask).float(),
        mask.float(),
        kw.get("clip_cov_ratio", 0.0002),
        kw.get("clip_cov_lb", 1.0),
        kw.get("clip_cov_ub", 5.0),
        0.2,
        0.2,
        torch.Generator().manual_seed(seed),
    )
    (want_grad,) = torch.autograd.grad(want, lp, allow_unused=True) if want.requires_grad else (None,)
    want_grad = torch.zeros_like(lp) if want_grad is None else want_grad
    assert torch.allclose(loss, want.detach(), atol=1e-6, rtol=1e-5)
    assert torch.allclose(grad, want_grad, atol=1e-6, rtol=1e-5)


def test_against_verl_itself_when_installed():
    """verl 0.9.1 (an optional, separate environment: its dependencies are heavy)."""
    core = pytest.importorskip("verl.trainer.ppo.core_algos")
    from omegaconf import OmegaConf

    for seed in range(20):
        logp, old_logp, adv, mask = ref.make_batch(seed, 4, 6, 0.3)
        A = _tok(adv, mask).float()
        config = OmegaConf.create(
            {
                "clip_ratio": 0.2,
                "clip_ratio_low": 0.2,
                "clip_ratio_high": 0.2,
                "global_batch_info": {},
                "policy_loss": {
                    "kl_cov_ratio": 0.1,
                    "ppo_kl_coef": 1.0,
                    "clip_cov_ratio": 0.2,
                    "clip_cov_lb": 0.0,
                    "clip_cov_ub": 5.0,
                },
            }
        )
        for name, kw in (
            ("kl_cov", {"kl_cov_ratio": 0.1}),
            ("clip_cov", {"clip_cov_ratio": 0.2, "clip_cov_lb": 0.0}),
        ):
            torch.manual_seed(seed)
            out = core.get_policy_loss_fn(name)(
                old_logp, logp.detach(), A, mask.float(), "token-mean", config
            )
            _, loss, _, _ = _ours(name, kw, logp, old_logp, adv, mask, seed=seed)
            assert torch.allclose(loss, out[0], atol=1e-6), name


@settings(max_examples=60, deadline=None)
@given(batch=batches)
def test_circa_form_clips_the_others_and_penalises_the_top(batch):
    logp, old_logp, adv, mask = batch
    kw = {"kl_cov_ratio": 0.3, "ppo_kl_coef": 0.05, "clip_others": True}
    loss_mat, _ = prop.run("kl_cov", kw, logp.detach(), old_logp, adv, mask)
    clipped = ref.ppo_clip_loss(
        logp.detach().double(), old_logp.double(), adv.double(), mask, 0.2, 0.2
    ).float()
    log_r = (logp.detach() - old_logp).where(mask, 0.0)
    penalised = (-adv[:, None] * log_r.exp() + 0.05 * log_r.abs()).where(mask, 0.0)
    n = int(mask.sum())
    is_pen = torch.isclose(loss_mat, penalised, atol=1e-6) & ~torch.isclose(loss_mat, clipped, atol=1e-6)
    is_clip = torch.isclose(loss_mat, clipped, atol=1e-6)
    assert torch.all(is_pen | is_clip)
    if n:
        assert int(is_pen.sum()) <= max(1, int(0.3 * n))


@pytest.mark.parametrize("cfg", CONFIGS, ids=prop.config_id)
@settings(max_examples=40, deadline=None)
@given(batch=batches, junk_seed=st.integers(0, 2**16), agg=st.sampled_from(AGGREGATIONS.names()))
def test_padding_changes_nothing(cfg, batch, junk_seed, agg):
    prop.check_padding_changes_nothing(*cfg, batch, junk_seed, agg)


@pytest.mark.parametrize("cfg", KL_COV, ids=prop.config_id)
@settings(max_examples=40, deadline=None)
@given(batch=batches)
def test_kl_cov_at_ratio_one_gradient_is_reinforce(cfg, batch):
    prop.check_at_ratio_one_gradient_is_reinforce(*cfg, batch)


@settings(max_examples=40, deadline=None)
@given(batch=batches)
def test_zero_advantage(batch):
    prop.check_zero_advantage_gives_zero_loss_and_gradient("clip_cov", {"clip_cov_lb": -1.0}, batch)
    prop.check_zero_advantage_gives_zero_loss_and_gradient("kl_cov", {"ppo_kl_coef": 0.0}, batch)


@settings(max_examples=60, deadline=None)
@given(batch=batches, eps=st.sampled_from([0.05, 0.2, 0.28]))
def test_at_baseline_parameters_each_equals_its_baseline(batch, eps):
    logp, old_logp, adv, mask = batch
    base = prop.loss_and_grad("clip", {"eps_low": 0.2, "eps_high": eps}, logp, old_logp, adv, mask)
    empty_band = prop.loss_and_grad(
        "clip_cov",
        {"eps_low": 0.2, "eps_high": eps, "clip_cov_lb": 3.0, "clip_cov_ub": 3.0},
        logp,
        old_logp,
        adv,
        mask,
    )
    assert torch.allclose(base[0], empty_band[0]) and torch.allclose(base[2], empty_band[2])
    # KL-Cov with a zero penalty and no clipping is the unclipped policy gradient -r A.
    unclipped = prop.loss_and_grad("kl_cov", {"ppo_kl_coef": 0.0}, logp, old_logp, adv, mask)
    want = (-adv[:, None] * (logp.detach() - old_logp).exp()).where(mask, 0.0)
    assert torch.allclose(unclipped[0], want, atol=1e-6)


@pytest.mark.parametrize("cfg", CONFIGS, ids=prop.config_id)
@settings(max_examples=30, deadline=None)
@given(batch=batches, seed=st.integers(0, 2**16))
def test_stats_and_determinism(cfg, batch, seed):
    names = (*STATS, "cov/frac", "cov/penalty_share") if cfg[0] == "kl_cov" else (*STATS, "cov/frac")
    prop.check_stats_are_named_finite_scalars(*cfg, batch, names, ("cov/frac", "clipfrac"))
    prop.check_same_generator_seed_same_output(*cfg, batch, seed)


@settings(max_examples=40, deadline=None)
@given(batch=batches, ratio=st.sampled_from([0.0002, 0.02, 0.3, 1.0]))
def test_kl_cov_touches_max_1_int_ratio_n_tokens(batch, ratio):
    logp, old_logp, adv, mask = batch
    _, _, _, stats = prop.loss_and_grad("kl_cov", {"kl_cov_ratio": ratio}, logp, old_logp, adv, mask)
    n = int(mask.sum())
    if n == 0:  # nothing eligible: the share is undefined (NaN), and pools as nothing
        assert math.isnan(float(stats["cov/frac"]))
    else:
        assert float(stats["cov/frac"]) == pytest.approx(max(1, int(n * ratio)) / n)


@pytest.mark.parametrize(
    "name,kw,key",
    [
        ("kl_cov", {"kl_cov_ratio": 0.0}, "kl_cov_ratio"),
        ("kl_cov", {"ppo_kl_coef": -1.0}, "ppo_kl_coef"),
        ("clip_cov", {"clip_cov_ratio": 2.0}, "clip_cov_ratio"),
        ("clip_cov", {"eps_low": 1.5}, "eps_low"),
    ],
)
def test_bad_settings_name_the_key(name, kw, key):
    logp, old_logp, adv, mask = ref.make_batch(0, 2, 3, 0.1)
    with pytest.raises(ConfigError, match=key):
        OBJECTIVES[name](logp, old_logp, adv, mask, **kw)
