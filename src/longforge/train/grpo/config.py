"""`GRPOConfig`: the typed recipe of `longforge rl`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .losses import LOSS_AGGS, SCALE_REWARDS

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
    # the reward of a completion that hit max_new_tokens without EOS (None: score its text like any other). Word-F1
    # pays a rambling completion a little for every gold word it happens to contain, more than a short wrong answer
    # gets: without this, the policy learns to stop ending its answers (the first H200 demo run: 0 → 51 % truncated)
    truncated_reward: float | None = None
    eval_every: int = 0  # greedy mean reward on the held-out split every N steps (0: only at start and end)
    eval_items: int = 64
    time_budget_s: float = 0.0  # > 0: stop before `steps` when the next step (and the final eval) would overrun it
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
        if self.truncated_reward is not None and not -1.0 <= self.truncated_reward <= 1.0:
            raise ValueError(f"truncated_reward must be in [-1, 1] or null, got {self.truncated_reward}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.time_budget_s < 0:
            raise ValueError(f"time_budget_s must be >= 0 (0: no limit), got {self.time_budget_s}")
        if not 0 <= self.data.eval_fraction < 1:
            raise ValueError(f"data.eval_fraction must be in [0, 1), got {self.data.eval_fraction}")
        from ..rewards import REWARDS

        for dataset, reward_type in self.reward_overrides.items():
            if reward_type not in REWARDS:
                raise ValueError(
                    f"reward_overrides.{dataset}: unknown reward_type {reward_type!r}; known: {', '.join(REWARDS)}"
                )
        if self.judge.model and self.judge.url:
            raise ValueError("judge: give judge.model or judge.url, not both")
