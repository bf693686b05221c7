"""Token losses over the vocabulary computed in row chunks, so that [tokens, vocab] logits never exist whole.

Each chunk's logits are recomputed in the backward pass (activation checkpointing), so peak memory is one chunk's
logits (rows × vocab) instead of all of them — what makes stage-2 distillation of a 150K-vocabulary teacher at
long sequence lengths fit (HALO computes its KL in 512-row chunks for the same reason).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def _rows(hidden: torch.Tensor) -> torch.Tensor:
    return hidden.reshape(-1, hidden.shape[-1])


def _kl_chunk(student_hidden, teacher_logits, head_weight, temperature):
    s = F.linear(student_hidden, head_weight).float() / temperature
    log_p_s = F.log_softmax(s, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum()


def chunked_forward_kl(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    student_head: torch.Tensor,
    teacher_head: torch.Tensor,
    chunk: int = 1024,
    temperature: float = 1.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Σ_t KL(p_teacher(t) ‖ p_student(t)) over all rows (a sum; the caller normalises), in fp32.

    Args:
        student_hidden / teacher_hidden: final hidden states ``[..., h_s]`` / ``[..., h_t]`` with the same leading
            shape (the teacher's carry no gradient).
        student_head / teacher_head: output embedding matrices ``[V, h]`` (same V).
        chunk: rows per chunk.
        weight: optional ``[...]`` mask of the rows to count (e.g. not padding).
    """
    if student_hidden.shape[:-1] != teacher_hidden.shape[:-1]:
        raise ValueError(f"student and teacher rows differ: {student_hidden.shape} vs {teacher_hidden.shape}")
    if student_head.shape[0] != teacher_head.shape[0]:
        raise ValueError(f"student and teacher vocabularies differ: {student_head.shape[0]} vs {teacher_head.shape[0]}")
    s_rows, t_rows = _rows(student_hidden), _rows(teacher_hidden.detach())
    keep = None if weight is None else weight.reshape(-1) > 0
    if keep is not None:
        s_rows, t_rows = s_rows[keep], t_rows[keep]
    total = s_rows.new_zeros((), dtype=torch.float32)
    for start in range(0, s_rows.shape[0], chunk):
        with torch.no_grad():
            t_logits = F.linear(t_rows[start : start + chunk], teacher_head.detach())
        part = s_rows[start : start + chunk]
        if torch.is_grad_enabled() and part.requires_grad:
            total = total + checkpoint(_kl_chunk, part, t_logits, student_head, temperature, use_reentrant=False)
        else:
            total = total + _kl_chunk(part, t_logits, student_head, temperature)
    return total


def _ce_chunk(hidden, targets, weights, head_weight):
    logits = F.linear(hidden, head_weight).float()
    return (F.cross_entropy(logits, targets, reduction="none") * weights).sum()


def chunked_cross_entropy(
    hidden: torch.Tensor,
    head: torch.Tensor,
    input_ids: torch.Tensor,
    loss_weight: torch.Tensor | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Σ_t w[t] · CE(logits[t-1], ids[t]) (a sum; the caller normalises by Σ w), next-token, fp32, in row chunks.

    hidden ``[B, T, h]``, head ``[V, h]``, input_ids / loss_weight ``[B, T]`` (``loss_weight[:, t]`` weights the
    prediction of token t; default 1 for t ≥ 1)."""
    if hidden.shape[:2] != input_ids.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and input_ids {tuple(input_ids.shape)} disagree")
    h = _rows(hidden[:, :-1])
    targets = input_ids[:, 1:].reshape(-1)
    w = torch.ones_like(targets, dtype=torch.float32) if loss_weight is None else loss_weight[:, 1:].reshape(-1)
    w = w.to(torch.float32)
    total = h.new_zeros((), dtype=torch.float32)
    for start in range(0, h.shape[0], chunk):
        sl = slice(start, start + chunk)
        if torch.is_grad_enabled() and h.requires_grad:
            total = total + checkpoint(_ce_chunk, h[sl], targets[sl], w[sl], head, use_reentrant=False)
        else:
            total = total + _ce_chunk(h[sl], targets[sl], w[sl], head)
    return total
