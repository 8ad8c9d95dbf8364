"""Properties every configuration of a registered objective must have, whatever its level, rescue
rule or stats hooks. Shared by the core tests (test_objectives.py) and a paper's tests, which
parametrize them over the configurations their package registers.

Each `check_*` takes (name, kw) of `OBJECTIVES[name](logp, old_logp, adv, mask, **kw)` and a batch
from `batches`; `shares` are the stat names that must lie in [0, 1].
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from repro.algos import AGGREGATIONS, OBJECTIVES
from repro.algos.objectives import Share

from . import reference as ref

batches = st.builds(
    ref.make_batch,
    seed=st.integers(0, 2**32 - 1),
    B=st.integers(1, 5),
    T=st.integers(1, 7),
    spread=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
)


def config_id(config: tuple[str, dict]) -> str:
    name, kw = config
    return "-".join([name, *(f"{k}={v}" for k, v in kw.items())])


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


def check_zero_advantage_gives_zero_loss_and_gradient(name, kw, batch):
    logp, old_logp, adv, mask = batch
    loss_mat, loss, grad, _ = loss_and_grad(name, kw, logp, old_logp, torch.zeros_like(adv), mask)
    assert torch.all(loss_mat == 0) and loss == 0 and torch.all(grad == 0)


def check_padding_changes_nothing(name, kw, batch, junk_seed, agg):
    logp, old_logp, adv, mask = batch
    junk = torch.Generator().manual_seed(junk_seed)
    logp2 = torch.where(mask, logp.detach(), 50 * torch.randn(logp.shape, generator=junk))
    old2 = torch.where(mask, old_logp, -50 * torch.rand(logp.shape, generator=junk))
    a = loss_and_grad(name, kw, logp, old_logp, adv, mask, agg)
    b = loss_and_grad(name, kw, logp2, old2, adv, mask, agg)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert torch.all(a[0][~mask] == 0) and torch.all(a[2][~mask] == 0)
    assert a[3].keys() == b[3].keys()
    for key in a[3]:
        assert stat_equal(a[3][key], b[3][key]), key


def stat_equal(a, b) -> bool:
    """Two stats are bit-identical (a 0-d tensor, or a Share's numerator and denominator)."""
    if isinstance(a, Share):
        return isinstance(b, Share) and torch.equal(a.num, b.num) and torch.equal(a.den, b.den)
    return torch.equal(a, b)


def check_at_ratio_one_gradient_is_reinforce(name, kw, batch):
    _, old_logp, adv, mask = batch
    logp = old_logp.clone().requires_grad_()
    loss_mat, _ = run(name, kw, logp, old_logp, adv, mask)
    (grad,) = torch.autograd.grad(loss_mat.sum(), logp)
    reinforce = -adv[:, None] * mask  # d(-A logp_t)/d logp_t per valid token
    assert torch.allclose(grad, reinforce.expand_as(grad))
    assert torch.allclose(loss_mat, -adv[:, None] * mask)


def check_stats_are_named_finite_scalars(name, kw, batch, names, shares):
    _, _, _, stats = loss_and_grad(name, kw, *batch)
    assert tuple(stats) == tuple(names)
    for key, value in stats.items():
        parts = (value.num, value.den) if isinstance(value, Share) else (value,)
        for part in parts:
            assert part.ndim == 0 and torch.isfinite(part), key
            assert not part.requires_grad, key
    for key in shares:
        # A share's numerator and denominator are sums of non-negative parts, the first within the
        # second; on its own it is a fraction in [0, 1], or NaN when nothing was eligible.
        share = stats[key]
        assert isinstance(share, Share), key
        assert 0 <= share.num <= share.den * (1 + 1e-6) + 1e-6, key
        assert math.isnan(float(share)) if share.den == 0 else 0 <= float(share) <= 1 + 1e-6, key


def check_same_generator_seed_same_output(name, kw, batch, seed):
    a = loss_and_grad(name, kw, *batch, seed=seed)
    b = loss_and_grad(name, kw, *batch, seed=seed)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert all(stat_equal(a[3][k], b[3][k]) for k in a[3])
