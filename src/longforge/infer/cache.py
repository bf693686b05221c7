"""Pre-allocated KV storage for inference: the `HybridCache` layers of full and sparse attention, with their keys
and values written into one buffer sized for the whole request instead of grown with ``torch.cat``.

Why: ``KVLayerCache.update`` concatenates, so every prefill chunk and every decoded token copies the layer's whole
KV (72 GiB per token for an 8B full-attention model at 512K) and briefly holds two copies of one layer. Here the
buffer [B, max_len, Hkv, D] is allocated once — the exact bytes the planner counted — and ``update`` writes a
slice and returns a view of the filled part. Sliding (≤ W-1 rows) and lightning (a fixed state) layers are small
and keep their own classes.
"""

from __future__ import annotations

import torch

from ..models.hybrid.cache import HybridCache, KVLayerCache, SparseLayerCache


class StaticKVLayerCache(KVLayerCache):
    """Keys / values [B, max_len, Hkv, D] in one pre-allocated buffer; ``keys`` / ``values`` are views of the
    filled rows, as ``KVLayerCache`` exposes them."""

    kind = "full_attention"

    def __init__(self, batch: int, max_len: int, num_kv_heads: int, head_dim: int, dtype, device):
        # Zeroed, not empty: the static decode path (`infer.static_decode`) reads the whole fixed-size buffer with the
        # unwritten tail masked, and a masked NaN from uninitialised memory would still poison ``p @ v``.
        self._k = torch.zeros(batch, max_len, num_kv_heads, head_dim, dtype=dtype, device=device)
        self._v = torch.zeros_like(self._k)
        self.length = 0

    @property
    def keys(self):
        return None if self.length == 0 else self._k[:, : self.length]

    @property
    def values(self):
        return None if self.length == 0 else self._v[:, : self.length]

    @property
    def max_len(self) -> int:
        return self._k.shape[1]

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = k.shape[1]
        if self.length + n > self.max_len:
            raise ValueError(
                f"the pre-allocated KV cache holds {self.max_len} positions; {self.length} are used and {n} more "
                "were given (plan the request with a larger max_new_tokens)"
            )
        if k.shape[0] != self._k.shape[0] or k.shape[2:] != self._k.shape[2:]:
            raise ValueError(f"keys {tuple(k.shape)} do not fit the cache buffer {tuple(self._k.shape)}")
        self._k[:, self.length : self.length + n] = k
        self._v[:, self.length : self.length + n] = v
        self.length += n
        return self.keys, self.values

    def nbytes(self) -> int:
        return 2 * self._k.numel() * self._k.element_size()

    def select(self, idx: torch.Tensor) -> None:
        self._k, self._v = self._k[idx], self._v[idx]


class StaticSparseLayerCache(StaticKVLayerCache):
    """`StaticKVLayerCache` plus the per-sequence compressed keys of InfLLM-V2 (as `SparseLayerCache`)."""

    kind = "sparse_attention"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.compressed_keys: list[torch.Tensor] | None = None

    def nbytes(self) -> int:
        return super().nbytes() + sum(t.numel() * t.element_size() for t in self.compressed_keys or [] if t is not None)

    def select(self, idx):
        super().select(idx)
        if self.compressed_keys is not None:
            self.compressed_keys = [self.compressed_keys[i] for i in idx.tolist()]


def preallocated_cache(config, batch: int, max_len: int, dtype: torch.dtype, device) -> HybridCache:
    """A fresh `HybridCache` for ``config`` whose full and sparse layers hold ``max_len`` positions in place."""
    cache = HybridCache(config)
    for i, layer in enumerate(cache.layers):
        # SparseLayerCache first: it subclasses KVLayerCache.
        if isinstance(layer, SparseLayerCache):
            cls = StaticSparseLayerCache
        elif type(layer) is KVLayerCache:
            cls = StaticKVLayerCache
        else:
            continue
        cache.layers[i] = cls(batch, max_len, config.num_key_value_heads, config.head_dim, dtype, device)
    return cache


__all__ = ["StaticKVLayerCache", "StaticSparseLayerCache", "preallocated_cache"]
