"""NSR on the clipped objective: every rescue rule of experiments/clipping_bottleneck/nsr.py at both
levels has the objective's properties, reduces to hard clipping at its baseline parameters, matches
the loop references with the same draws, and its diagnostics are the ones the paper's table uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from algos import properties as prop
from algos import reference as core_ref
from algos.properties import batches, grad_or_zeros, loss_and_grad
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.clipping_bottleneck import nsr
from repro.algos import OBJECTIVES, RESCUES
from repro.algos.objectives import STAT_NAMES
from repro.errors import ConfigError
from repro.tables.claims import load_claimed

from . import reference as ref

REPO = Path(__file__).resolve().parents[2]
GSPO_EPS = {"eps_low": 3e-4, "eps_high": 4e-4}  # GSPO paper (v2) §5.1
STATS = {"stats": ["near_boundary"]}
RULES = sorted(name for name in RESCUES if RESCUES[name].__module__ == nsr.__name__)
# Every NSR rule (and hard clipping) at both levels, as the arms use them, plus non-default kw.
CONFIGS = [
    *[("clip", {"rescue": rule, "eps_high": 0.28, **STATS}) for rule in ["none", *RULES]],
    *[("clip", {"rescue": rule, "level": "sequence", **GSPO_EPS, **STATS}) for rule in ["none", *RULES]],
    ("clip", {"rescue": "band", "band_mult": 3.0, "keep_prob": 0.7, "eps_high": 0.28, **STATS}),
    ("clip", {"rescue": "perturb", "level": "sequence", **GSPO_EPS, "delta": 5e-4, **STATS}),
]
CONFIG_IDS = [prop.config_id(c) for c in CONFIGS]
NO_PUSH = [c for c in CONFIGS if c[1]["rescue"] != "push_only"]
NAMES = (*STAT_NAMES, *nsr.STAT_NAMES)
SHARES = [s for s in NAMES if s not in ("ratio_dev", "kl_k3", "ratio_max")]
per_config = settings(max_examples=25)


def test_the_package_registers_the_four_rules_and_its_stats():
    assert RULES == ["band", "decay", "perturb", "push_only"]
    assert nsr.STAT_NAMES == (
        "nbm_abs_tok",
        "nbm_abs_tok_of_clipped",
        "nbm_abs_sig",
        "nbm_abs_sig_of_clipped",
        "nbm_rel_tok",
        "nbm_rel_tok_of_clipped",
        "nbm_rel_sig",
        "nbm_rel_sig_of_clipped",
        "rescued_frac",
        "rescued_frac_of_clipped",
        "rescued_sig",
        "rescued_sig_of_clipped",
        "pushed_frac",
    )


def test_the_paper_table_declares_every_metric_nsr_logs():
    """The committed records and the table name these metrics: claimed.yaml must declare them."""
    paper = load_claimed(REPO / "paper_tables" / "clipping_bottleneck" / "claimed.yaml")
    declared = yaml.safe_load((REPO / "paper_tables" / "clipping_bottleneck" / "claimed.yaml").read_text())
    # Per step (train/) and pooled over the run (run/, every share the trainer pools).
    assert {f"{p}/{name}" for p in ("train", "run") for name in nsr.STAT_NAMES} <= set(declared["metrics"])
    assert {f"train/{name}" for name in STAT_NAMES} <= paper.metrics
    assert {f"run/{name}" for name in STAT_NAMES if name != "ratio_max"} <= paper.metrics


# ------------------------------------------------------------------------------------------
# The objective's properties, for every rule
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
@per_config
@given(batch=batches)
def test_zero_advantage_gives_zero_loss_and_gradient(name, kw, batch):
    prop.check_zero_advantage_gives_zero_loss_and_gradient(name, kw, batch)


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
@per_config
@given(
    batch=batches, junk_seed=st.integers(0, 2**16), agg=st.sampled_from(["token_mean", "seq_mean_token_mean"])
)
def test_padding_changes_nothing(name, kw, batch, junk_seed, agg):
    prop.check_padding_changes_nothing(name, kw, batch, junk_seed, agg)


@pytest.mark.parametrize(("name", "kw"), NO_PUSH, ids=[prop.config_id(c) for c in NO_PUSH])
@per_config
@given(batch=batches)
def test_at_ratio_one_gradient_is_reinforce(name, kw, batch):
    # push_only is excluded: it pushes in-bound tokens out even at r = 1, by design.
    prop.check_at_ratio_one_gradient_is_reinforce(name, kw, batch)


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
@per_config
@given(batch=batches)
def test_stats_are_named_finite_scalars_and_shares_are_in_unit_interval(name, kw, batch):
    prop.check_stats_are_named_finite_scalars(name, kw, batch, NAMES, SHARES)


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
@per_config
@given(batch=batches, seed=st.integers(0, 2**16))
def test_same_generator_seed_same_output(name, kw, batch, seed):
    prop.check_same_generator_seed_same_output(name, kw, batch, seed)


# ------------------------------------------------------------------------------------------
# At its baseline parameters a rule is hard clipping, exactly
# ------------------------------------------------------------------------------------------

REDUCES_TO_HARD_CLIP = [
    {"rescue": "band", "keep_prob": 0.0},  # keep-probability 0
    {"rescue": "perturb", "delta": 0.0},  # no noise
    {"rescue": "decay", "delta": 0.0},  # expected keep rate of no noise: 0 past the boundary
    {"rescue": "none"},
]


@pytest.mark.parametrize(
    "level", [{"eps_high": 0.28}, {"level": "sequence", **GSPO_EPS}], ids=["token", "seq"]
)
@pytest.mark.parametrize("variant", REDUCES_TO_HARD_CLIP, ids=lambda kw: "-".join(map(str, kw.values())))
@given(batch=batches)
def test_rule_at_baseline_parameters_equals_hard_clipping_exactly(level, variant, batch):
    a = loss_and_grad("clip", {**level, **STATS}, *batch)
    b = loss_and_grad("clip", {**level, **variant, **STATS}, *batch)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert all(prop.stat_equal(a[3][k], b[3][k]) for k in NAMES)


@given(batch=batches)
def test_near_boundary_stats_never_change_the_loss(batch):
    a = loss_and_grad("clip", {"rescue": "perturb", "eps_high": 0.28}, *batch)
    b = loss_and_grad("clip", {"rescue": "perturb", "eps_high": 0.28, **STATS}, *batch)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert all(prop.stat_equal(a[3][k], b[3][k]) for k in STAT_NAMES)


# ------------------------------------------------------------------------------------------
# Against the loop references, with the same uniform draws
# ------------------------------------------------------------------------------------------

RULE_KW = [
    {"rescue": "perturb"},
    {"rescue": "perturb", "delta": 0.3},
    {"rescue": "band"},
    {"rescue": "band", "band_mult": 2.5, "keep_prob": 0.6},
    {"rescue": "decay", "delta": 0.2},
    {"rescue": "push_only", "delta": 0.3},
    {"rescue": "none"},
]


def _check_stats(stats, ratio, adv, g, mask, eps):
    ref_stats = core_ref.clip_stats(ratio, adv, mask, *eps) | ref.near_boundary(ratio, adv, g, mask, *eps)
    for key in NAMES:
        assert stats[key].item() == pytest.approx(ref_stats[key], rel=1e-5, abs=1e-6, nan_ok=True), key


@pytest.mark.parametrize("rule_kw", RULE_KW, ids=lambda kw: "-".join(map(str, kw.values())))
@given(batch=batches, seed=st.integers(0, 2**16), eps=st.sampled_from([(0.2, 0.28), (0.1, 0.1)]))
def test_token_level_matches_reference(rule_kw, batch, seed, eps):
    logp, old_logp, adv, mask = batch
    kw = {"eps_low": eps[0], "eps_high": eps[1], **rule_kw, **STATS}
    loss_mat, _, grad, stats = loss_and_grad("clip", kw, *batch, agg="token_mean", seed=seed)
    rule, rule_args = rule_kw["rescue"], {k: v for k, v in rule_kw.items() if k != "rescue"}
    # The rule draws one torch.rand(ratio.shape) from the generator: replay it.
    u01 = torch.rand(logp.shape, generator=torch.Generator().manual_seed(seed))
    ratio = torch.where(mask, logp.detach() - old_logp, 0.0).exp()  # (B, T)
    g = ref.rescue_g(rule, ratio, adv[:, None].expand_as(ratio), *eps, u01, **rule_args)
    logp_ref = logp.detach().clone().requires_grad_()
    live = torch.exp(logp_ref - old_logp)
    ref_mat = core_ref.general_loss(ratio, live, adv, mask, g, *eps)
    ref_grad = grad_or_zeros(ref_mat.sum() / mask.sum().clamp(min=1), logp_ref)
    assert torch.allclose(loss_mat, ref_mat.detach(), atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)
    _check_stats(stats, ratio, adv, g, mask, eps)


@pytest.mark.parametrize("rule_kw", RULE_KW, ids=lambda kw: "-".join(map(str, kw.values())))
@given(batch=batches, seed=st.integers(0, 2**16), eps=st.sampled_from([(3e-4, 4e-4), (0.1, 0.1)]))
def test_sequence_level_matches_reference(rule_kw, batch, seed, eps):
    logp, old_logp, adv, mask = batch
    kw = {"level": "sequence", "eps_low": eps[0], "eps_high": eps[1], **rule_kw, **STATS}
    loss_mat, _, grad, stats = loss_and_grad("clip", kw, *batch, agg="token_mean", seed=seed)
    rule, rule_args = rule_kw["rescue"], {k: v for k, v in rule_kw.items() if k != "rescue"}
    # One draw per sequence: torch.rand((B, 1)).
    u01 = torch.rand((logp.shape[0], 1), generator=torch.Generator().manual_seed(seed))
    length = mask.sum(1, keepdim=True)  # (B, 1)
    log_ratio = torch.where(mask, logp.detach() - old_logp, 0.0)
    s = (log_ratio.sum(1, keepdim=True) / length.clamp(min=1)).exp()  # (B, 1)
    g = ref.rescue_g(rule, s, adv[:, None], *eps, u01, **rule_args)  # (B, 1)
    logp_ref = logp.detach().clone().requires_grad_()
    live = s * torch.exp(logp_ref - logp_ref.detach())  # GSPO-token: value s_i, gradient s_i d(logp_t)
    s_tok, g_tok = s.expand_as(logp), g.expand_as(logp)
    ref_mat = core_ref.general_loss(s_tok, live, adv, mask, g_tok, *eps)
    ref_grad = grad_or_zeros(ref_mat.sum() / mask.sum().clamp(min=1), logp_ref)
    assert torch.allclose(loss_mat, ref_mat.detach(), atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)
    _check_stats(stats, s_tok, adv, g_tok, mask, eps)


def test_rescued_tokens_get_the_unclipped_gradient():
    # Two A > 0 tokens just past 1 + eps_high; band with keep_prob 1 rescues both.
    old_logp = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.25, 1.25]])).requires_grad_()
    adv, mask = torch.tensor([2.0]), torch.ones(1, 2, dtype=torch.bool)
    hard, _ = OBJECTIVES["clip"](logp, old_logp, adv, mask)
    rescued, stats = OBJECTIVES["clip"](logp, old_logp, adv, mask, rescue="band", keep_prob=1.0, **STATS)
    # Hard clip: value -clip(r) A = -1.2 * 2, no gradient. Rescued: the unclipped -r A and its gradient.
    assert torch.allclose(hard, torch.tensor([[-2.4, -2.4]]))
    assert torch.allclose(rescued, torch.tensor([[-2.5, -2.5]]))
    assert torch.autograd.grad(hard.sum(), logp)[0].abs().max() == 0
    assert torch.allclose(torch.autograd.grad(rescued.sum(), logp)[0], torch.tensor([[-2.5, -2.5]]))
    assert (
        float(stats["rescued_frac"]) == 1
        and float(stats["clipfrac"]) == 1
        and float(stats["nbm_abs_tok"]) == 1
    )


def test_deep_violations_are_outside_both_bands():
    # ratios: 1.5 (A>0: zeroed high), 1.5 (A<0), 0.5 (A>0), 0.5 (A<0: zeroed low), 1.0 (in bound)
    ratio = torch.tensor([[1.5], [1.5], [0.5], [0.5], [1.0]])
    adv = torch.tensor([1.0, -1.0, 1.0, -3.0, 1.0])
    mask = torch.ones(5, 1, dtype=torch.bool)
    _, stats = OBJECTIVES["clip"](ratio.log(), torch.zeros(5, 1), adv, mask, **STATS)
    assert float(stats["clipfrac"]) == pytest.approx(0.4)
    assert float(stats["nbm_abs_tok"]) == 0 and float(stats["nbm_rel_tok"]) == 0  # 1.5 and 0.5 are deep
    assert float(stats["rescued_frac"]) == 0 and float(stats["pushed_frac"]) == 0


# ------------------------------------------------------------------------------------------
# Errors name the config key
# ------------------------------------------------------------------------------------------

BAD_KW = [
    ({"nbm_abs_width": 0.0, **STATS}, "objective.kw.nbm_abs_width"),
    ({"nbm_rel_mult": 0.5, **STATS}, "objective.kw.nbm_rel_mult"),
    ({"nbm_abs_width": 0.05}, "objective.kw.nbm_abs_width"),  # a stats kw without the stats
    ({"rescue": "perturb", "delta": -0.1}, "objective.kw.delta"),
    ({"rescue": "perturb", "delta": 1.0}, "objective.kw.delta"),
    ({"rescue": "decay", "level": "sequence", "delta": 1.5}, "objective.kw.delta"),
    ({"rescue": "push_only", "delta": -1}, "objective.kw.delta"),
    ({"rescue": "band", "keep_prob": 1.2}, "objective.kw.keep_prob"),
    ({"rescue": "band", "keep_prob": -0.2}, "objective.kw.keep_prob"),
    ({"rescue": "band", "band_mult": 0.9}, "objective.kw.band_mult"),
    ({"rescue": "band", "delta": 0.1}, "objective.kw.delta"),  # not a band parameter
    ({"rescue": "perturb", "level": "sequence", "keep_prob": 0.5}, "objective.kw.keep_prob"),
    ({"rescue": "none", "delta": 0.1}, "objective.kw.delta"),
    (
        {"rescue": "rescue_only"},
        "objective.kw.rescue: unknown rescue 'rescue_only'; registered rescues: band, decay",
    ),
]


@pytest.mark.parametrize(("kw", "key"), BAD_KW)
def test_bad_kw_raises_config_error_naming_the_key(kw, key):
    logp, old_logp, adv, mask = core_ref.make_batch(0, 2, 3, 0.3)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        OBJECTIVES["clip"](logp, old_logp, adv, mask, **kw)


def test_rescued_share_pools_over_minibatches_and_one_without_clipped_tokens_adds_nothing():
    """band rule, keep_prob 1, eps 0.2, band 1.5x: every zeroed token with r <= 1.3 is rescued.
    Mini-batch A: A > 0, ratios 1.25, 1.5, 1.0 -> zeroed 2 (1.25, 1.5), rescued 1 (1.25).
    Mini-batch B: A > 0, ratios 1.0, 1.1 -> nothing zeroed: no eligible token for `_of_clipped`.
    Pooled rescued/clipped = 1 / 2; the old mean of per-mini-batch fractions (0/0 = 0) was 1/4."""
    from repro.trainers.grpo import pool

    kw = {"rescue": "band", "keep_prob": 1.0, "band_mult": 1.5, **STATS}
    stats = []
    for ratios in ([1.25, 1.5, 1.0], [1.0, 1.1]):
        old = torch.zeros(1, len(ratios))
        logp = torch.log(torch.tensor([ratios]))
        mask = torch.ones(1, len(ratios), dtype=torch.bool)
        stats.append(OBJECTIVES["clip"](logp, old, torch.tensor([1.0]), mask, **kw)[1])
    step, _ = pool(stats)
    assert step["rescued_frac_of_clipped"] == pytest.approx(1 / 2)
    assert step["rescued_sig_of_clipped"] == pytest.approx(1 / 2)
    assert step["rescued_frac"] == pytest.approx(1 / 5) and step["clipfrac"] == pytest.approx(2 / 5)
