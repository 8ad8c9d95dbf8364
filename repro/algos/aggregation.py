"""Stage 5 of the policy-gradient step: reduce the per-token loss matrix to the scalar to minimise.

    loss = AGGREGATIONS[name](loss_mat * w, mask, **kw)  # (B, T), (B, T) bool -> ()

The modes differ only in how tokens and sequences are weighted (verl's `loss_agg_mode`).
Padding never contributes, and rows with no valid token never produce NaN.
"""

from __future__ import annotations

from torch import Tensor

from repro.errors import ConfigError
from repro.registry import Registry

AGGREGATIONS = Registry("aggregation")


@AGGREGATIONS.register("token_mean")
def token_mean(loss_mat: Tensor, mask: Tensor) -> Tensor:
    """Sum over valid tokens / number of valid tokens (DAPO §3.3, token-level policy-gradient loss)."""
    total = loss_mat.where(mask, 0.0).sum()  # ()
    return total / mask.sum().clamp(min=1)


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(loss_mat: Tensor, mask: Tensor) -> Tensor:
    """Mean over sequences of each sequence's token mean (GRPO's 1/G Σ_i 1/|o_i| Σ_t; GSPO).

    Sequences without a valid token are left out of the outer mean (0 if there are none at all).
    """
    length = mask.sum(dim=1)  # (B,)
    per_seq = loss_mat.where(mask, 0.0).sum(dim=1) / length.clamp(min=1)  # (B,)
    return per_seq.sum() / (length > 0).sum().clamp(min=1)


@AGGREGATIONS.register("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(loss_mat: Tensor, mask: Tensor, *, norm_len: int | None = None) -> Tensor:
    """Sum of the loss / (B · norm_len): Dr. GRPO's constant normaliser (default norm_len = T)."""
    B, T = loss_mat.shape
    norm_len = T if norm_len is None else norm_len
    if norm_len <= 0:
        raise ConfigError(f"agg.kw.norm_len must be > 0, got {norm_len}")
    return loss_mat.where(mask, 0.0).sum() / (max(B, 1) * norm_len)
