"""Aggregation modes: reference loops, empty rows, padding never contributes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from repro.algos import AGGREGATIONS
from repro.errors import ConfigError
from repro.registry import UnknownNameError

from . import reference as ref


@st.composite
def loss_and_mask(draw):
    B, T = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    loss_mat = torch.randn(B, T, generator=gen)
    mask = torch.rand(B, T, generator=gen) < draw(st.sampled_from([0.0, 0.3, 0.8, 1.0]))
    return loss_mat, mask


def test_every_registered_mode_is_covered():
    assert set(AGGREGATIONS) == {"token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"}


@given(case=loss_and_mask(), norm_len=st.sampled_from([None, 1, 7]))
def test_matches_reference(case, norm_len):
    loss_mat, mask = case
    assert AGGREGATIONS["token_mean"](loss_mat, mask).item() == pytest.approx(
        ref.token_mean(loss_mat, mask), abs=1e-5
    )
    assert AGGREGATIONS["seq_mean_token_mean"](loss_mat, mask).item() == pytest.approx(
        ref.seq_mean_token_mean(loss_mat, mask), abs=1e-5
    )
    got = AGGREGATIONS["seq_mean_token_sum_norm"](loss_mat, mask, norm_len=norm_len).item()
    assert got == pytest.approx(ref.seq_mean_token_sum_norm(loss_mat, mask, norm_len), abs=1e-5)


@pytest.mark.parametrize("name", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
@given(case=loss_and_mask())
def test_padding_never_contributes_and_empty_rows_give_no_nan(name, case):
    loss_mat, mask = case
    loss_mat = loss_mat.clone().requires_grad_()
    junk = torch.where(mask, loss_mat, torch.nan)  # padding holds NaN
    loss = AGGREGATIONS[name](junk, mask)
    (grad,) = torch.autograd.grad(loss, loss_mat)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert torch.all(grad[~mask] == 0)
    assert loss.item() == pytest.approx(AGGREGATIONS[name](loss_mat.detach(), mask).item(), abs=1e-6)


@given(case=loss_and_mask())
def test_means_of_ones_are_one(case):
    _, mask = case
    ones = torch.ones(mask.shape)
    expected = 1.0 if mask.any() else 0.0
    assert AGGREGATIONS["token_mean"](ones, mask).item() == pytest.approx(expected)
    assert AGGREGATIONS["seq_mean_token_mean"](ones, mask).item() == pytest.approx(expected)
    B, T = mask.shape
    assert AGGREGATIONS["seq_mean_token_sum_norm"](ones, mask).item() == pytest.approx(
        mask.sum().item() / (B * T)
    )


def test_modes_weight_tokens_differently():
    loss_mat = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True], [True, False, False, False]])
    assert AGGREGATIONS["token_mean"](loss_mat, mask).item() == pytest.approx(8 / 5)
    assert AGGREGATIONS["seq_mean_token_mean"](loss_mat, mask).item() == pytest.approx((1 + 4) / 2)
    assert AGGREGATIONS["seq_mean_token_sum_norm"](loss_mat, mask).item() == pytest.approx(8 / (2 * 4))
    assert AGGREGATIONS["seq_mean_token_sum_norm"](loss_mat, mask, norm_len=2).item() == pytest.approx(8 / 4)


def test_bad_norm_len_names_the_key():
    with pytest.raises(ConfigError, match=r"agg\.kw\.norm_len"):
        AGGREGATIONS["seq_mean_token_sum_norm"](
            torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), norm_len=0
        )


def test_unknown_name_lists_registered():
    with pytest.raises(UnknownNameError, match="seq_mean_token_mean, seq_mean_token_sum_norm, token_mean"):
        AGGREGATIONS["sum"]
