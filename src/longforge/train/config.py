"""`TrainConfig`: the typed recipe of `longforge train` (YAML ⇄ dataclass ⇄ CLI overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field

ARCHS = ("qwen3", "llama", "hybrid")
SCHEDULES = ("cosine", "wsd", "constant")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class ModelSection:
    arch: str = "qwen3"  # qwen3 | llama (transformers models) | hybrid (longforge HybridConfig)
    config: dict = field(default_factory=dict)  # keyword arguments of Qwen3Config / LlamaConfig / HybridConfig
    init_from: str | None = None  # a local model directory to continue from (SFT, continued pre-training)
    tokenizer: str | None = None  # a tokenizer directory; None → train the built-in corpus tokenizer
    tokenizer_vocab_size: int = 12000  # when the built-in tokenizer is trained


@dataclass
class DataSection:
    source: str = "builtin"  # builtin | a JSONL / Parquet file or a `datasets.save_to_disk` dir (comma-separated)
    text_field: str = "text"
    mix: dict = field(default_factory=dict)  # built-in corpus: weight per component (prose, niah, multikey, ...)
    answer_weight: float = 5.0  # loss weight of answer tokens in the built-in skill data (teacher_notes: up-weight)
    context_weight: float = 1.0  # loss weight of the other tokens of skill samples
    # Where the built-in prose comes from: "stdlib" and/or installed package names (their docstrings and docs).
    prose_sources: list[str] = field(default_factory=lambda: ["stdlib", "numpy", "torch"])
    probes: list[str] = field(default_factory=lambda: ["niah_single_1", "niah_multikey_1", "vt"])  # eval probes


@dataclass
class OptimSection:
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # the schedule ends at lr × min_lr_ratio
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay) | constant
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays linearly
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping


@dataclass
class TrainConfig:
    out_dir: str = "runs/train"
    seed: int = 0
    steps: int = 1000
    micro_batch_size: int = 8  # sequences per micro-step at `seq_len`
    grad_accum: int = 1
    seq_len: int = 1024
    # Curriculum: [[start_step, seq_len], ...]. Tokens per optimizer step stay micro_batch_size × grad_accum ×
    # seq_len: at a longer length the micro-batch shrinks (teacher_notes: grow the length, keep tokens per step).
    seq_len_schedule: list[list[int]] = field(default_factory=list)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    gradient_checkpointing: bool = False
    device: str = "auto"  # auto | cpu | cuda
    log_every: int = 10
    eval_every: int = 200  # 0 disables periodic evaluation
    eval_batches: int = 4
    save_every: int = 500  # 0: only the final checkpoint
    keep_last: int = 2
    max_shard_size: str = "16MB"
    resume: bool = True  # continue from out_dir's latest checkpoint when there is one
    tensorboard: bool = True

    def validate(self) -> None:
        if self.model.arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {', '.join(ARCHS)}, got {self.model.arch!r}")
        if self.optim.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {self.optim.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("steps", "micro_batch_size", "grad_accum", "seq_len", "log_every", "eval_batches"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.optim.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.optim.lr}")
        if not 0 <= self.optim.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.optim.min_lr_ratio}")
        if not 0 < self.optim.decay_fraction <= 1:
            raise ValueError(f"optim.decay_fraction must be in (0, 1], got {self.optim.decay_fraction}")
        if len(self.optim.betas) != 2:
            raise ValueError(f"optim.betas must have two values, got {self.optim.betas}")
        last = -1
        for i, entry in enumerate(self.seq_len_schedule):
            if len(entry) != 2 or entry[0] <= last or entry[1] <= 0:
                raise ValueError(
                    f"seq_len_schedule[{i}] = {entry}: entries are [start_step, seq_len] with increasing steps"
                )
            last = entry[0]
        if self.seq_len_schedule and self.seq_len_schedule[0][0] != 0:
            raise ValueError("seq_len_schedule must start at step 0")
        if self.data.source != "builtin":
            from pathlib import Path

            for path in self.data.source.split(","):
                if not Path(path.strip()).exists():
                    raise ValueError(f"data.source: {path.strip()} does not exist")
        if self.data.source != "builtin" and self.model.tokenizer is None and self.model.init_from is None:
            raise ValueError(
                "data.source is a user dataset: give model.tokenizer (or model.init_from with a tokenizer)"
            )

    def seq_len_at(self, step: int) -> int:
        length = self.seq_len
        for start, n in self.seq_len_schedule:
            if step >= start:
                length = n
        return length

    def micro_batch_at(self, step: int) -> int:
        """Sequences per micro-step so that tokens per step stay constant across the curriculum."""
        return max(1, self.micro_batch_size * self.seq_len // self.seq_len_at(step))
