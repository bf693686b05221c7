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
"""

from __future__ import annotations

import copy
import os
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..recipes import dump_json, dump_yaml

__all__ = [
    "GRPOConfig",
    "GRPOTrainer",
    "TaskBalancedSampler",
    "clipped_surrogate",
    "dynamic_sampling_mask",
    "encode_prompt",
    "group_advantages",
    "grpo_loss",
    "kl_k3",
    "overlong_penalty",
    "plot_rewards",
    "sample_completions",
    "token_log_probs",
    "train_grpo",
]

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


# ----------------------------------------------------------------------------------------------- rollouts


def _eos_ids(model, tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += config_eos if isinstance(config_eos, list) else [config_eos]
    return sorted({int(i) for i in ids if i is not None})


def encode_prompt(tokenizer, text: str, chat_template: bool = False) -> list[int]:
    """Token ids of a prompt: as a user turn of the tokenizer's chat template (``chat_template`` and the tokenizer
    has one), else the plain text with the tokenizer's special tokens (BOS where it adds one)."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])


@torch.no_grad()
def sample_completions(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    num_samples: int,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[tuple[list[int], bool]]]:
    """``num_samples`` completions of each prompt with ``model.generate`` (left-padded batches of at most
    ``batch_size`` sequences, longest prompts first, the model's own cache).

    Returns, per prompt, ``num_samples`` pairs (completion token ids up to and including the first EOS, truncated):
    ``truncated`` is True when no EOS came within ``max_new_tokens``. Sampling is pure (no top-k, no repetition
    penalty) so the completions come from the policy the loss assumes."""
    from transformers import GenerationConfig

    eos = _eos_ids(model, tokenizer)
    if not eos:
        raise ValueError("the tokenizer has no EOS token: completions could not end")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    config = GenerationConfig(
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=top_p if do_sample and top_p < 1.0 else None,
        top_k=0 if do_sample else None,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad,
        eos_token_id=eos,
    )
    jobs = [(i, j) for i in range(len(prompt_ids)) for j in range(num_samples)]
    jobs.sort(key=lambda ij: -len(prompt_ids[ij[0]]))
    device = next(model.parameters()).device
    out: list[list] = [[None] * num_samples for _ in prompt_ids]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            width = max(len(prompt_ids[i]) for i, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (i, _) in enumerate(batch):
                p = prompt_ids[i]
                ids[row, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
                mask[row, width - len(p) :] = 1
            generated = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
            )
            new = generated[:, width:].tolist()
            for row, (i, j) in enumerate(batch):
                tokens = new[row]
                cut = next((k for k, t in enumerate(tokens) if t in eos), None)
                out[i][j] = (tokens[: cut + 1], False) if cut is not None else (tokens[:max_new_tokens], True)
            if on_batch is not None:
                on_batch(len(batch))
    finally:
        model.train(was_training)
    return out


class TaskBalancedSampler:
    """Prompts drawn with equal share per dataset (the paper's task balancing: −1.53 points without it): datasets
    in a shuffled round-robin, items in a shuffled order per dataset, reshuffled when used up."""

    def __init__(self, records: Sequence, seed: int = 0):
        if not records:
            raise ValueError("no training records to sample from")
        self.rng = random.Random(seed)
        self.by_dataset: dict[str, list] = {}
        for r in records:
            self.by_dataset.setdefault(r.dataset, []).append(r)
        self.queues: dict[str, list] = {d: [] for d in self.by_dataset}
        self.cycle: list[str] = []

    def next(self):
        if not self.cycle:
            self.cycle = sorted(self.by_dataset)
            self.rng.shuffle(self.cycle)
        name = self.cycle.pop()
        if not self.queues[name]:
            self.queues[name] = self.rng.sample(self.by_dataset[name], len(self.by_dataset[name]))
        return self.queues[name].pop()

    def take(self, n: int) -> list:
        return [self.next() for _ in range(n)]


# ----------------------------------------------------------------------------------------------- config


@dataclass
class PolicySection:
    path: str = "tiny-teacher"  # a built-in model name or a local HF directory (transformers or longforge hybrid)
    gradient_checkpointing: bool = False


@dataclass
class RLDataSection:
    source: str = "builtin"  # builtin | comma-separated record files / directories (synth-rl, filter-rl output)
    datasets: list[str] = field(default_factory=list)  # which datasets (empty: all in the files / all eight)
    items_per_dataset: int = 64  # builtin: items generated per dataset
    max_tokens: int = 4096  # builtin: prompt length range
    min_tokens: int = 0
    eval_fraction: float = 0.1  # held-out split, by a hash of the record id
    prompt_suffix: str = ""  # appended to every prompt (e.g. "\nAnswer:" for a base model)
    chat_template: bool = False  # wrap prompts in the tokenizer's chat template


@dataclass
class JudgeSection:
    model: str | None = None  # a local HF judge (directory or built-in name) for reward_type llm_judge
    url: str | None = None  # or an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1
    model_name: str = "judge"  # the endpoint's model name
    api_key_env: str = "LONGFORGE_JUDGE_API_KEY"  # environment variable holding the endpoint's key, if any


@dataclass
class GRPOConfig:
    out_dir: str = "runs/grpo"
    seed: int = 0
    steps: int = 100
    policy: PolicySection = field(default_factory=PolicySection)
    data: RLDataSection = field(default_factory=RLDataSection)
    judge: JudgeSection = field(default_factory=JudgeSection)
    reward_overrides: dict = field(default_factory=dict)  # dataset -> reward_type (e.g. KeyChain: two_way_substring)
    prompts_per_step: int = 8  # per rank
    group_size: int = 8  # G completions per prompt
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    rollout_batch_size: int = 32  # sequences per generate call
    micro_batch_size: int = 8  # sequences per forward / backward
    lr: float = 1e-6
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    grad_clip: float = 1.0  # 0 disables clipping
    num_iterations: int = 1  # μ: optimizer steps per batch of rollouts (1: the ratio is 1, on-policy)
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2  # DAPO's clip-higher uses 0.28
    beta: float = 0.0  # KL coefficient (k3); > 0 keeps a frozen copy of the initial policy
    scale_rewards: str = "group"  # group | batch | none (Dr. GRPO)
    loss_agg: str = "token-mean"  # token-mean | seq-mean-token-mean | seq-mean-token-sum-norm
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal, sample more
    max_gen_batches: int = 3  # dynamic sampling: at most this many rollout batches per step
    overlong_buffer: int = 0  # DAPO soft overlong penalty over the last N tokens of max_new_tokens (0: off)
    overlong_penalty_factor: float = 1.0
    mask_truncated: bool = False  # completions without EOS do not contribute to the loss
    eval_every: int = 0  # greedy mean reward on the held-out split every N steps (0: only at start and end)
    eval_items: int = 64
    log_every: int = 1
    tensorboard: bool = True
    save: bool = True  # save the final policy to out_dir/model
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU | bf16 | fp32

    def validate(self) -> None:
        for name in (
            "steps",
            "prompts_per_step",
            "max_new_tokens",
            "rollout_batch_size",
            "micro_batch_size",
            "num_iterations",
            "max_gen_batches",
            "eval_items",
            "log_every",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (advantages are relative within a group), got {self.group_size}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, got {self.scale_rewards!r}")
        if self.loss_agg not in LOSS_AGGS:
            raise ValueError(f"loss_agg must be one of {', '.join(LOSS_AGGS)}, got {self.loss_agg!r}")
        if self.lr <= 0 or self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(
                f"lr and temperature must be > 0 and top_p in (0, 1]: {self.lr}, {self.temperature}, {self.top_p}"
            )
        if self.beta < 0 or self.epsilon_low < 0 or self.epsilon_high < 0:
            raise ValueError("beta, epsilon_low and epsilon_high must be >= 0")
        if not 0 <= self.overlong_buffer <= self.max_new_tokens:
            raise ValueError(
                f"overlong_buffer must be in [0, max_new_tokens={self.max_new_tokens}], got {self.overlong_buffer}"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if not 0 <= self.data.eval_fraction < 1:
            raise ValueError(f"data.eval_fraction must be in [0, 1), got {self.data.eval_fraction}")
        from .rewards import REWARDS

        for dataset, reward_type in self.reward_overrides.items():
            if reward_type not in REWARDS:
                raise ValueError(
                    f"reward_overrides.{dataset}: unknown reward_type {reward_type!r}; known: {', '.join(REWARDS)}"
                )
        if self.judge.model and self.judge.url:
            raise ValueError("judge: give judge.model or judge.url, not both")


# ----------------------------------------------------------------------------------------------- the loop


def load_rl_records(cfg: RLDataSection, tokenizer, seed: int) -> list:
    """Records from files, or generated from the built-in world with the policy's tokenizer."""
    from ..data.rl import build_generators, read_records

    if cfg.source == "builtin":
        gens = build_generators(tokenizer, cfg.max_tokens, cfg.min_tokens, seed, datasets=cfg.datasets or None)
        records = [g.generate(i) for g in gens.values() for i in range(cfg.items_per_dataset)]
    else:
        records = read_records([p.strip() for p in cfg.source.split(",") if p.strip()])
        if cfg.datasets:
            records = [r for r in records if r.dataset in cfg.datasets]
            if not records:
                raise ValueError(f"data.datasets {cfg.datasets} selects no record in {cfg.source}")
    return records


class GRPOTrainer:
    """GRPO on RL records. ``reward_fn(record, completion) -> float`` replaces the registry (custom rewards);
    ``model``/``tokenizer``/``records`` may be given directly instead of through the config."""

    def __init__(self, cfg: GRPOConfig, *, model=None, tokenizer=None, records=None, reward_fn=None):
        from ..data.rl import is_heldout, task_balanced_sample
        from .trainer import init_distributed

        cfg.validate()
        self.cfg = cfg
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device=cuda was asked for but no CUDA device is available")
        kind = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.dist = init_distributed(kind)
        self.device = torch.device(kind, self.dist.local_rank) if kind == "cuda" else torch.device("cpu")
        self.use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and kind == "cuda")
        self.out_dir = Path(cfg.out_dir)
        torch.manual_seed(cfg.seed * 1000 + self.dist.rank)
        if model is None or tokenizer is None:
            from ..models.pretrained import pretrained

            model, tokenizer = pretrained(cfg.policy.path, device="cpu", dtype=torch.float32)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        if cfg.policy.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.model.train()
        self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False) if cfg.beta > 0 else None
        records = list(records) if records is not None else load_rl_records(cfg.data, tokenizer, cfg.seed)
        self.eval_records = [r for r in records if is_heldout(r.id, cfg.data.eval_fraction)]
        self.train_records = [r for r in records if not is_heldout(r.id, cfg.data.eval_fraction)]
        if not self.train_records:
            raise ValueError("every record fell into the held-out split: lower data.eval_fraction or add records")
        self.sampler = TaskBalancedSampler(self.train_records, seed=cfg.seed * 1000 + self.dist.rank)
        self.eval_subset = (
            task_balanced_sample(self.eval_records, min(cfg.eval_items, len(self.eval_records)), cfg.seed)
            if self.eval_records
            else []
        )
        self.reward_fn = reward_fn or self._registry_reward()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        self.step = 0
        self.history: list[dict] = []
        self.eval_history: list[dict] = []
        self.writer = None
        self._prompt_cache: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ pieces
    def _registry_reward(self):
        from .rewards import LLMJudge, score

        judge = None
        if self.cfg.judge.model or self.cfg.judge.url:
            j = self.cfg.judge
            judge = LLMJudge(model=j.model, url=j.url, model_name=j.model_name, api_key_env=j.api_key_env)
        overrides = dict(self.cfg.reward_overrides)
        return lambda record, completion: score(record, completion, judge, overrides.get(record.dataset))

    def prompt_ids(self, record) -> list[int]:
        if record.id not in self._prompt_cache:
            text = record.prompt + self.cfg.data.prompt_suffix
            self._prompt_cache[record.id] = encode_prompt(self.tokenizer, text, self.cfg.data.chat_template)
        return self._prompt_cache[record.id]

    def rollout(self, records, num_samples: int, do_sample: bool = True, max_new_tokens: int | None = None):
        cfg = self.cfg
        return sample_completions(
            self.model,
            self.tokenizer,
            [self.prompt_ids(r) for r in records],
            num_samples,
            max_new_tokens or cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            do_sample=do_sample,
            batch_size=cfg.rollout_batch_size,
        )

    def _rewards(self, record, completions) -> list[float]:
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids, _ in completions]
        rewards = [float(self.reward_fn(record, t)) for t in texts]
        if self.cfg.overlong_buffer:
            lengths = torch.tensor([len(ids) for ids, _ in completions])
            penalty = overlong_penalty(
                lengths, self.cfg.max_new_tokens, self.cfg.overlong_buffer, self.cfg.overlong_penalty_factor
            )
            rewards = [r + float(p) for r, p in zip(rewards, penalty)]
        return rewards

    def _sequence_log_probs(self, model, prompt: list[int], completions: list[list[int]]) -> tuple:
        """Per-token log-probs of right-padded completions of one prompt: (logp [B, C], mask [B, C])."""
        C = max(len(c) for c in completions)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(completions), len(prompt) + C), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        mask = torch.zeros((len(completions), C), dtype=torch.bool)
        for row, c in enumerate(completions):
            ids[row, : len(prompt)] = torch.as_tensor(prompt)
            ids[row, len(prompt) : len(prompt) + len(c)] = torch.as_tensor(c)
            attn[row, : len(prompt) + len(c)] = 1
            mask[row, : len(c)] = True
        ids, attn, mask = ids.to(self.device), attn.to(self.device), mask.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            # the last C+1 positions: position P-1+t predicts completion token t
            logits = model(input_ids=ids, attention_mask=attn, use_cache=False, logits_to_keep=C + 1).logits
        logp = token_log_probs(logits[:, :-1], ids[:, len(prompt) :], self.cfg.temperature)
        return logp, mask

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict:
        cfg = self.cfg
        t0 = time.time()
        groups, dropped_rewards, batches = [], [], 0
        wanted = cfg.prompts_per_step
        while len(groups) < wanted and batches < (cfg.max_gen_batches if cfg.dynamic_sampling else 1):
            records = self.sampler.take(wanted - len(groups) if cfg.dynamic_sampling else wanted)
            for record, completions in zip(records, self.rollout(records, cfg.group_size)):
                rewards = self._rewards(record, completions)
                if cfg.dynamic_sampling and not bool(dynamic_sampling_mask(torch.tensor([rewards]))[0]):
                    dropped_rewards.append(rewards)
                    continue
                groups.append({"record": record, "completions": completions, "rewards": rewards})
            batches += 1
        gen_seconds = time.time() - t0
        all_rewards = [r for g in groups for r in g["rewards"]] + [r for rs in dropped_rewards for r in rs]
        record = {
            "step": self.step + 1,
            "reward": sum(all_rewards) / max(1, len(all_rewards)),
            "groups_kept": len(groups),
            "groups_dropped": len(dropped_rewards),
            "gen_seconds": round(gen_seconds, 3),
        }
        per_dataset: dict[str, list[float]] = {}
        for g in groups:
            per_dataset.setdefault(g["record"].dataset, []).extend(g["rewards"])
        for name, rs in per_dataset.items():
            record[f"reward/{name}"] = sum(rs) / len(rs)
        lengths = [len(ids) for g in groups for ids, _ in g["completions"]]
        truncated = [t for g in groups for _, t in g["completions"]]
        record["completion_length"] = sum(lengths) / max(1, len(lengths))
        record["truncated_fraction"] = sum(truncated) / max(1, len(truncated))
        lr = cfg.lr * min(1.0, (self.step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        record["lr"] = lr
        self.step += 1
        # every rank must agree on whether this step updates (they meet in the gradient all-reduce)
        total_groups = int(self.dist.all_reduce_sum(torch.tensor(float(len(groups)), device=self.device)))
        if total_groups == 0:
            warnings.warn(f"step {self.step}: every group had equal rewards; no update", stacklevel=2)
            record.update(loss=0.0, grad_norm=0.0, clip_fraction=0.0, updated=0)
            return record
        # micro-batches: slices of one group (same prompt, so no left padding in the loss forward)
        micro = []
        for g in groups:
            adv = group_advantages(torch.tensor(g["rewards"]), cfg.group_size, cfg.scale_rewards)
            prompt = self.prompt_ids(g["record"])
            for s in range(0, cfg.group_size, cfg.micro_batch_size):
                comps = g["completions"][s : s + cfg.micro_batch_size]
                keep = [not (cfg.mask_truncated and t) and len(c) > 0 for c, t in comps]
                micro.append(
                    {
                        "prompt": prompt,
                        "completions": [c or [0] for c, _ in comps],
                        "advantages": adv[s : s + cfg.micro_batch_size],
                        "keep": torch.tensor(keep),
                    }
                )
        tokens = sum(sum(len(c) for c, k in zip(m["completions"], m["keep"]) if k) for m in micro)
        seqs = sum(int(m["keep"].sum()) for m in micro)
        normalizer = float(tokens if cfg.loss_agg == "token-mean" else seqs)
        normalizer = float(self.dist.all_reduce_sum(torch.tensor(normalizer, device=self.device)))
        if cfg.num_iterations > 1:  # π_old: the policy that sampled, frozen for the μ updates
            with torch.no_grad():
                for m in micro:
                    m["old_logp"] = self._sequence_log_probs(self.model, m["prompt"], m["completions"])[0].detach()
        if self.ref_model is not None:
            with torch.no_grad():
                for m in micro:
                    m["ref_logp"] = self._sequence_log_probs(self.ref_model, m["prompt"], m["completions"])[0]
        self.model.train()
        loss_total, clip_fracs, kls, grad_norm = 0.0, [], [], torch.zeros(())
        for _ in range(cfg.num_iterations):
            for m in micro:
                logp, mask = self._sequence_log_probs(self.model, m["prompt"], m["completions"])
                mask = mask & m["keep"].to(mask.device).unsqueeze(-1)
                old = m.get("old_logp", logp.detach())
                loss, stats = grpo_loss(
                    logp,
                    old,
                    m["advantages"].to(self.device),
                    mask,
                    ref_logp=m.get("ref_logp"),
                    beta=cfg.beta,
                    epsilon_low=cfg.epsilon_low,
                    epsilon_high=cfg.epsilon_high,
                    loss_agg=cfg.loss_agg,
                    normalizer=max(normalizer, 1.0),
                    max_completion_length=cfg.max_new_tokens,
                )
                loss.backward()
                loss_total += float(loss.detach())
                clip_fracs.append(stats["clip_fraction"])
                if "kl" in stats:
                    kls.append(stats["kl"])
            if self.dist.world_size > 1:  # the loss is already normalised by the global count: sum the gradients
                for p in self.model.parameters():
                    if p.requires_grad:
                        if p.grad is None:  # a rank whose groups were all dropped still takes part
                            p.grad = torch.zeros_like(p)
                        self.dist.all_reduce_sum(p.grad)
            if cfg.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        record.update(
            loss=loss_total / cfg.num_iterations,
            grad_norm=float(grad_norm),
            clip_fraction=sum(clip_fracs) / max(1, len(clip_fracs)),
            updated=1,
            step_seconds=round(time.time() - t0, 3),
        )
        if kls:
            record["kl"] = sum(kls) / len(kls)
        return record

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Greedy mean reward on the held-out subset (overall and per dataset)."""
        if not self.eval_subset:
            return {}
        outs = self.rollout(self.eval_subset, 1, do_sample=False)
        per: dict[str, list[float]] = {}
        for record, completions in zip(self.eval_subset, outs):
            text = self.tokenizer.decode(completions[0][0], skip_special_tokens=True)
            per.setdefault(record.dataset, []).append(float(self.reward_fn(record, text)))
        scores = [s for v in per.values() for s in v]
        result = {"step": self.step, "eval_reward": sum(scores) / len(scores)}
        result.update({f"eval_reward/{k}": sum(v) / len(v) for k, v in per.items()})
        return result

    # ------------------------------------------------------------------ logging and the loop
    def log(self, record: dict, prefix: str = "train") -> None:
        if not self.dist.is_main:
            return
        if self.cfg.tensorboard and self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn(
                    "tensorboard is not installed: no event files (metrics go to grpo_summary.json)", stacklevel=2
                )
                self.cfg.tensorboard = False
            else:
                self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    name = key if key.startswith("eval") else f"{prefix}/{key}"
                    self.writer.add_scalar(name, value, record["step"])
            self.writer.flush()

    def fit(self, progress: bool = True) -> list[dict]:
        cfg = self.cfg
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            dump_yaml(cfg, self.out_dir / "recipe.resolved.yaml")
        bar = _Bar(cfg.steps, enabled=progress and self.dist.is_main)
        try:
            if self.dist.is_main and self.eval_subset:
                self._eval_and_log()
            while self.step < cfg.steps:
                record = self.train_step()
                self.history.append(record)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self.log(record)
                if self.dist.is_main and self.eval_subset and cfg.eval_every and self.step % cfg.eval_every == 0:
                    self._eval_and_log()
                bar.update(record, self.eval_history[-1] if self.eval_history else None)
            if self.dist.is_main and self.eval_subset and (not cfg.eval_every or self.step % cfg.eval_every):
                self._eval_and_log()
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
        if self.dist.is_main:
            self.save()
        self.dist.barrier()
        return self.history

    def _eval_and_log(self) -> None:
        result = self.evaluate()
        if result:
            self.eval_history.append(result)
            self.log(result, prefix="eval")

    def save(self) -> None:
        from ..utils.io import atomic_directory

        summary = {
            "steps": self.step,
            "train_records": len(self.train_records),
            "eval_records": len(self.eval_subset),
            "history": self.history,
            "eval": self.eval_history,
        }
        dump_json(summary, self.out_dir / "grpo_summary.json")
        plot_rewards(self.history, self.eval_history, self.out_dir / "rewards.png")
        if self.cfg.save:
            with atomic_directory(self.out_dir / "model") as tmp:
                self.model.save_pretrained(tmp, safe_serialization=True)
                self.tokenizer.save_pretrained(tmp)


def plot_rewards(history: list[dict], eval_history: list[dict], path: str | os.PathLike) -> bool:
    """Reward curve: mean training reward per step (and a moving average), greedy held-out reward."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: no reward curve (pip install matplotlib)", stacklevel=2)
        return False
    import uuid

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    if history:
        steps = [h["step"] for h in history]
        rewards = [h["reward"] for h in history]
        ax.plot(steps, rewards, ".", color="#9bbbd9", label="train (mean of rollouts)")
        window = max(1, len(rewards) // 10)
        smooth = [
            sum(rewards[max(0, i - window + 1) : i + 1]) / len(rewards[max(0, i - window + 1) : i + 1])
            for i in range(len(rewards))
        ]
        ax.plot(steps, smooth, "-", color="#3b75af", label=f"train (moving average of {window})")
    if eval_history:
        ax.plot(
            [e["step"] for e in eval_history],
            [e["eval_reward"] for e in eval_history],
            "o-",
            color="#d1603d",
            label="held-out (greedy)",
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_title("GRPO reward")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}"
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return True


class _Bar:
    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]grpo"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.task = self.progress.add_task("grpo", total=total, info="")
        self.progress.start()

    def update(self, record: dict, last_eval: dict | None) -> None:
        if not self.enabled:
            return
        info = f"reward {record['reward']:.3f}  len {record['completion_length']:.0f}"
        if last_eval:
            info += f"  eval {last_eval['eval_reward']:.3f}"
        self.progress.update(self.task, completed=record["step"], info=info)

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()


def train_grpo(cfg: GRPOConfig, progress: bool = True, **kwargs) -> GRPOTrainer:
    trainer = GRPOTrainer(cfg, **kwargs)
    trainer.fit(progress=progress)
    return trainer
