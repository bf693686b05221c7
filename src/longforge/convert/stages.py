"""HALO's three training stages as loss functions over one resumable stage loop.

- stage 1, hidden-state alignment (:func:`align_loss`): the frozen teacher runs; every layer's Lightning student
  sees the *same detached input* as that layer's attention and is trained with MSE against the attention's output;
  the teacher's output is what flows on, so no student ever sees another's errors. Only students' parameters train.
- stage 2, end-to-end distillation (:func:`distill_loss`): forward KL(p_teacher ‖ p_student) on the logits,
  computed in row chunks; every parameter of the hybrid trains.
- stage 3, long-context fine-tuning (:func:`finetune_loss`): next-token cross-entropy at a longer length.

:func:`run_stage` owns the loop: AdamW (β = 0.9, 0.95, no weight decay, clip 1.0), warm-up + cosine/constant
schedule, bf16 autocast on CUDA, a progress bar, atomic checkpoints every ``save_every`` steps (trainable weights
as safetensors, optimizer state, stream position) and resumption from the last one. Under ``torchrun`` every rank
draws its own rows and gradients are averaged over ranks (data parallel: each rank holds a full replica).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..modules.losses import chunked_cross_entropy, chunked_forward_kl
from ..utils.io import atomic_directory, atomic_write_text
from ..utils.progress import progress_bar
from .config import StageSection


@dataclass
class Runtime:
    device: torch.device
    use_bf16: bool
    rank: int = 0
    world_size: int = 1
    save_every: int = 200
    progress: bool = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= self.world_size
        return t

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def stage_steps(spec: StageSection, world_size: int = 1) -> int:
    """Optimizer steps that spend the stage's token budget (at least one)."""
    return max(1, math.ceil(spec.tokens / (spec.batch_size * spec.seq_len * world_size)))


def lr_at(step: int, total: int, spec: StageSection) -> float:
    if spec.warmup_steps and step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    if spec.schedule == "constant":
        return spec.lr
    span = max(1, total - spec.warmup_steps)
    progress = min(1.0, (step - spec.warmup_steps) / span)
    return spec.min_lr + (spec.lr - spec.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------------------------------ losses


def align_loss(teacher: nn.Module, students: nn.ModuleList, batch: dict, rt: Runtime) -> torch.Tensor:
    """Stage 1: mean over layers of MSE(student_i(x_i), attention_i(x_i)), x_i the teacher's own layer input."""
    captured: list = []
    hooks = [
        layer.mixer.register_forward_hook(lambda _m, args, out: captured.append((args, out)))
        for layer in teacher.model.layers
    ]
    ids = batch["input_ids"].to(rt.device)
    try:
        with torch.no_grad(), rt.autocast():
            teacher.model(input_ids=ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    losses = []
    for student, (args, target) in zip(students, captured):
        x, rope, position_ids, mask = args[:4]
        with rt.autocast():
            out = student(x.detach(), rope, position_ids, mask, None)
        losses.append(F.mse_loss(out.float(), target.float()))
    return torch.stack(losses).mean()


def distill_loss(student: nn.Module, teacher: nn.Module, batch: dict, rt: Runtime, chunk: int) -> torch.Tensor:
    """Stage 2: forward KL(p_teacher ‖ p_student) per token, averaged over the batch's tokens."""
    ids = batch["input_ids"].to(rt.device)
    with torch.no_grad(), rt.autocast():
        t_hidden = teacher.model(input_ids=ids, use_cache=False).last_hidden_state
    with rt.autocast():
        s_hidden = student.model(input_ids=ids, use_cache=False).last_hidden_state
        kl = chunked_forward_kl(s_hidden, t_hidden, student.lm_head.weight, teacher.lm_head.weight, chunk=chunk)
    return kl / ids.numel()


def finetune_loss(student: nn.Module, batch: dict, rt: Runtime, chunk: int) -> torch.Tensor:
    """Stage 3: next-token cross-entropy per predicted token."""
    ids = batch["input_ids"].to(rt.device)
    with rt.autocast():
        hidden = student.model(input_ids=ids, use_cache=False).last_hidden_state
        ce = chunked_cross_entropy(hidden, student.lm_head.weight, ids, chunk=chunk)
    return ce / (ids.shape[0] * (ids.shape[1] - 1))


@torch.no_grad()
def heldout_loss(model: nn.Module, batches: list[dict], rt: Runtime, chunk: int = 1024) -> float:
    """Mean next-token loss (nats/token) over fixed held-out batches (``loss_weight`` respected)."""
    model.eval()
    total, count = 0.0, 0.0
    for batch in batches:
        ids = batch["input_ids"].to(rt.device)
        weight = batch["loss_weight"].to(rt.device)
        with rt.autocast():
            hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
        total += float(chunked_cross_entropy(hidden.float(), model.lm_head.weight.float(), ids, weight, chunk=chunk))
        count += float(weight[:, 1:].sum())
    return total / max(count, 1.0)


# ------------------------------------------------------------------------------------------------------ loop


def _checkpoint_paths(stage_dir: Path) -> tuple[Path, Path]:
    return stage_dir / "checkpoint", stage_dir / "checkpoint" / "state.json"


def _save_checkpoint(stage_dir: Path, module: nn.Module, optimizer, state: dict) -> None:
    from safetensors.torch import save_file

    target, _ = _checkpoint_paths(stage_dir)
    weights = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    # Tied weights appear twice in a state dict; safetensors refuses shared storage, so store each tensor once.
    seen: dict[int, str] = {}
    unique, aliases = {}, {}
    for k, v in weights.items():
        ptr = v.data_ptr()
        if ptr in seen and v.numel() > 0:
            aliases[k] = seen[ptr]
        else:
            seen[ptr] = k
            unique[k] = v.clone()
    with atomic_directory(target) as tmp:
        save_file(unique, str(tmp / "weights.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "aliases": aliases}))


def _load_checkpoint(stage_dir: Path, module: nn.Module, optimizer) -> dict | None:
    from safetensors.torch import load_file

    target, state_path = _checkpoint_paths(stage_dir)
    if not state_path.is_file():
        return None
    try:
        state = json.loads(state_path.read_text())
        weights = load_file(str(target / "weights.safetensors"))
        opt_state = torch.load(target / "optimizer.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, do not guess
        raise ValueError(f"checkpoint {target} is unreadable ({e}); delete it to restart this stage") from e
    for alias, source in state.pop("aliases", {}).items():
        weights[alias] = weights[source]
    missing, unexpected = module.load_state_dict(weights, strict=False)
    if unexpected or [m for m in missing if m not in state.get("optional_missing", [])]:
        raise ValueError(
            f"checkpoint {target} does not match this model (missing {missing[:3]}, extra {unexpected[:3]})"
        )
    optimizer.load_state_dict(opt_state)
    return state


def run_stage(
    name: str,
    spec: StageSection,
    module: nn.Module,
    loss_fn: Callable[[dict], torch.Tensor],
    stream,
    stage_dir: Path,
    rt: Runtime,
    train_modules: list[nn.Module] | None = None,
) -> dict:
    """Train the parameters of ``module`` that require grad on ``loss_fn(batch)`` for the stage's token budget.

    Resumes from ``stage_dir/checkpoint`` when it exists. Returns ``{"steps", "tokens", "seconds", "history"}``
    (history: one record per step: step, loss, lr, grad_norm, tokens)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"stage {name}: nothing to train (no parameter requires grad)")
    optimizer = torch.optim.AdamW(params, lr=spec.lr, betas=(0.9, 0.95), weight_decay=0.0, eps=1e-8)
    total = stage_steps(spec, rt.world_size)
    state = _load_checkpoint(stage_dir, module, optimizer) or {"step": 0, "tokens": 0, "history": [], "seconds": 0.0}
    if state["step"] and "stream" in state:
        stream.load_state_dict(state["stream"])
    step, tokens, history = int(state["step"]), int(state["tokens"]), list(state["history"])
    spent = float(state.get("seconds", 0.0))
    for m in train_modules or [module]:
        m.train()
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    start = time.time()
    with progress_bar(f"stage {name}", total, enabled=rt.progress and rt.is_main) as advance:
        advance(step)
        while step < total:
            lr = lr_at(step, total, spec)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = stream.next_batch(spec.batch_size, spec.seq_len)
            loss = loss_fn(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"stage {name}: loss is {float(loss)} at step {step}; lower the lr")
            loss.backward()
            if rt.world_size > 1:
                for p in params:
                    if p.grad is not None:
                        rt.all_reduce_mean(p.grad)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens += batch["input_ids"].numel() * rt.world_size
            loss_value = float(rt.all_reduce_mean(loss.detach().float().clone()))
            history.append(
                {"step": step, "loss": round(loss_value, 6), "lr": lr, "grad_norm": round(float(grad_norm), 4),
                 "tokens": tokens}
            )  # fmt: skip
            advance(1, f"loss {loss_value:.4f}")
            if step % rt.save_every == 0 and step < total:
                if rt.is_main:
                    _save_checkpoint(
                        stage_dir, module, optimizer,
                        {"step": step, "tokens": tokens, "history": history, "stream": stream.state_dict(),
                         "seconds": spent + time.time() - start},
                    )  # fmt: skip
                rt.barrier()
    seconds = spent + time.time() - start
    trained = tokens - int(state["tokens"])
    summary = {
        "steps": step, "tokens": tokens, "seconds": round(seconds, 2), "history": history,
        "tokens_per_s": round(trained / max(time.time() - start, 1e-9), 1),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(rt.device) / 2**30, 3)
        if rt.device.type == "cuda" else None,
    }  # fmt: skip
    if rt.is_main:
        atomic_write_text(stage_dir / "summary.json", json.dumps(summary))
    return summary


def clear_checkpoint(stage_dir: Path) -> None:
    """Drop a finished stage's rolling checkpoint (its result is saved elsewhere)."""
    import shutil

    target, _ = _checkpoint_paths(stage_dir)
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
    os.makedirs(stage_dir, exist_ok=True)
