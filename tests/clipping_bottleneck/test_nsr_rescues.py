"""The NSR rescue rules (experiments/clipping_bottleneck/nsr.py) on their own: which units they may
touch, and their keep rates against the expected probabilities (binomial tolerances, fixed seeds)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from experiments.clipping_bottleneck import nsr
from experiments.clipping_bottleneck.nsr import perturb_keep_prob
from repro.algos import RESCUES
from repro.algos.objectives import zeroed_by_clip

from . import reference as ref

EPS = [(0.2, 0.28), (0.2, 0.2), (3e-4, 4e-4)]  # DAPO, GRPO, GSPO


@st.composite
def ratios_and_adv(draw):
    """(N,) ratios concentrated around both boundaries, and advantages of either sign (some 0)."""
    eps_low, eps_high = draw(st.sampled_from(EPS))
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1, 64))
    gen = torch.Generator().manual_seed(seed)
    # log r spread on the scale of eps, so entries fall inside, near and far past the boundaries.
    scale = 3 * max(eps_low, eps_high)
    ratio = torch.exp(scale * torch.randn(n, generator=gen))  # (N,)
    adv = torch.randn(n, generator=gen)
    adv = torch.where(torch.rand(n, generator=gen) < 0.1, 0.0, adv)
    return ratio, adv, eps_low, eps_high, seed


SPEC_KW = [
    ("none", {}),
    ("perturb", {}),
    ("perturb", {"delta": 0.3}),
    ("band", {}),
    ("band", {"band_mult": 3.0, "keep_prob": 0.9}),
    ("decay", {}),
    ("decay", {"delta": 0.4}),
    ("push_only", {}),
    ("push_only", {"delta": 0.5}),
]
SPEC_IDS = [f"{s}-{'-'.join(map(str, kw.values()))}" for s, kw in SPEC_KW]


def test_every_rescue_is_covered():
    registered_here = {name for name in RESCUES if RESCUES[name].__module__ == nsr.__name__}
    assert registered_here == {"perturb", "band", "decay", "push_only"}
    assert {s for s, _ in SPEC_KW} == registered_here | {"none"}


@pytest.mark.parametrize(("spec", "kw"), SPEC_KW, ids=SPEC_IDS)
@given(case=ratios_and_adv())
def test_g_is_a_weight_and_only_touches_the_tokens_its_spec_allows(spec, kw, case):
    ratio, adv, eps_low, eps_high, seed = case
    g = RESCUES[spec](ratio, adv, eps_low, eps_high, torch.Generator().manual_seed(seed), **kw)
    zeroed = zeroed_by_clip(ratio, adv, eps_low, eps_high)
    assert g.shape == ratio.shape and g.dtype == ratio.dtype
    assert torch.all((g >= 0) & (g <= 1))
    if spec == "push_only":
        assert torch.all(g[zeroed] == 0)  # never rescues
    else:
        assert torch.all(g[~zeroed] == 1)  # rescued tokens are only ever zeroed tokens
    if spec in ("none", "perturb", "band", "push_only"):
        assert torch.all((g == 0) | (g == 1))


@pytest.mark.parametrize(("spec", "kw"), [sk for sk in SPEC_KW if sk[0] != "decay"], ids=str)
@given(case=ratios_and_adv())
def test_stochastic_specs_match_reference_with_the_same_draws(spec, kw, case):
    ratio, adv, eps_low, eps_high, seed = case
    g = RESCUES[spec](ratio, adv, eps_low, eps_high, torch.Generator().manual_seed(seed), **kw)
    u01 = torch.rand(ratio.shape, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(g, ref.rescue_g(spec, ratio, adv, eps_low, eps_high, u01, **kw))


@pytest.mark.parametrize("delta", [0.0, 0.05, 0.1, 0.4])
@given(case=ratios_and_adv())
def test_decay_is_the_expected_keep_rate(delta, case):
    ratio, adv, eps_low, eps_high, _ = case
    g = RESCUES["decay"](ratio, adv, eps_low, eps_high, None, delta=delta)
    expected = ref.rescue_g("decay", ratio, adv, eps_low, eps_high, None, delta=delta)
    # float32 ratios carry ~1e-7 absolute error, which the 1 / (2 delta) scaling amplifies.
    assert torch.allclose(g, expected, atol=1e-5)


@pytest.mark.parametrize("delta", [0.05, 0.1, 0.3])
@given(case=ratios_and_adv())
def test_perturb_never_rescues_deep_violations(delta, case):
    ratio, adv, eps_low, eps_high, seed = case
    g = RESCUES["perturb"](ratio, adv, eps_low, eps_high, torch.Generator().manual_seed(seed), delta=delta)
    # A hair inside the exact limits, to stay clear of float rounding at the limit itself.
    deep = ((adv > 0) & (ratio > (1 + eps_high) / (1 - delta) * (1 + 1e-6))) | (
        (adv < 0) & (ratio < (1 - eps_low) / (1 + delta) * (1 - 1e-6))
    )
    assert torch.all(g[deep] == 0)


# ------------------------------------------------------------------------------------------
# Keep rates over many draws (fixed seed): |rate - p| <= 5 binomial standard deviations
# ------------------------------------------------------------------------------------------

N_DRAWS = 20_000


def _assert_rate(rate: float, p: float, n: int = N_DRAWS) -> None:
    tol = 5 * math.sqrt(max(p * (1 - p), 1e-4) / n)
    assert abs(rate - p) <= tol, (rate, p, tol)


# (eps_low, eps_high, delta, ratio, adv): both sides, shallow and deep, incl. GSPO's tiny eps
# where the noise overshoots past the other boundary (the one-sided formula would be wrong).
KEEP_CASES = [
    (0.2, 0.28, 0.1, 1.30, 1.0),
    (0.2, 0.28, 0.1, 1.35, 1.0),
    (0.2, 0.28, 0.1, 1.40, 1.0),
    (0.2, 0.28, 0.1, 1.45, 1.0),  # deep: > 1.28 / 0.9
    (0.2, 0.28, 0.1, 0.78, -1.0),
    (0.2, 0.28, 0.1, 0.74, -1.0),
    (0.2, 0.28, 0.3, 1.6, 1.0),
    (0.2, 0.2, 0.05, 0.77, -2.0),
    (3e-4, 4e-4, 0.1, 1.0005, 1.0),
    (3e-4, 4e-4, 1e-3, 1.0006, 1.0),
    (3e-4, 4e-4, 1e-3, 0.9995, -1.0),
]


@pytest.mark.parametrize(("eps_low", "eps_high", "delta", "r", "a"), KEEP_CASES)
def test_perturb_keep_rate_matches_expected_probability(eps_low, eps_high, delta, r, a):
    ratio = torch.full((N_DRAWS,), r)
    adv = torch.full((N_DRAWS,), a)
    g = RESCUES["perturb"](ratio, adv, eps_low, eps_high, torch.Generator().manual_seed(7), delta=delta)
    p = ref.keep_prob(ratio[0].item(), eps_low, eps_high, delta)
    _assert_rate(g.mean().item(), p)
    # decay's g is the same expected rate, computed instead of sampled (float32 error / (2 delta))
    d = RESCUES["decay"](ratio[:1], adv[:1], eps_low, eps_high, None, delta=delta)
    assert d.item() == pytest.approx(p, abs=1e-6 / delta)


def test_keep_prob_is_the_paper_notes_upper_side_formula_when_noise_cannot_overshoot():
    eps_low, eps_high, delta = 0.2, 0.28, 0.1
    ratio = torch.linspace(1 + eps_high, 1.5, 200)
    note = (((1 + eps_high) / ratio - (1 - delta)) / (2 * delta)).clamp(0, 1)
    assert torch.allclose(perturb_keep_prob(ratio, eps_low, eps_high, delta), note, atol=1e-6)
    ratio = torch.linspace(0.6, 1 - eps_low, 200)
    note = (((1 + delta) - (1 - eps_low) / ratio) / (2 * delta)).clamp(0, 1)
    assert torch.allclose(perturb_keep_prob(ratio, eps_low, eps_high, delta), note, atol=1e-6)


@given(
    eps_low=st.floats(1e-4, 0.3),
    eps_high=st.floats(1e-4, 0.3),
    delta=st.floats(1e-3, 0.99),
    depth=st.floats(1e-6, 0.5),  # how far past the boundary, as a fraction of it
    high=st.booleans(),
)
def test_perturb_keeps_at_most_half_of_any_clipped_token_whatever_delta(
    eps_low, eps_high, delta, depth, high
):
    """Why widening delta does not lift the rescued share of the clipped signal (calibration v3
    round 3): a clipped token is kept with probability at most 1/2, and at most the in-bounds
    interval of u, (eps_low + eps_high) / r, over the noise's width 2 delta; so a wider delta reaches
    deeper tokens by keeping the near-boundary ones less. Just past a boundary p is 1/2 exactly while
    the noise cannot cross the other boundary."""
    edge = 1 + eps_high if high else 1 - eps_low
    r = torch.tensor([edge * (1 + depth) if high else edge * (1 - depth)], dtype=torch.float64)
    p = perturb_keep_prob(r, eps_low, eps_high, delta).item()
    assert 0 <= p <= 0.5 + 1e-12
    assert p <= (eps_low + eps_high) / (2 * delta * r.item()) + 1e-12
    at_edge = perturb_keep_prob(torch.tensor([edge], dtype=torch.float64), eps_low, eps_high, delta).item()
    room = (eps_low + eps_high) / edge  # u's in-bounds interval at the edge, as a share of u = 1
    assert at_edge == pytest.approx(0.5 if delta <= room else room / (2 * delta))


@pytest.mark.parametrize(("keep_prob", "band_mult"), [(0.2, 1.5), (0.5, 2.0), (1.0, 1.5)])
def test_band_keeps_keep_prob_inside_the_band_and_nothing_beyond(keep_prob, band_mult):
    eps_low, eps_high = 0.2, 0.28
    n = N_DRAWS
    cases = [
        (1 + 1.2 * eps_high, 1.0, keep_prob),  # inside the band, upper side
        (1 - 1.2 * eps_low, -1.0, keep_prob),  # inside, lower side
        (1 + (band_mult + 0.1) * eps_high, 1.0, 0.0),  # beyond the band
        (1 - (band_mult + 0.1) * eps_low, -1.0, 0.0),
    ]
    gen = torch.Generator().manual_seed(3)
    for r, a, p in cases:
        ratio, adv = torch.full((n,), r), torch.full((n,), a)
        g = RESCUES["band"](ratio, adv, eps_low, eps_high, gen, keep_prob=keep_prob, band_mult=band_mult)
        _assert_rate(g.mean().item(), p)


def test_push_only_push_rate_matches_expected_probability():
    eps_low, eps_high, delta = 0.2, 0.28, 0.1
    for r, a in [(1.2, 1.0), (1.25, 1.0), (0.85, -1.0), (1.0, 1.0)]:
        ratio, adv = torch.full((N_DRAWS,), r), torch.full((N_DRAWS,), a)
        g = RESCUES["push_only"](ratio, adv, eps_low, eps_high, torch.Generator().manual_seed(5), delta=delta)
        # P(u r crosses the boundary A pushes towards), u ~ U(1 - delta, 1 + delta)
        edge = (1 + eps_high) / r if a > 0 else (1 - eps_low) / r
        p_push = ((1 + delta - edge) if a > 0 else (edge - (1 - delta))) / (2 * delta)
        _assert_rate(1 - g.mean().item(), min(max(p_push, 0.0), 1.0))


def test_same_seed_same_draws_and_shape_one_per_sequence():
    ratio = torch.full((5, 1), 1.3)
    adv = torch.ones(5, 1)
    a = RESCUES["perturb"](ratio, adv, 0.2, 0.28, torch.Generator().manual_seed(1), delta=0.1)
    b = RESCUES["perturb"](ratio, adv, 0.2, 0.28, torch.Generator().manual_seed(1), delta=0.1)
    assert a.shape == (5, 1) and torch.equal(a, b)
