"""`HybridCache`: one cache object for a hybrid stack, holding a different state per layer type.

Per layer (shapes use our [B, T, H, D] layout):

- full_attention       keys / values of every past position                     [B, T, Hkv, D]
- sliding_attention    keys / values of the last ``sliding_window - 1`` positions [B, ≤W-1, Hkv, D]
                       (all a future query can still see: it sees itself and W-1 predecessors)
- sparse_attention     keys / values of every past position, plus per sequence the mean-pooled compressed keys
                       (InfLLM-V2 §3.3) of every complete window, so block scoring never re-pools the past
- lightning_attention  the recurrent state S [B, H, Dk, Dv] in fp32 (constant size: the reason hybrids exist)

Positions count padding too (``get_seq_length`` is the number of positions consumed, as in transformers), so a
left-padded batch keeps one shared time axis; each layer masks padding itself from the attention mask.

It subclasses ``transformers.Cache`` so that ``generate`` accepts it, and overrides every query ``generate``
makes, because our per-layer states are not transformers' KV layers.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class KVLayerCache:
    """Full KV (full attention); also the base for the sliding and sparse caches."""

    kind = "full_attention"

    def __init__(self):
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new keys/values [B, T, Hkv, D]; return everything a query of this step may attend to."""
        if self.keys is None:
            self.keys, self.values = k, v
        else:
            self.keys = torch.cat([self.keys, k], dim=1)
            self.values = torch.cat([self.values, v], dim=1)
        return self.keys, self.values

    def nbytes(self) -> int:
        return _nbytes(self.keys, self.values)

    def select(self, idx: torch.Tensor) -> None:
        if self.keys is not None:
            self.keys, self.values = self.keys[idx], self.values[idx]


class SlidingLayerCache(KVLayerCache):
    kind = "sliding_attention"

    def __init__(self, window: int):
        super().__init__()
        self.window = window

    def update(self, k, v):
        keys, values = super().update(k, v)
        # Keep only what a later query can see (window - 1 predecessors); return the untrimmed view for this step.
        keep = self.window - 1
        if keep == 0:
            self.keys, self.values = keys[:, :0], values[:, :0]
        elif keys.shape[1] > keep:
            self.keys, self.values = keys[:, -keep:], values[:, -keep:]
        return keys, values


class SparseLayerCache(KVLayerCache):
    """Full KV plus, per sequence of the batch, the compressed keys [Nc_b, Hkv, D] of its real (unpadded) tokens."""

    kind = "sparse_attention"

    def __init__(self):
        super().__init__()
        self.compressed_keys: list[torch.Tensor] | None = None

    def nbytes(self) -> int:
        return super().nbytes() + _nbytes(*(self.compressed_keys or []))

    def select(self, idx):
        super().select(idx)
        if self.compressed_keys is not None:
            self.compressed_keys = [self.compressed_keys[i] for i in idx.tolist()]


class LightningLayerCache:
    kind = "lightning_attention"

    def __init__(self):
        self.state: torch.Tensor | None = None  # [B, H, Dk, Dv] fp32

    def nbytes(self) -> int:
        return _nbytes(self.state)

    def select(self, idx):
        if self.state is not None:
            self.state = self.state[idx]


class HybridCache(Cache):
    """Cache for `HybridForCausalLM`; pass it as ``past_key_values`` / ``cache`` or let the model create it."""

    def __init__(self, config):
        layers = []
        for layer_type in config.layer_types:
            if layer_type == "full_attention":
                layers.append(KVLayerCache())
            elif layer_type == "sliding_attention":
                layers.append(SlidingLayerCache(config.sliding_window))
            elif layer_type == "sparse_attention":
                layers.append(SparseLayerCache())
            elif layer_type == "lightning_attention":
                layers.append(LightningLayerCache())
            else:  # HybridConfig validated this already
                raise AssertionError(layer_type)
        # Bypass Cache.__init__'s layer machinery (its layers are KV tensors; ours are heterogeneous states).
        self.layers = layers
        self.layer_class_to_replicate = None
        self.offloading = False
        self.seen_tokens = 0

    # ---------------------------------------------------------------- what the model uses
    def __getitem__(self, layer_idx: int):
        return self.layers[layer_idx]

    def __len__(self) -> int:
        return len(self.layers)

    def advance(self, num_tokens: int) -> None:
        """Called by the model once every layer has consumed ``num_tokens`` new positions."""
        self.seen_tokens += num_tokens

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def nbytes(self) -> int:
        """Bytes held by every layer's state right now."""
        return sum(layer.nbytes() for layer in self.layers)

    def nbytes_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for layer in self.layers:
            out[layer.kind] = out.get(layer.kind, 0) + layer.nbytes()
        return out

    # ---------------------------------------------------------------- what `generate` asks
    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.seen_tokens + query_length, 0

    def has_previous_state(self, layer_idx: int | None = None, state_idx: int | None = None) -> bool:
        return self.seen_tokens > 0

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return self.seen_tokens > 0

    @property
    def is_croppable(self) -> bool:
        # A recurrent state cannot be rolled back by dropping tokens.
        return False

    @property
    def is_sliding(self) -> list[bool]:
        return [layer.kind == "sliding_attention" for layer in self.layers]

    @property
    def is_linear(self) -> list[bool]:
        # Reported False everywhere so that `generate` slices inputs by `get_seq_length`, which is exact here.
        return [False] * len(self.layers)

    @property
    def is_dummy(self) -> list[bool]:
        return [False] * len(self.layers)

    @property
    def batch_size(self) -> int:
        for layer in self.layers:
            t = getattr(layer, "keys", None)
            t = t if t is not None else getattr(layer, "state", None)
            if t is not None:
                return t.shape[0]
        return -1

    def reset(self) -> None:
        for i, layer in enumerate(self.layers):
            self.layers[i] = (
                layer.__class__(layer.window) if isinstance(layer, SlidingLayerCache) else layer.__class__()
            )
        self.seen_tokens = 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        for layer in self.layers:
            layer.select(indices)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        bs = self.batch_size
        if bs > 0:
            self.batch_select_indices(torch.arange(bs).repeat_interleave(repeats))

    def crop(self, max_length: int) -> None:
        raise NotImplementedError(
            "HybridCache cannot be cropped: Lightning layers keep a recurrent state that cannot drop tokens "
            "(assisted / speculative decoding that rolls back tokens is not supported)"
        )

    def activate_past_recording(self) -> None:  # generate's deferred stop check; nothing to record
        return None

    def update(self, *args, **kwargs):
        raise NotImplementedError("HybridCache is updated by the longforge layers themselves, not through Cache.update")

    def __repr__(self) -> str:
        kinds = ", ".join(layer.kind for layer in self.layers)
        return f"HybridCache(seen_tokens={self.seen_tokens}, layers=[{kinds}])"


__all__ = ["HybridCache", "KVLayerCache", "SlidingLayerCache", "SparseLayerCache", "LightningLayerCache"]
