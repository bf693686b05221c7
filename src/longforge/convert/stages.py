"""HALO's three training stages as loss functions over one resumable stage loop.

- stage 1, hidden-state alignment (:func:`align_loss`): the frozen teacher runs; every layer's Lightning student
  sees the *same detached input* as that layer's attention and is trained with MSE against the attention's output;
  the teacher's output is what flows on, so no student ever sees another's errors. Only students' parameters train.
- stage 2, end-to-end distillation (:func:`distill_loss`): forward KL(p_teacher ‖ p_student) on the logits,
  computed in row chunks; every parameter of the hybrid trains.
- stage 3, long-context fine-tuning (:func:`finetune_loss`): next-token cross-entropy at a longer length.

:func:`run_stage` owns the loop: AdamW (β = 0.9, 0.95, no weight decay, clip 1.0), warm-up + cosine/constant
schedule, bf16 autocast on CUDA, a progress bar, atomic checkpoints every ``save_every`` steps (trainable weights
as safetensors, optimizer state, every rank's stream position) and resumption from the last one. Under ``torchrun``
every rank draws its own rows and gradients are averaged over ranks: by FSDP2's reduce-scatter when the module is
sharded (``parallel: fsdp``, see :mod:`longforge.train.fsdp`), by an all-reduce when each rank holds a replica.

Every forward goes through the *root* module (``model(...)``, not ``model.model(...)``): FSDP2 gathers the root's
parameters (embeddings, final norm, lm_head) in the root's pre-forward and keeps them until backward, which is what
lets the chunked losses read ``lm_head.weight`` directly. The final hidden state is taken by a hook on the decoder
stack and logits are computed for one position only (``logits_to_keep=1``), so no [B, T, V] tensor is built.
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
    parallel: str = "replicate"  # fsdp | replicate (meaningful when world_size > 1)

    @property
    def sharded(self) -> bool:
        """Trained modules and the frozen teacher are FSDP2-sharded (torchrun, parallel: fsdp)."""
        return self.world_size > 1 and self.parallel == "fsdp"

    def mesh(self):
        """The one-dimensional device mesh FSDP2 shards over (created once)."""
        if getattr(self, "_mesh", None) is None:
            from torch.distributed.device_mesh import init_device_mesh

            self._mesh = init_device_mesh(self.device.type, (self.world_size,))
        return self._mesh

    def shard(self, model: nn.Module, units) -> nn.Module:
        """FSDP2 over ``units`` (decoder layers or students) and the root; parameters land on this rank's device."""
        from ..train.fsdp import shard_model

        return shard_model(model, list(units), mesh=self.mesh())

    def all_gather_object(self, obj) -> list:
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

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


def final_hidden(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden state [B, T, H], from a call through the root module (see the module docstring)."""
    captured = {}
    hook = model.model.register_forward_hook(lambda _m, _a, out: captured.__setitem__("h", out.last_hidden_state))
    try:
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
    finally:
        hook.remove()
    return captured["h"]


def output_weight(model: nn.Module) -> torch.Tensor:
    """``lm_head.weight`` after a root forward; under FSDP2 the root keeps it gathered until backward."""
    weight = model.lm_head.weight
    if hasattr(weight, "full_tensor"):  # a DTensor: the root was resharded, which FSDP2 does not do for the root
        raise RuntimeError("lm_head.weight is still sharded after the root forward; this torch's FSDP2 resharded it")
    return weight


def align_loss(teacher: nn.Module, students: nn.Module, batch: dict, rt: Runtime) -> torch.Tensor:
    """Stage 1: mean over layers of MSE(student_i(x_i), attention_i(x_i)), x_i the teacher's own layer input.

    ``students`` is a :class:`~longforge.convert.models.StudentBank`, called once for all layers (under FSDP2 the
    bank is the root that gathers each student in turn)."""
    captured: list = []
    hooks = [
        layer.mixer.register_forward_hook(lambda _m, args, out: captured.append((args, out)))
        for layer in teacher.model.layers
    ]
    ids = batch["input_ids"].to(rt.device)
    try:
        with torch.no_grad(), rt.autocast():
            teacher(input_ids=ids, use_cache=False, logits_to_keep=1)
    finally:
        for h in hooks:
            h.remove()
    inputs = [(args[0].detach(), args[1], args[2], args[3], None) for args, _ in captured]
    with rt.autocast():
        outs = students(inputs)
    losses = [F.mse_loss(out.float(), target.float()) for out, (_, target) in zip(outs, captured)]
    return torch.stack(losses).mean()


def distill_loss(student: nn.Module, teacher: nn.Module, batch: dict, rt: Runtime, chunk: int) -> torch.Tensor:
    """Stage 2: forward KL(p_teacher ‖ p_student) per token, averaged over the batch's tokens."""
    ids = batch["input_ids"].to(rt.device)
    with torch.no_grad(), rt.autocast():
        t_hidden = final_hidden(teacher, ids)
    with rt.autocast():
        s_hidden = final_hidden(student, ids)
        kl = chunked_forward_kl(s_hidden, t_hidden, output_weight(student), output_weight(teacher), chunk=chunk)
    return kl / ids.numel()


def finetune_loss(student: nn.Module, batch: dict, rt: Runtime, chunk: int) -> torch.Tensor:
    """Stage 3: next-token cross-entropy per predicted token."""
    ids = batch["input_ids"].to(rt.device)
    with rt.autocast():
        hidden = final_hidden(student, ids)
        ce = chunked_cross_entropy(hidden, output_weight(student), ids, chunk=chunk)
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


def _save_checkpoint(stage_dir: Path, module: nn.Module, optimizer, state: dict, rt: Runtime) -> None:
    """A collective under FSDP2 (the full state is gathered to rank 0); rank 0 writes, atomically: the weights as
    safetensors, the name-keyed optimizer state, and ``state`` (with every rank's stream position)."""
    from safetensors.torch import save_file

    from ..train.fsdp import full_state

    model_state, optim_state = full_state(module, optimizer)
    if not rt.is_main:
        return
    target, _ = _checkpoint_paths(stage_dir)
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model_state.items()}
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
        torch.save(optim_state, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "aliases": aliases}))


def _load_checkpoint(stage_dir: Path, module: nn.Module, optimizer) -> dict | None:
    """Every rank reads the full checkpoint and keeps its shard (or the whole of it, unsharded)."""
    from safetensors.torch import load_file

    from ..train.fsdp import load_full_state

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
    for names in _tied_names(module):  # a gathered state may hold a tied parameter under one of its names only
        present = [n for n in names if n in weights]
        for name in names:
            if present and name not in weights:
                weights[name] = weights[present[0]]
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected or not isinstance(opt_state, dict) or "param_groups" not in opt_state:
        raise ValueError(
            f"checkpoint {target} does not match this model (missing {missing[:3]}, extra {unexpected[:3]}); "
            "delete it to restart this stage"
        )
    load_full_state(module, weights, optimizer, opt_state)
    return state


def _tied_names(module: nn.Module) -> list[list[str]]:
    """Groups of state-dict names that are one parameter (tied embeddings)."""
    groups: dict[int, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _stream_state_for_rank(state: dict, rt: Runtime) -> dict | None:
    streams = state.get("streams")
    if isinstance(streams, list) and len(streams) == rt.world_size:
        return streams[rt.rank]
    # a checkpoint from another world size (or an older one holding rank 0's stream only): only rank 0 continues
    # its own stream exactly; the other ranks start theirs afresh (different rows, same distribution)
    if rt.rank == 0:
        return streams[0] if isinstance(streams, list) and streams else state.get("stream")
    return None


def run_stage(
    name: str,
    spec: StageSection,
    module: nn.Module,
    loss_fn: Callable[[dict], torch.Tensor],
    stream,
    stage_dir: Path,
    rt: Runtime,
    train_modules: list[nn.Module] | None = None,
    after_step: Callable[[], None] | None = None,
) -> dict:
    """Train the parameters of ``module`` that require grad on ``loss_fn(batch)`` for the stage's token budget.

    ``module`` may be FSDP2-sharded (then every rank must run this in lockstep). ``after_step`` runs after each
    optimizer step (e.g. to free a sharded teacher's gathered root). Resumes from ``stage_dir/checkpoint`` when it
    exists. Returns ``{"steps", "tokens", "seconds", "history", "tokens_per_s", "peak_mem_gib",
    "peak_mem_gib_per_rank"}`` (history: one record per step: step, loss, lr, grad_norm, tokens, elapsed seconds)."""
    from ..train.fsdp import grad_norm_value, is_sharded

    stage_dir.mkdir(parents=True, exist_ok=True)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"stage {name}: nothing to train (no parameter requires grad)")
    sharded = is_sharded(module)
    optimizer = torch.optim.AdamW(params, lr=spec.lr, betas=(0.9, 0.95), weight_decay=0.0, eps=1e-8)
    total = stage_steps(spec, rt.world_size)
    state = _load_checkpoint(stage_dir, module, optimizer) or {"step": 0, "tokens": 0, "history": [], "seconds": 0.0}
    if state["step"]:
        stream_state = _stream_state_for_rank(state, rt)
        if stream_state is not None:
            stream.load_state_dict(stream_state)
    step, tokens, history = int(state["step"]), int(state["tokens"]), list(state["history"])
    if step:  # the budget left, in steps of this run's shape (the same total unless the number of ranks changed)
        total = step + max(0, math.ceil((spec.tokens - tokens) / (spec.batch_size * spec.seq_len * rt.world_size)))
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
            if rt.world_size > 1 and not sharded:  # FSDP2 averages gradients in its reduce-scatter
                for p in params:
                    if p.grad is not None:
                        rt.all_reduce_mean(p.grad)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step()
            step += 1
            tokens += batch["input_ids"].numel() * rt.world_size
            loss_value = float(rt.all_reduce_mean(loss.detach().float().clone()))
            history.append(
                {"step": step, "loss": round(loss_value, 6), "lr": lr,
                 "grad_norm": round(grad_norm_value(grad_norm), 4), "tokens": tokens,
                 "elapsed": round(spent + time.time() - start, 3)}
            )  # fmt: skip
            advance(1, f"loss {loss_value:.4f}")
            if step % rt.save_every == 0 and step < total:
                streams = rt.all_gather_object(stream.state_dict())
                _save_checkpoint(
                    stage_dir, module, optimizer,
                    {"step": step, "tokens": tokens, "history": history, "streams": streams,
                     "seconds": spent + time.time() - start, "world_size": rt.world_size},
                    rt,
                )  # fmt: skip
                rt.barrier()
    seconds = spent + time.time() - start
    trained = tokens - int(state["tokens"])
    peak = torch.cuda.max_memory_allocated(rt.device) / 2**30 if rt.device.type == "cuda" else None
    peaks = [round(p, 3) if p is not None else None for p in rt.all_gather_object(peak)]
    fresh = history[len(history) - (step - int(state["step"])) :]  # this run's steps
    # throughput after this run's first step (which pays for kernel autotuning, allocator warm-up, first gathers)
    steady = (
        round((fresh[-1]["tokens"] - fresh[0]["tokens"]) / max(fresh[-1]["elapsed"] - fresh[0]["elapsed"], 1e-9), 1)
        if len(fresh) >= 2 else None
    )  # fmt: skip
    summary = {
        "steps": step, "tokens": tokens, "seconds": round(seconds, 2), "history": history,
        "tokens_per_s": round(trained / max(time.time() - start, 1e-9), 1), "steady_tokens_per_s": steady,
        "peak_mem_gib": peaks[0], "peak_mem_gib_per_rank": peaks, "world_size": rt.world_size,
        "parallel": "fsdp" if sharded else ("replicate" if rt.world_size > 1 else "single"),
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
