"""`ConvertConfig`: the typed recipe of `longforge convert` (YAML ⇄ dataclass ⇄ CLI overrides).

Defaults are HALO's (arXiv 2601.22156, ``../shared/reference/architecture.md`` §1.4): AdamW β = (0.9, 0.95), no
weight decay, clip 1.0; stage 1 at 512 tokens, lr 1e-3 → 1e-5 cosine; stage 2 at 512 tokens, lr 1e-4 → 1e-5;
stage 3 at 16K tokens, constant 1e-5; 25 % of the layers stay softmax attention. Token budgets default to small
numbers: a conversion is sized by the user (HALO used 328M / 983M / 1.05B tokens for a 1.7B teacher).
"""

from __future__ import annotations

from dataclasses import dataclass, field

RECIPES = ("hypenet", "sala")
STAGES = ("1", "select", "2", "3", "hype")
PRECISIONS = ("auto", "bf16", "fp32")
SCHEDULES = ("cosine", "constant")
PARALLEL = ("fsdp", "replicate")


@dataclass
class StageSection:
    """One training stage: its token budget, batch shape and learning-rate schedule."""

    tokens: int = 1_000_000  # global tokens (all ranks together) this stage trains on
    seq_len: int = 512
    batch_size: int = 8  # rows per rank per optimizer step
    lr: float = 1e-3
    min_lr: float = 1e-5  # cosine ends here; `constant` ignores it
    warmup_steps: int = 50
    schedule: str = "cosine"


SELECT_MODES = ("hype", "halo")


@dataclass
class SelectSection:
    """Layer selection: score_i = min(50, (top_i − R_i) / (max C − C_i + 1e-10)) (HALO §1.5), R_i and C_i measured
    with only layer i converted to its Lightning student.

    ``mode``: ``halo`` takes top_i = max R (the paper). ``hype`` (default) takes top_i = N_i, the retrieval with only
    layer i made NoPE: a kept layer loses RoPE in a HyPE hybrid, so what keeping it buys is N_i − R_i, not
    max R − R_i. A layer whose job needs positions (e.g. a previous-token head) scores below zero and is converted;
    its RoPE Lightning student keeps more of that job than NoPE attention could. Costs one more RULER run per layer."""

    tasks: list[str] = field(default_factory=lambda: ["niah_single_2", "niah_multikey_1", "niah_multivalue", "vt"])
    length: int = 2048  # RULER context length of the retrieval score R_i
    samples: int = 20  # per task
    loss_batches: int = 4  # held-out batches of the general score C_i = −(held-out LM loss)
    loss_seq_len: int = 512
    layers: list[int] | None = None  # skip the sweep and keep these layers as attention (ablations, known results)
    mode: str = "hype"  # hype | halo (see the class docstring)


@dataclass
class HypeSection:
    """HyPE's attention-logit scaling ``"hype a"``: a is chosen by a sweep at a length beyond training."""

    alphas: list[float] = field(default_factory=lambda: [64.0, 128.0, 362.0, 500.0, 1000.0, 4096.0])
    include_none: bool = True  # also try no scaling, and keep it if it wins
    length: int | None = None  # None: 2 × the stage-3 length
    tasks: list[str] = field(default_factory=lambda: ["niah_single_2", "niah_multikey_1", "niah_multivalue"])
    samples: int = 20


@dataclass
class ReportSection:
    lengths: list[int] | None = None  # RULER lengths of teacher vs hybrid; None: stage-3 length × (1/4, 1/2, 1, 2, 4)
    tasks: list[str] = field(
        default_factory=lambda: [
            "niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1",
            "niah_multikey_2", "niah_multikey_3", "niah_multivalue", "niah_multiquery",
        ]
    )  # fmt: skip
    samples: int = 20  # per task and length; 0 skips RULER in the report
    loss_batches: int = 8


@dataclass
class ConvertConfig:
    teacher: str = "tiny-teacher"  # a transformers Qwen3 / Llama directory, or a built-in name
    recipe: str = "sala"  # hypenet (Lightning + full NoPE attention) | sala (Lightning + InfLLM-V2 sparse NoPE)
    out_dir: str = "runs/convert"
    data: list[str] | None = None  # JSONL / Parquet / saved-dataset paths; None: the built-in corpus
    text_field: str = "text"
    # Built-in corpus mix (the teacher's training mix by default: prose + retrieval skills).
    mix: dict = field(
        default_factory=lambda: {"prose": 0.4, "niah": 0.2, "multikey": 0.15, "kv": 0.05, "vt": 0.12, "facts": 0.08}
    )
    prose_sources: list[str] = field(default_factory=lambda: ["stdlib", "numpy", "torch"])
    attn_ratio: float = 0.25  # share of layers kept as softmax attention (HALO / SALA: 1:3)
    stages: list[str] = field(default_factory=lambda: ["1", "select", "2", "3", "hype"])
    stage1: StageSection = field(default_factory=lambda: StageSection(tokens=600_000, lr=1e-3, min_lr=1e-5))
    stage2: StageSection = field(default_factory=lambda: StageSection(tokens=1_000_000, lr=1e-4, min_lr=1e-5))
    stage3: StageSection = field(
        default_factory=lambda: StageSection(
            tokens=500_000, seq_len=16384, batch_size=1, lr=1e-5, min_lr=1e-5, schedule="constant"
        )
    )
    select: SelectSection = field(default_factory=SelectSection)
    hype: HypeSection = field(default_factory=HypeSection)
    report: ReportSection = field(default_factory=ReportSection)
    hybrid: dict = field(default_factory=dict)  # extra HybridConfig fields, e.g. {sparse_topk: 16}
    kl_chunk: int = 1024  # rows of logits per chunk in stage 2's KL (and stage 3's CE)
    gradient_checkpointing: bool = True  # in stage 3
    device: str = "auto"
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    seed: int = 0
    save_every: int = 200  # optimizer steps between checkpoints inside a stage
    eval_batch_size: int = 8
    max_shard_size: str = "15MB"
    # Under torchrun (WORLD_SIZE > 1): fsdp shards the trained modules and the frozen teacher with FSDP2 (one unit per
    # decoder layer / per student); replicate keeps a full copy on every rank and all-reduces gradients. Ignored on
    # one process. Checkpoints are the same in both modes, so a run may resume in the other one.
    parallel: str = "fsdp"

    def validate(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        if not 0.0 < self.attn_ratio < 1.0:
            raise ValueError(f"attn_ratio must be in (0, 1), got {self.attn_ratio}")
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise ValueError(f"stages must be a non-empty subset of {', '.join(STAGES)}; got {self.stages}")
        order = [STAGES.index(s) for s in self.stages]
        if order != sorted(order) or len(set(order)) != len(order):
            raise ValueError(f"stages must be in pipeline order {', '.join(STAGES)} without repeats; got {self.stages}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.parallel not in PARALLEL:
            raise ValueError(f"parallel must be one of {', '.join(PARALLEL)}, got {self.parallel!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        for name in ("stage1", "stage2", "stage3"):
            s: StageSection = getattr(self, name)
            if s.tokens < 1 or s.seq_len < 16 or s.batch_size < 1:
                raise ValueError(f"{name}: tokens >= 1, seq_len >= 16 and batch_size >= 1 are required; got {s}")
            if s.lr <= 0 or s.min_lr < 0 or s.warmup_steps < 0:
                raise ValueError(f"{name}: lr > 0, min_lr >= 0 and warmup_steps >= 0 are required; got {s}")
            if s.schedule not in SCHEDULES:
                raise ValueError(f"{name}.schedule must be one of {', '.join(SCHEDULES)}, got {s.schedule!r}")
        if self.select.length < 64 or self.select.samples < 1 or self.select.loss_batches < 1:
            raise ValueError(
                f"select: length >= 64, samples >= 1 and loss_batches >= 1 are required; got {self.select}"
            )
        if self.select.mode not in SELECT_MODES:
            raise ValueError(f"select.mode must be one of {', '.join(SELECT_MODES)}, got {self.select.mode!r}")
        if any(a <= 1.0 for a in self.hype.alphas):
            raise ValueError(f"hype.alphas must all be > 1 (log(t + a) / log(a)); got {self.hype.alphas}")
        if not self.hype.alphas and not self.hype.include_none:
            raise ValueError("hype: no candidates (alphas empty and include_none false)")
        if self.kl_chunk < 1 or self.save_every < 1 or self.eval_batch_size < 1:
            raise ValueError("kl_chunk, save_every and eval_batch_size must be >= 1")
        if self.data is not None and not self.data:
            raise ValueError("data: an empty list; give paths, or null for the built-in corpus")
        forbidden = {"layer_types", "position_encoding", "num_hidden_layers", "hidden_size", "vocab_size"}
        bad = sorted(forbidden & set(self.hybrid))
        if bad:
            raise ValueError(f"hybrid: {', '.join(bad)} are decided by the teacher and the recipe, not overridable")

    def stage(self, name: str) -> StageSection:
        return {"1": self.stage1, "2": self.stage2, "3": self.stage3}[name]


def parse_tokens(text: str) -> int:
    """'600K' / '1.5M' / '2B' / '12345' → an integer token count."""
    t = str(text).strip().upper().replace("_", "")
    scale = {"K": 1_000, "M": 1_000_000, "B": 1_000_000_000}.get(t[-1:], 1)
    number = t[:-1] if scale > 1 else t
    try:
        value = float(number) * scale
    except ValueError:
        raise ValueError(f"not a token count: {text!r} (e.g. 600K, 1.5M, 2B)") from None
    if value < 1:
        raise ValueError(f"token count must be >= 1, got {text!r}")
    return int(value)
