"""GRPO's math as pure functions: group-normalised advantages, the clipped surrogate, the token-mean loss, the k3
KL, DAPO's dynamic-sampling mask and overlong penalty."""

from __future__ import annotations

import torch

SCALE_REWARDS = ("group", "batch", "none")
LOSS_AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")

# ----------------------------------------------------------------------------------------------- pure functions


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """Â = (r − group mean) / (std + eps) for rewards laid out group by group (``[N·G]`` or ``[N, G]``).

    ``scale``: ``group`` (std within each group; TRL default), ``batch`` (std over the whole batch), ``none``
    (Dr. GRPO: no division). std is the unbiased one (torch.std), as TRL and verl. Returns the input's shape."""
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for group-normalised advantages, got {group_size}")
    if scale not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, got {scale!r}")
    shape = rewards.shape
    r = rewards.float().reshape(-1, group_size)
    centered = r - r.mean(dim=1, keepdim=True)
    if scale == "group":
        centered = centered / (r.std(dim=1, keepdim=True) + eps)
    elif scale == "batch":
        centered = centered / (r.std() + eps)
    return centered.reshape(shape)


def token_log_probs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π(tokens[b, t] | ·) from ``logits[b, t]`` (already aligned: logits[:, t] predicts tokens[:, t]).

    logits [B, T, V], tokens [B, T] → [B, T] fp32. Logits are divided by the sampling temperature, so the ratio
    compares the distribution the completions were sampled from (as TRL)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.gather(logits.log_softmax(-1), -1, tokens.unsqueeze(-1)).squeeze(-1)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π_θ ‖ π_ref) per token: exp(ref − logp) − (ref − logp) − 1 (≥ 0)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped objective as a per-token loss: −min(ρ Â, clip(ρ, 1−ε_low, 1+ε_high) Â).

    logp, old_logp [B, T]; advantages [B] (one per sequence). Returns (loss [B, T], clipped [B, T] bool: tokens
    where the clipped term was the smaller one, i.e. whose gradient is cut)."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(-1).to(ratio.dtype)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * adv
    return -torch.min(unclipped, clipped), clipped < unclipped


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    loss_agg: str = "token-mean",
    normalizer: float | torch.Tensor | None = None,
    max_completion_length: int | None = None,
) -> tuple[torch.Tensor, dict]:
    """The GRPO loss of a micro-batch and its statistics.

    ``mask`` [B, T] marks completion tokens. ``loss_agg``: ``token-mean`` (Σ ℓ·m / Σ m), ``seq-mean-token-mean``
    (the original GRPO: mean over each sequence, then over sequences) or ``seq-mean-token-sum-norm`` (Dr. GRPO: Σ
    over tokens / ``max_completion_length``, mean over sequences). ``normalizer`` replaces the micro-batch's own
    denominator (Σ m, or B) with the whole step's, so micro-batches and ranks add up to the loss of the full batch."""
    if loss_agg not in LOSS_AGGS:
        raise ValueError(f"loss_agg must be one of {', '.join(LOSS_AGGS)}, got {loss_agg!r}")
    per_token, clipped = clipped_surrogate(logp, old_logp, advantages, epsilon_low, epsilon_high)
    m = mask.to(per_token.dtype)
    kl = None
    if beta != 0.0:
        if ref_logp is None:
            raise ValueError("beta != 0 needs ref_logp (the reference policy's log-probs)")
        kl = kl_k3(logp, ref_logp)
        per_token = per_token + beta * kl
    if loss_agg == "token-mean":
        denom = m.sum() if normalizer is None else normalizer
        loss = (per_token * m).sum() / denom
    elif loss_agg == "seq-mean-token-mean":
        per_seq = (per_token * m).sum(-1) / m.sum(-1).clamp(min=1)
        loss = per_seq.sum() / (per_seq.numel() if normalizer is None else normalizer)
    else:
        if not max_completion_length:
            raise ValueError("loss_agg seq-mean-token-sum-norm needs max_completion_length")
        per_seq = (per_token * m).sum(-1) / max_completion_length
        loss = per_seq.sum() / (per_seq.numel() if normalizer is None else normalizer)
    n = m.sum().clamp(min=1)
    stats = {"clip_fraction": float((clipped.to(m.dtype) * m).sum() / n)}
    if kl is not None:
        stats["kl"] = float((kl.detach() * m).sum() / n)
    return loss, stats


def dynamic_sampling_mask(rewards: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
    """DAPO dynamic sampling: True for groups whose rewards are not all equal (the others have zero advantage and
    no gradient). ``rewards`` [N, G] (or flat with ``group_size``) → [N] bool."""
    r = rewards.reshape(-1, group_size) if group_size else rewards
    return (r.max(dim=1).values - r.min(dim=1).values) > 1e-8


def overlong_penalty(lengths: torch.Tensor, max_length: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment, added to the reward: 0 up to ``max_length − buffer`` tokens, then falling
    linearly to −factor at ``max_length`` (and staying there)."""
    if buffer <= 0 or buffer > max_length:
        raise ValueError(f"overlong buffer must be in (0, max_length={max_length}], got {buffer}")
    exceed = lengths.float() - (max_length - buffer)
    return torch.clamp(-exceed / buffer * factor, min=-factor, max=0.0)
