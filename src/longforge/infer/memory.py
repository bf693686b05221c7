"""Memory planning before allocation: will a request fit on the device?

    need = weights (unless already resident) + cache(prompt + new tokens) + activations of one prefill chunk

Cache bytes come from `longforge.models.hybrid.memory.cache_bytes` (exact for `HybridCache`, checked by a test);
for a transformers model without a hybrid config the KV cache is 2·L·Hkv·D per layer. The activation estimate
counts what one decoder layer keeps alive for a chunk of C tokens (residual stream and norms, q/k/v/o and the
output gate, the SwiGLU gate/up/product) plus the last position's logits in fp32, times a safety factor: chunked
prefill is what keeps this term independent of the prompt length.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch

GiB = 1024**3
# Fused attention kernels, the allocator's rounding and the CUDA context are not in the estimate: keep a margin.
ACTIVATION_SAFETY = 1.5
CUDA_RESERVE_BYTES = GiB // 2


class InferenceMemoryError(MemoryError, ValueError):
    """A request that cannot fit in the device memory (planned before allocation, or a real out-of-memory).

    A ValueError too, so that the CLI reports it as a user error with its message."""

    def __init__(self, request: str, need_bytes: int, free_bytes: int, detail: str = ""):
        self.request, self.need_bytes, self.free_bytes = request, need_bytes, free_bytes
        from ..models.hybrid.memory import format_bytes

        msg = (
            f"{request} needs {format_bytes(need_bytes)} but only {format_bytes(free_bytes)} is free on the device"
            + (f" ({detail})" if detail else "")
            + "; use a shorter prompt, fewer new tokens, a smaller --chunk-size or a bigger device"
        )
        super().__init__(msg)


@dataclass
class MemoryPlan:
    weights_bytes: int
    cache_bytes: int
    activation_bytes: int
    free_bytes: int
    reserve_bytes: int = 0

    @property
    def need_bytes(self) -> int:
        return self.weights_bytes + self.cache_bytes + self.activation_bytes + self.reserve_bytes

    @property
    def fits(self) -> bool:
        return self.need_bytes <= self.free_bytes

    def describe(self) -> str:
        from ..models.hybrid.memory import format_bytes as f

        return (
            f"weights {f(self.weights_bytes)} + cache {f(self.cache_bytes)} + activations {f(self.activation_bytes)}"
            f" + reserve {f(self.reserve_bytes)}"
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "need_bytes": self.need_bytes}


def free_device_bytes(device: torch.device) -> int:
    """Bytes a new allocation can still get: CUDA free memory plus what PyTorch's allocator holds unused; on CPU the
    available physical memory."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not every platform has these
        return 1 << 62


def kv_cache_bytes(config, seq_len: int, dtype: torch.dtype, batch: int = 1) -> int:
    """Cache bytes of ``batch`` sequences of ``seq_len`` tokens: exact for a hybrid config, full KV otherwise."""
    from ..models.hybrid.configuration_hybrid import HybridConfig
    from ..models.hybrid.memory import cache_bytes

    if isinstance(config, HybridConfig):
        return batch * cache_bytes(config, seq_len, dtype)["total"]
    layers = config.num_hidden_layers
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return batch * 2 * layers * seq_len * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def activation_bytes(config, chunk_size: int, dtype: torch.dtype, batch: int = 1) -> int:
    """Peak activation estimate of one prefill chunk of ``chunk_size`` tokens (see the module docstring)."""
    b = torch.empty((), dtype=dtype).element_size()
    h, inter = config.hidden_size, config.intermediate_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    attn = max(heads * head_dim, getattr(config, "lightning_num_heads", 0) * getattr(config, "lightning_head_dim", 0))
    per_token = 6 * h + 3 * inter + 6 * attn
    logits = config.vocab_size * 4
    return int(ACTIVATION_SAFETY * (batch * chunk_size * per_token * b + batch * logits))


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers()
    )


def plan_memory(
    config,
    *,
    batch: int,
    total_len: int,
    chunk_size: int,
    dtype: torch.dtype,
    weights_bytes: int = 0,
    free_bytes: int,
    device: torch.device | str = "cpu",
) -> MemoryPlan:
    """The plan of one request; ``weights_bytes`` = 0 when the weights are already resident (they are then not
    part of ``free_bytes`` either)."""
    return MemoryPlan(
        weights_bytes=int(weights_bytes),
        cache_bytes=kv_cache_bytes(config, total_len, dtype, batch),
        activation_bytes=activation_bytes(config, min(chunk_size, total_len), dtype, batch),
        free_bytes=int(free_bytes),
        # CUDA context, cuBLAS / cuDNN workspaces and allocator fragmentation are outside the estimate.
        reserve_bytes=CUDA_RESERVE_BYTES if torch.device(device).type == "cuda" else 0,
    )


__all__ = [
    "InferenceMemoryError",
    "MemoryPlan",
    "activation_bytes",
    "free_device_bytes",
    "kv_cache_bytes",
    "plan_memory",
    "weight_bytes",
]
