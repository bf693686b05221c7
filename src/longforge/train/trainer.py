"""`longforge train`: one lean loop for pre-training / SFT on packed sequences.

Reads top to bottom: build (tokenizer, model, data stream, optimizer) → resume if a checkpoint exists → loop
{ micro-batches → weighted next-token loss → backward → clip → step } with periodic evaluation, logging and atomic
checkpoints. With WORLD_SIZE > 1 (torchrun) the model is sharded with FSDP2 (`fully_shard`, one unit per decoder
layer); each rank reads its own data stream.

Loss: Σ w·CE / Σ w over the whole optimizer step (all micro-batches, all ranks), where w is the stream's per-token
loss weight — so gradient accumulation 4×1 and 1×4 give the same step, and up-weighted answer tokens (teacher_notes)
count as they should.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..recipes import dump_json, dump_yaml, to_dict
from ..utils.io import atomic_directory, atomic_write_bytes, atomic_write_text
from .config import TrainConfig
from .moe import activation_counts, controller_for, penalty_loss

# ----------------------------------------------------------------------------------------------- pure functions


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at optimizer step ``step`` (0-based): linear warm-up, then cosine / WSD / constant."""
    o = cfg.optim
    peak, floor = o.lr, o.lr * o.min_lr_ratio
    if o.warmup_steps and step < o.warmup_steps:
        return peak * (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return peak
    if o.schedule == "cosine":
        span = max(1, cfg.steps - o.warmup_steps)
        progress = min(1.0, (step - o.warmup_steps) / span)
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    # WSD: stable at the peak, then a linear decay over the last `decay_fraction` of the steps.
    decay_steps = max(1, int(round(cfg.steps * o.decay_fraction)))
    decay_start = cfg.steps - decay_steps
    if step < decay_start:
        return peak
    return peak + (floor - peak) * min(1.0, (step - decay_start + 1) / decay_steps)


def weighted_token_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_weight: torch.Tensor) -> torch.Tensor:
    """Σ_t w[t] · CE(logits[t-1], ids[t]) in fp32 (a sum: the caller normalises by the step's total weight).

    logits [B, T, V]; input_ids, loss_weight [B, T] (loss_weight[:, t] weights predicting token t)."""
    ce = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="none"
    )
    return (ce * loss_weight[:, 1:].reshape(-1).to(ce.dtype)).sum()


# ----------------------------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def init_distributed(device_kind: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    if device_kind == "cuda":
        torch.cuda.set_device(local)
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)


# ----------------------------------------------------------------------------------------------- building


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda was asked for but no CUDA device is available")
    return torch.device(cfg.device)


def cache_dir() -> Path:
    """Where parsed prose is cached between runs (LONGFORGE_CACHE, else ~/.cache/longforge)."""
    return Path(os.environ.get("LONGFORGE_CACHE", Path.home() / ".cache" / "longforge"))


def build_tokenizer(cfg: TrainConfig, out_dir: Path, dist: Dist):
    from transformers import AutoTokenizer

    source = cfg.model.tokenizer or cfg.model.init_from
    if source is not None:
        if not Path(source).is_dir():
            raise ValueError(f"model.tokenizer / model.init_from {source!r} is not a directory")
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    from ..data.tokenizer import build_tokenizer as build_corpus_tokenizer
    from ..data.tokenizer import load_tokenizer

    tok_dir = out_dir / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        if dist.is_main:
            with atomic_directory(tok_dir) as tmp:
                build_corpus_tokenizer(
                    tmp,
                    seed=cfg.seed,
                    vocab_size=cfg.model.tokenizer_vocab_size,
                    prose_sources=tuple(cfg.data.prose_sources),
                    cache_dir=cache_dir(),
                )
        dist.barrier()
    return load_tokenizer(tok_dir)


def build_model(cfg: TrainConfig, vocab_size: int, tokenizer):
    """A fresh model from the recipe's config (vocab sized to the tokenizer), or one loaded from model.init_from."""
    if cfg.model.init_from is not None:
        from transformers import AutoModelForCausalLM

        import longforge  # noqa: F401  (registers the hybrid with the Auto classes)

        return AutoModelForCausalLM.from_pretrained(cfg.model.init_from, local_files_only=True, dtype=torch.float32)
    kwargs = dict(cfg.model.config)
    kwargs.setdefault("vocab_size", vocab_size)
    if kwargs["vocab_size"] < vocab_size:
        raise ValueError(f"model.config.vocab_size {kwargs['vocab_size']} is smaller than the tokenizer's {vocab_size}")
    for name in ("eos_token_id", "bos_token_id", "pad_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            kwargs.setdefault(name, value)
    if cfg.model.arch == "hybrid":
        from ..models import HybridConfig, HybridForCausalLM

        return HybridForCausalLM(HybridConfig(**kwargs))
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    config_cls, model_cls = (
        (Qwen3Config, Qwen3ForCausalLM) if cfg.model.arch == "qwen3" else (LlamaConfig, LlamaForCausalLM)
    )
    try:
        config = config_cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"model.config is not a valid {config_cls.__name__}: {e}") from e
    return model_cls(config)


def build_stream(cfg: TrainConfig, tokenizer, rank: int):
    """The training stream: the built-in corpus (prose + skills), or the user's texts (JSONL / Parquet /
    saved dataset, comma-separated) in place of the prose share. Each rank draws its own rows."""
    from ..data.sources import read_texts
    from ..data.stream import TrainStream

    text_source = None
    if cfg.data.source != "builtin":
        text_source = []
        for path in cfg.data.source.split(","):
            text_source.extend(read_texts(path.strip(), field=cfg.data.text_field))
    return TrainStream(
        tokenizer,
        seed=cfg.seed * 1000 + rank,
        mix=cfg.data.mix or None,
        answer_weight=cfg.data.answer_weight,
        context_weight=cfg.data.context_weight,
        prose_sources=tuple(cfg.data.prose_sources),
        text_source=text_source,
        cache_dir=str(cache_dir()),
    )


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms, biases and embeddings-free 1-D parameters."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)


def decoder_layers(model: torch.nn.Module):
    return model.model.layers


# ----------------------------------------------------------------------------------------------- checkpoints


def checkpoint_dirs(out_dir: Path) -> list[Path]:
    root = out_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_")), key=lambda p: int(p.name[5:])
    )


def latest_checkpoint(out_dir: Path) -> Path | None:
    pointer = out_dir / "checkpoints" / "latest"
    if pointer.is_file():
        path = out_dir / "checkpoints" / pointer.read_text().strip()
        if (path / "trainer_state.pt").is_file():
            return path
    done = [p for p in checkpoint_dirs(out_dir) if (p / "trainer_state.pt").is_file()]
    return done[-1] if done else None


class Trainer:
    def __init__(self, cfg: TrainConfig):
        cfg.validate()
        self.cfg = cfg
        self.device = resolve_device(cfg)
        self.dist = init_distributed(self.device.type)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.out_dir = Path(cfg.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        self.tokenizer = build_tokenizer(cfg, self.out_dir, self.dist)
        self.model = build_model(cfg, len(self.tokenizer), self.tokenizer).to(self.device)
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        if self.dist.world_size > 1:
            from .fsdp import shard_model

            shard_model(self.model, decoder_layers(self.model))
        self.optimizer = build_optimizer(self.model, cfg)
        self.moe_controller = controller_for(self.model)
        self.stream = build_stream(cfg, self.tokenizer, self.dist.rank)
        self.step = 0
        self.tokens_seen = 0
        self.history: list[dict] = []
        self.writer = None
        if cfg.resume:
            ckpt = latest_checkpoint(self.out_dir)
            if ckpt is not None:
                self.load_checkpoint(ckpt)

    # ------------------------------------------------------------------ one optimizer step
    def train_step(self) -> dict:
        cfg, step = self.cfg, self.step
        seq_len, micro = cfg.seq_len_at(step), cfg.micro_batch_at(step)
        batches = [self.stream.next_batch(micro, seq_len) for _ in range(cfg.grad_accum)]
        total_weight = sum(b["loss_weight"][:, 1:].sum() for b in batches).to(self.device, torch.float32)
        total_weight = self.dist.all_reduce_sum(total_weight.clone()).clamp(min=1.0)
        lr = lr_at(step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        moe_counts = None
        for batch in batches:
            ids = batch["input_ids"].to(self.device)
            weight = batch["loss_weight"].to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                logits = self.model(input_ids=ids, use_cache=False).logits
            loss = weighted_token_loss(logits, ids, weight) / total_weight
            penalty = penalty_loss(self.model, self.moe_controller)
            # FSDP averages gradients over ranks; the loss is already normalised by the global weight.
            objective = loss * self.dist.world_size
            if penalty is not None:
                objective = objective + penalty / cfg.grad_accum
            objective.backward()
            loss_sum += loss.detach()
            counts = activation_counts(self.model)
            if counts:
                moe_counts = (
                    counts if moe_counts is None else [(a + c, b + d) for (a, b), (c, d) in zip(moe_counts, counts)]
                )
        grad_norm = torch.zeros(())
        if cfg.optim.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = float(self.dist.all_reduce_sum(loss_sum))
        moe_record = {}
        if moe_counts:
            counts = self.dist.all_reduce_sum(torch.tensor(moe_counts, dtype=torch.float64, device=self.device))
            rho_layers = (counts[:, 0] / counts[:, 1]).tolist()
            rho = float(counts[:, 0].sum() / counts[:, 1].sum())
            moe_record = {"moe_rho": rho, **{f"moe_rho_layer{i}": r for i, r in enumerate(rho_layers)}}
            if self.moe_controller is not None:
                moe_record["moe_lambda"] = self.moe_controller.update(rho)
        tokens = sum(b["input_ids"].numel() for b in batches) * self.dist.world_size
        self.tokens_seen += tokens
        self.step += 1
        return {
            "step": self.step,
            "loss": loss_value,
            "lr": lr,
            "grad_norm": float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm),
            "seq_len": seq_len,
            "tokens": tokens,
            **moe_record,
        }

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out prose loss (mean per token) and, on the built-in corpus, retrieval probes: teacher-forced exact
        match of each probe's answers (equal to a greedy-decoding hit), at the current training length."""
        from ..data.stream import answer_accuracy

        self.model.eval()
        seq_len = self.cfg.seq_len_at(max(0, self.step - 1))
        total, count = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        for batch in self.stream.eval_batches(
            self.cfg.micro_batch_at(self.step), seq_len, num_batches=self.cfg.eval_batches
        ):
            ids = batch["input_ids"].to(self.device)
            weight = batch["loss_weight"].to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                logits = self.model(input_ids=ids, use_cache=False).logits
            total += weighted_token_loss(logits, ids, weight)
            count += weight[:, 1:].sum()
        total, count = self.dist.all_reduce_sum(total), self.dist.all_reduce_sum(count)
        out = {"eval_loss": float(total / count.clamp(min=1.0))}
        if self.cfg.data.source == "builtin":
            for probe in self.cfg.data.probes:
                try:
                    batch = self.stream.eval_batches(min(16, self.cfg.micro_batch_at(self.step)), seq_len, kind=probe)[
                        0
                    ]
                except ValueError:  # the probe needs more tokens than this stage of the curriculum has
                    continue
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                    logits = self.model(input_ids=batch["input_ids"].to(self.device), use_cache=False).logits
                out[f"probe_{probe}"] = 100.0 * answer_accuracy(logits.float(), batch)["exact_match"]
        return out

    # ------------------------------------------------------------------ checkpoints
    def _full_state(self):
        if self.dist.world_size == 1:
            return self.model.state_dict(), self.optimizer.state_dict()
        from .fsdp import full_state

        return full_state(self.model, self.optimizer)

    def save_checkpoint(self, final: bool = False) -> Path:
        """Atomically write out_dir/checkpoints/step_N: model (safetensors shards), optimizer, stream and RNG
        state, resolved recipe; then point `latest` at it and prune old ones."""
        model_state, optim_state = self._full_state()
        name = f"step_{self.step}"
        path = self.out_dir / "checkpoints" / name
        rank_state = {
            "stream": self.stream.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
        }
        if self.dist.is_main:
            with atomic_directory(path) as tmp:
                model = self.model
                model.save_pretrained(
                    tmp / "model",
                    state_dict=model_state,
                    max_shard_size=self.cfg.max_shard_size,
                    safe_serialization=True,
                )
                self.tokenizer.save_pretrained(tmp / "model")
                torch.save(
                    {
                        "step": self.step,
                        "tokens_seen": self.tokens_seen,
                        "optimizer": optim_state,
                        "history": self.history,
                        "moe_controller": self.moe_controller.state_dict() if self.moe_controller else None,
                        "ranks": {0: rank_state},
                    },
                    tmp / "trainer_state.pt",
                )
                dump_yaml(self.cfg, tmp / "recipe.yaml")
            atomic_write_text(self.out_dir / "checkpoints" / "latest", name)
            for old in checkpoint_dirs(self.out_dir)[: -max(1, self.cfg.keep_last)]:
                if old != path:
                    shutil.rmtree(old, ignore_errors=True)
                    for rank_file in old.parent.glob(f".rank*_{old.name}.pt"):
                        rank_file.unlink()
        if self.dist.world_size > 1:
            # each rank's data position goes beside the main state; every rank may get here before rank 0 has made
            # checkpoints/, so the write makes it, and it is atomic like the rest of the checkpoint
            buffer = io.BytesIO()
            torch.save(rank_state, buffer)
            atomic_write_bytes(self.out_dir / "checkpoints" / f".rank{self.dist.rank}_{name}.pt", buffer.getvalue())
            self.dist.barrier()
        return path

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
        from ..utils.io import check_checkpoint_dir

        check_checkpoint_dir(path / "model")
        from safetensors.torch import load_file

        files = sorted((path / "model").glob("*.safetensors"))
        model_state = {}
        for f in files:
            model_state.update(load_file(str(f)))
        if self.dist.world_size == 1:
            missing, unexpected = self.model.load_state_dict(model_state, strict=False)
            tied = {"lm_head.weight"} if getattr(self.model.config, "tie_word_embeddings", False) else set()
            if set(missing) - tied or unexpected:
                raise ValueError(
                    f"checkpoint {path} does not match the model: missing {missing}, unexpected {unexpected}"
                )
            self.optimizer.load_state_dict(state["optimizer"])
        else:
            from .fsdp import load_full_state

            load_full_state(self.model, model_state, self.optimizer, state["optimizer"])
        rank_state = state["ranks"].get(0) if self.dist.rank == 0 else None
        if self.dist.world_size > 1 and self.dist.rank != 0:
            rank_state = torch.load(
                path.parent / f".rank{self.dist.rank}_{path.name}.pt", map_location="cpu", weights_only=True
            )
        self.stream.load_state_dict(rank_state["stream"])
        torch.set_rng_state(rank_state["torch_rng"])
        if rank_state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(rank_state["cuda_rng"])
        self.step = state["step"]
        self.tokens_seen = state["tokens_seen"]
        self.history = list(state["history"])
        if self.moe_controller is not None and state.get("moe_controller"):
            self.moe_controller.load_state_dict(state["moe_controller"])

    # ------------------------------------------------------------------ the loop
    def log(self, record: dict) -> None:
        self.history.append(record)
        if not self.dist.is_main:
            return
        if self.cfg.tensorboard and self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn(
                    "tensorboard is not installed: no event files are written (metrics go to train_summary.json)",
                    stacklevel=2,
                )
                self.cfg.tensorboard = False
            else:
                self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(
                        f"train/{key}" if not key.startswith("eval") else f"eval/{key}", value, record["step"]
                    )
            self.writer.flush()

    def fit(self, progress: bool = True) -> list[dict]:
        cfg = self.cfg
        if self.dist.is_main:
            dump_yaml(cfg, self.out_dir / "recipe.resolved.yaml")
        bar = _Progress(cfg.steps, self.step, enabled=progress and self.dist.is_main)
        try:
            while self.step < cfg.steps:
                record = self.train_step()
                if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                    record.update(self.evaluate())
                self.log(record)
                bar.update(record)
                if not bar.enabled and self.dist.is_main and (self.step % cfg.log_every == 0 or "eval_loss" in record):
                    print(
                        json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in record.items()}),
                        flush=True,
                    )
                if self.step < cfg.steps and cfg.save_every and self.step % cfg.save_every == 0:
                    self.save_checkpoint()
            if latest_checkpoint(self.out_dir) is None or latest_checkpoint(self.out_dir).name != f"step_{self.step}":
                self.save_checkpoint(final=True)
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
        if self.dist.is_main:
            dump_json(
                {"steps": self.step, "tokens_seen": self.tokens_seen, "history": self.history},
                self.out_dir / "train_summary.json",
            )
        return self.history


class _Progress:
    """A rich progress bar with loss, tokens/s and ETA."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.enabled = enabled
        self.t0 = time.time()
        self.tokens = 0
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("train", total=total, completed=start, info="")
        self.progress.start()

    def update(self, record: dict) -> None:
        self.tokens += record["tokens"]
        if not self.enabled:
            return
        rate = self.tokens / max(1e-9, time.time() - self.t0)
        info = f"loss {record['loss']:.4f}  {rate:,.0f} tok/s  len {record['seq_len']}"
        if "eval_loss" in record:
            info += f"  eval {record['eval_loss']:.4f}"
        self.progress.update(self.task, completed=record["step"], info=info)

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()


def train(cfg: TrainConfig, progress: bool = True) -> Trainer:
    trainer = Trainer(cfg)
    trainer.fit(progress=progress)
    return trainer


__all__ = ["Trainer", "train", "lr_at", "weighted_token_loss", "to_dict"]
