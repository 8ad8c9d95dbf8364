"""Distillation losses: per-token loss matrices for SFT-style and on-policy distillation (OPD).

    loss_mat = DISTILL_LOSSES["continuation"](student_logp, mask)                     # (B, T)
    loss_mat = DISTILL_LOSSES["forward_kl"](student_logits, teacher_logits, mask)     # (B, T)
    loss = AGGREGATIONS[name](loss_mat, mask)

`continuation` is cross-entropy on tokens a teacher wrote (eq. 5 on teacher text; the DAgger-style
OPD of "Post-Training is About States, Not Tokens" when the context is a student prefix). The two
KLs are one-step next-token OPD (eq. 7 with D a full-vocabulary KL at each student position).
Padding positions are exactly 0 and get no gradient; the teacher side is never differentiated.
"""

from __future__ import annotations

import torch
from torch import Tensor

from repro.registry import Registry

DISTILL_LOSSES = Registry("distill loss")


@DISTILL_LOSSES.register("continuation")
def continuation_ce(student_logp: Tensor, mask: Tensor) -> Tensor:
    """-log pi_S(y_t | s, y_<t) on teacher-written tokens: (B, T) log-probs, (B, T) bool -> (B, T)."""
    return (-student_logp).where(mask, 0.0)


@DISTILL_LOSSES.register("forward_kl")
def forward_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor) -> Tensor:
    """KL(pi_T || pi_S) per position = sum_v p_T (log p_T - log p_S): (B, T, V) x2, (B, T) -> (B, T).

    Mass-covering: the student is pushed to put mass wherever the teacher does."""
    s = torch.log_softmax(student_logits.float(), -1)  # (B, T, V)
    t = torch.log_softmax(teacher_logits.detach().float(), -1)  # (B, T, V)
    kl = (t.exp() * (t - s)).sum(-1)  # (B, T)
    return kl.where(mask, 0.0)


@DISTILL_LOSSES.register("reverse_kl")
def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor) -> Tensor:
    """KL(pi_S || pi_T) per position = sum_v p_S (log p_S - log p_T): (B, T, V) x2, (B, T) -> (B, T).

    Mode-seeking: the usual on-policy-distillation direction (GKD with beta = 1)."""
    s = torch.log_softmax(student_logits.float(), -1)  # (B, T, V)
    t = torch.log_softmax(teacher_logits.detach().float(), -1)  # (B, T, V)
    kl = (s.exp() * (s - t)).sum(-1)  # (B, T)
    return kl.where(mask, 0.0)


def is_kl(name: str) -> bool:
    """True for losses taking (student_logits, teacher_logits, mask); False for continuation CE."""
    return name != "continuation"
