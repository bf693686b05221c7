"""Outcome-based GRPO (Beyond Reward Engineering §1.4: "a minimal outcome-based GRPO setup"), as pure functions and
one lean loop.

The math, with G completions o_1..o_G per prompt, rewards r_i and per-token probability ratios
ρ_{i,t} = π_θ(o_{i,t} | ·) / π_old(o_{i,t} | ·):

    Â_i        = (r_i − mean(r)) / (std(r) + ε)                        group-normalised advantage (TRL, verl)
    ℓ_{i,t}    = −min(ρ Â_i, clip(ρ, 1 − ε_low, 1 + ε_high) Â_i) + β · KL_k3(π_θ ‖ π_ref)
    loss       = Σ_{i,t} ℓ_{i,t} · m_{i,t} / Σ_{i,t} m_{i,t}             token-mean (verl's default, DAPO)

with no KL by default (β = 0, as TRL and QwenLong-L1's DAPO script), DAPO's dynamic sampling (drop groups whose
rewards are all equal: their advantages are 0) and soft overlong penalty as options. The loop is TRL-shaped: sample
G completions per prompt with ``model.generate`` (the model's own cache: KV for transformers models, HybridCache for
longforge hybrids), score them with :mod:`longforge.train.rewards`, then take ``num_iterations`` optimizer steps on
the batch. Under torchrun each rank samples its own prompts and the gradients are summed over ranks.

The package: :mod:`.losses` (the math), :mod:`.rollout` (sampling), :mod:`.config` (the recipe), :mod:`.loop` (the
trainer) and :mod:`.warmup` (an answer-format SFT warm-up for base policies, used by scripts/rl_learning.py).
"""

from __future__ import annotations

from .config import GRPOConfig, JudgeSection, PolicySection, RLDataSection
from .loop import GRPOTrainer, load_rl_records, plot_rewards, train_grpo
from .losses import (
    LOSS_AGGS,
    SCALE_REWARDS,
    clipped_surrogate,
    dynamic_sampling_mask,
    group_advantages,
    grpo_loss,
    kl_k3,
    overlong_penalty,
    token_log_probs,
)
from .rollout import TaskBalancedSampler, encode_prompt, sample_completions
from .warmup import WarmupConfig, length_batches, sft_warmup, warmup_batch, warmup_examples

__all__ = [
    "GRPOConfig",
    "GRPOTrainer",
    "JudgeSection",
    "LOSS_AGGS",
    "PolicySection",
    "RLDataSection",
    "SCALE_REWARDS",
    "TaskBalancedSampler",
    "WarmupConfig",
    "clipped_surrogate",
    "dynamic_sampling_mask",
    "encode_prompt",
    "group_advantages",
    "grpo_loss",
    "kl_k3",
    "length_batches",
    "load_rl_records",
    "overlong_penalty",
    "plot_rewards",
    "sample_completions",
    "sft_warmup",
    "token_log_probs",
    "train_grpo",
    "warmup_batch",
    "warmup_examples",
]
