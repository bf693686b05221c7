"""Static-shape decode of a `HybridForCausalLM`: one token per step over buffers that never move, so that the whole
step can be captured in a ``torch.cuda.CUDAGraph`` and replayed per token.

After the (dynamic, chunked) prefill, `StaticDecoder` takes over the request's `HybridCache`:

    full_attention       the pre-allocated KV buffer [B, L, Hkv, D] (``infer.cache``), written in place at ``pos``
                         (``index_copy_`` with the position in a device tensor); attention over keys 0..pos of the
                         fixed-size buffer (``static_attention.decode_attention``: Triton split-KV on CUDA)
    sliding_attention    a ring buffer [B, W, Hkv, D]: position p lives in slot p mod W; the slots that hold
                         positions pos-W+1..pos are visible
    sparse_attention     the KV buffer as for full attention, plus the compressed keys in a static buffer
                         [B, Nc(L), Hkv, D] fp32: each step re-pools the newest complete window (the one ending at or
                         before pos) in place. InfLLM-V2 selection over every block of the buffer (blocks after the
                         query's masked), then attention over a fixed number of block slots — init + local + top-k —
                         gathered from the buffer (a slot that selects nothing is masked). Queries with
                         t + 1 < dense_len attend densely to the first min(L, dense_len) rows.
    lightning_attention  the fp32 state [B, H, K, V] updated in place: S = exp(g) S + kᵀv, o = scale · q S

Whether the sparse layers are in their dense or sparse regime is the one decision that depends on the position; it
is made on the host (the engine knows the position) and selects one of at most two captured graphs.

The step is the same code eagerly (CPU, or a failed capture) and inside the graph. Padding is not supported (the
engine's prompts have none). Shapes: input_ids [B, 1]; logits [B, V] fp32.
"""

from __future__ import annotations

import math
import time
import warnings

import torch
from torch import Tensor

from ..ops.attention.naive import masked_softmax
from ..ops.sparse_attention import num_compressed
from .static_attention import decode_attention, masked_group_attention


# ---------------------------------------------------------------------------------------------------- per-layer state
class _FullState:
    def __init__(self, k: Tensor, v: Tensor):
        self.k, self.v = k, v  # [B, L, Hkv, D]


class _SparseState(_FullState):
    def __init__(self, k: Tensor, v: Tensor, kc: Tensor):
        super().__init__(k, v)
        self.kc = kc  # [B, Nc(L), Hkv, D] fp32


class _SlidingState:
    def __init__(self, k: Tensor, v: Tensor):
        self.k, self.v = k, v  # ring [B, W, Hkv, D]


class _LightningState:
    def __init__(self, state: Tensor):
        self.state = state  # [B, H, K, V] fp32


def _kv_buffers(layer, batch: int, max_len: int, config, dtype, device) -> tuple[Tensor, Tensor, int]:
    """The layer's pre-allocated buffers (a `StaticKVLayerCache`) or, for a grown `KVLayerCache`, new zeroed buffers
    holding its keys; returns (k, v, filled length)."""
    from .cache import StaticKVLayerCache

    if isinstance(layer, StaticKVLayerCache):
        if layer.max_len < max_len:
            raise ValueError(f"the pre-allocated KV cache holds {layer.max_len} positions; static decode needs "
                             f"{max_len}")
        return layer._k, layer._v, layer.length
    n = 0 if layer.keys is None else layer.keys.shape[1]
    k = torch.zeros(batch, max_len, config.num_key_value_heads, config.head_dim, dtype=dtype, device=device)
    v = torch.zeros_like(k)
    if n:
        k[:, :n], v[:, :n] = layer.keys, layer.values
    return k, v, n


class StaticDecodeState:
    """Every layer's decode state in buffers of fixed shape and address, built from a prefilled `HybridCache`.

    Args:
        model: the `HybridForCausalLM`.
        cache: its `HybridCache` after prefill (``seen_tokens`` positions consumed, no padding).
        max_len: positions the request holds in all (prompt + new tokens).
    """

    def __init__(self, model, cache, max_len: int):
        from ..models.hybrid.cache import LightningLayerCache, SlidingLayerCache, SparseLayerCache

        config = model.config
        param = next(model.parameters())
        dtype, device = param.dtype, param.device
        self.config = config
        self.max_len = max_len
        self.length = cache.get_seq_length()  # next position to write (host copy)
        if self.length >= max_len:
            raise ValueError(f"the cache already holds {self.length} positions; max_len is {max_len}")
        batch = cache.batch_size
        if batch < 1:
            raise ValueError("static decode needs a prefilled cache (run at least one prompt token first)")
        self.batch = batch
        self.pos = torch.full((), self.length, dtype=torch.long, device=device)
        self.layers: list = []
        self._kv_caches = []  # pre-allocated KV layers whose host-side length follows the decode
        for layer in cache.layers:
            if hasattr(layer, "_k"):
                self._kv_caches.append(layer)
            if isinstance(layer, SparseLayerCache) or layer.kind == "sparse_attention":
                k, v, n = _kv_buffers(layer, batch, max_len, config, dtype, device)
                kc = torch.zeros(batch, max(1, num_compressed(max_len, config.sparse_kernel_size,
                                                              config.sparse_kernel_stride)),
                                 config.num_key_value_heads, config.head_dim, dtype=torch.float32, device=device)
                for b, row in enumerate(layer.compressed_keys or []):
                    if row is not None and row.shape[1]:
                        kc[b, : row.shape[1]] = row[0]
                layer.compressed_keys = None  # held by the static buffer from now on
                self.layers.append(_SparseState(k, v, kc))
            elif isinstance(layer, SlidingLayerCache):
                W = config.sliding_window
                rk = torch.zeros(batch, W, config.num_key_value_heads, config.head_dim, dtype=dtype, device=device)
                rv = torch.zeros_like(rk)
                if layer.keys is not None and layer.keys.shape[1]:
                    n = layer.keys.shape[1]  # the last n positions: length - n .. length - 1
                    slots = torch.arange(self.length - n, self.length, device=device) % W
                    rk[:, slots], rv[:, slots] = layer.keys, layer.values
                self.layers.append(_SlidingState(rk, rv))
            elif isinstance(layer, LightningLayerCache):
                if layer.state is None:
                    raise ValueError("a lightning layer of the cache has no state: prefill first")
                state = layer.state.float().contiguous().clone()
                layer.state = state  # the cache now shows the live buffer
                self.layers.append(_LightningState(state))
            else:  # full attention
                k, v, n = _kv_buffers(layer, batch, max_len, config, dtype, device)
                self.layers.append(_FullState(k, v))

    def mode(self) -> tuple:
        """The host-side regime of the next step: (sparse layers dense?)."""
        dense_len = self.config.sparse_dense_len
        return (dense_len > 0 and self.length + 1 < dense_len,)

    def advance(self) -> None:
        """After a step: the next token goes one position further (device and host copies)."""
        self.length += 1
        self.pos.add_(1)
        for layer in self._kv_caches:
            layer.length = self.length


# ------------------------------------------------------------------------------------------------------- the mixers
def _full_step(attn, x, rope, position_ids, st: _FullState, pos: Tensor) -> Tensor:
    q, k, v = attn.project_qkv(x, rope, position_ids)
    st.k.index_copy_(1, pos.view(1), k)
    st.v.index_copy_(1, pos.view(1), v)
    return attn.project_out(x, decode_attention(q, st.k, st.v, pos))


def _sliding_step(attn, x, rope, position_ids, st: _SlidingState, pos: Tensor) -> Tensor:
    q, k, v = attn.project_qkv(x, rope, position_ids)
    W = st.k.shape[1]
    st.k.index_copy_(1, (pos % W).view(1), k)
    st.v.index_copy_(1, (pos % W).view(1), v)
    # Slot i holds position pos - ((pos - i) mod W): visible unless that is before the first token.
    visible = ((pos - torch.arange(W, device=x.device)) % W) <= pos
    o = masked_group_attention(q, st.k.transpose(1, 2), st.v.transpose(1, 2), visible, attn.head_dim**-0.5)
    return attn.project_out(x, o.to(q.dtype))


def select_block_slots(q: Tensor, kc: Tensor, pos: Tensor, *, num_blocks: int, block_size: int, kernel_size: int,
                       kernel_stride: int, topk: int, init_blocks: int, window_size: int, scale: float):
    """InfLLM-V2 selection for one query token (``ops/sparse_attention/README.md`` steps 2–5) with static shapes.

    Args:
        q: ``[B, 1, H, D]``; kc: ``[B, Nc, Hkv, D]`` fp32 compressed keys (entries not yet complete are ignored);
        pos: 0-d int64 tensor, the query's position; num_blocks: blocks of the buffer (>= pos // block_size + 1).

    Returns:
        ``(blocks [B, Hkv, S] int64, valid [B, Hkv, S] bool)``: S = init + local + top-k slots (each capped at
        ``num_blocks``); the valid slots are exactly the selected blocks, each once.
    """
    B, _, H, D = q.shape
    Nc, Hkv = kc.shape[1], kc.shape[2]
    dev = q.device
    # Step 2–3: per-head softmax over the visible compressed keys, summed over the GQA group.
    visible = torch.arange(Nc, device=dev) * kernel_stride + kernel_size - 1 <= pos  # [Nc]
    qg = q.float().reshape(B, Hkv, H // Hkv, D)
    logits = (qg @ kc.permute(0, 2, 3, 1)) * scale  # [B, Hkv, G, Nc]
    shared = masked_softmax(logits, visible).sum(dim=2)  # [B, Hkv, Nc]
    # Step 4: max-pool onto blocks (kernel r + 1, stride r, one zero on the left; missing windows count 0).
    r = block_size // kernel_stride
    width = num_blocks * r
    shared = shared[..., :width]
    padded = torch.nn.functional.pad(shared, (1, width - shared.shape[-1]))
    scores = padded.unfold(-1, r + 1, r).amax(dim=-1)  # [B, Hkv, NB]
    # Step 5: forced init + local blocks; the top-k of the remaining past blocks (ties: lower block first).
    blk = torch.arange(num_blocks, device=dev)
    b_t = pos // block_size
    n_local = math.ceil(window_size / block_size)
    past = blk <= b_t
    forced = past & ((blk < init_blocks) | (blk > b_t - n_local))
    candidate = past & ~forced
    # Top-k with the reference's order (score descending, ties to the lower block) made total: one int64 key per
    # block, the score's fp32 bits (monotonic for scores >= 0) above the reversed block index, -1 for non-candidates.
    # topk of distinct keys is exact whatever its tie rule, and needs no sort (CUB's stable segmented sort is not
    # always capturable in a CUDA graph).
    bits = scores.float().contiguous().view(torch.int32).to(torch.int64)
    key = (bits << 32) | (num_blocks - 1 - blk)
    key = key.masked_fill(~candidate, -1)
    n_top = min(topk, num_blocks)
    top = torch.topk(key, n_top, dim=-1)
    order, top_valid = top.indices, top.values >= 0  # [B, Hkv, n_top]
    n_init, n_loc = min(init_blocks, num_blocks), min(n_local, num_blocks)
    init = torch.arange(n_init, device=dev)
    local = b_t - n_loc + 1 + torch.arange(n_loc, device=dev)
    blocks = torch.cat([init.expand(B, Hkv, n_init), local.expand(B, Hkv, n_loc), order], dim=-1)
    valid = torch.cat([
        (init <= b_t).expand(B, Hkv, n_init),
        ((local >= 0) & (local >= init_blocks)).expand(B, Hkv, n_loc),  # a local block that is an init one: once
        top_valid,
    ], dim=-1)
    return blocks.clamp(0, num_blocks - 1), valid


def _sparse_step(attn, x, rope, position_ids, st: _SparseState, pos: Tensor, dense: bool) -> Tensor:
    cfg = attn.config
    q, k, v = attn.project_qkv(x, rope, position_ids)
    st.k.index_copy_(1, pos.view(1), k)
    st.v.index_copy_(1, pos.view(1), v)
    L = st.k.shape[1]
    l_, s_ = cfg.sparse_kernel_size, cfg.sparse_kernel_stride
    # InfLLM-V2 §3.3: the newest complete window (ending at or before pos) is pooled in place; before the first
    # window completes, slot 0 gets a partial mean that no query can see and that is rewritten on completion.
    j = torch.div(pos - (l_ - 1), s_, rounding_mode="floor").clamp(0, st.kc.shape[1] - 1)
    rows = (j * s_ + torch.arange(l_, device=x.device)).clamp(max=L - 1)
    st.kc.index_copy_(1, j.view(1), st.k.index_select(1, rows).float().mean(dim=1, keepdim=True))
    scale = attn.head_dim**-0.5
    if dense:  # the query's t + 1 < dense_len: dense causal attention over the rows it can reach
        o = decode_attention(q, st.k, st.v, pos, limit=min(L, cfg.sparse_dense_len))
        return attn.project_out(x, o)
    Bs = cfg.sparse_block_size
    blocks, valid = select_block_slots(
        q, st.kc, pos, num_blocks=math.ceil(L / Bs), block_size=Bs, kernel_size=l_, kernel_stride=s_,
        topk=cfg.sparse_topk, init_blocks=cfg.sparse_init_blocks, window_size=cfg.sparse_window_size, scale=scale,
    )
    B, Hkv = blocks.shape[:2]
    tok = (blocks[..., None] * Bs + torch.arange(Bs, device=x.device)).flatten(-2)  # [B, Hkv, S * Bs]
    tok_ok = valid.repeat_interleave(Bs, dim=-1) & (tok <= pos)
    tok = tok.clamp(max=L - 1)
    bi = torch.arange(B, device=x.device)[:, None, None]
    hi = torch.arange(Hkv, device=x.device)[None, :, None]
    ks, vs = st.k[bi, tok, hi], st.v[bi, tok, hi]  # [B, Hkv, S * Bs, D], gathered selected blocks
    o = masked_group_attention(q, ks, vs, tok_ok, scale)
    return attn.project_out(x, o.to(q.dtype))


def _lightning_step(mixer, x, rope, st: _LightningState) -> Tensor:
    K = mixer.head_dim
    q, k, v = mixer.project_qkv(x, rope)
    # The recurrence of ops.linear_attention.lightning_recurrent, with the state updated in place.
    decay = torch.exp(mixer.g_gamma(x.device).float())[None, :, None, None]
    qf, kf, vf = q.float() * K**-0.5, k.float(), v.float()
    S = st.state
    S.mul_(decay).add_(kf[:, 0, :, :, None] * vf[:, 0, :, None, :])
    o = (qf[:, 0, :, None, :] @ S).squeeze(-2)  # [B, H, V]
    return mixer.project_out(x, o.to(q.dtype))


# ---------------------------------------------------------------------------------------------------------- the step
def static_decode_step(model, input_ids: Tensor, state: StaticDecodeState, mode: tuple) -> Tensor:
    """One token [B, 1] at position ``state.pos`` through the model over the static state; logits [B, V] fp32.

    Writes every layer's state in place and does not advance the position (``state.advance`` does)."""
    inner = model.model
    cfg = model.config
    (sparse_dense,) = mode
    pos = state.pos
    x = inner.embed_tokens(input_ids)  # [B, 1, hidden]
    B = x.shape[0]
    position_ids = pos.view(1, 1).expand(B, 1)
    rope = {int(d): emb(position_ids, x.dtype) for d, emb in inner.rotary.items()}
    for layer, st in zip(inner.layers, state.layers):
        h = layer.input_layernorm(x)
        if layer.layer_type == "lightning_attention":
            mixed = _lightning_step(layer.mixer, h, rope[cfg.lightning_head_dim], st)
        else:
            r = rope[cfg.head_dim]
            if layer.layer_type == "sparse_attention":
                mixed = _sparse_step(layer.mixer, h, r, position_ids, st, pos, sparse_dense)
            elif layer.layer_type == "sliding_attention":
                mixed = _sliding_step(layer.mixer, h, r, position_ids, st, pos)
            else:
                mixed = _full_step(layer.mixer, h, r, position_ids, st, pos)
        x = x + mixed
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    x = inner.norm(x)
    return model.lm_head(x)[:, -1].float()


class StaticDecoder:
    """Decode token by token over a `StaticDecodeState`, replaying one captured CUDA graph per regime.

    ``step(token)`` takes the token [B] just produced and returns the logits [B, V] of the next position (a view of
    the graph's static output on CUDA: use it before the next call). On CUDA with ``cuda_graph=True`` the first
    ``warmup`` steps of a regime run eagerly on a side stream (they are real steps; kernels get compiled and checked
    there), the next one is captured and every later one replays the graph. If capture fails, one warning is given
    and the decoder stays eager.
    """

    def __init__(self, model, state: StaticDecodeState, cuda_graph: bool = True, warmup: int = 1):
        self.model, self.state = model, state
        device = state.pos.device
        self.use_graph = bool(cuda_graph) and device.type == "cuda"
        self.warmup = max(1, warmup)
        self.ids = torch.zeros(state.batch, 1, dtype=torch.long, device=device)  # static input token
        self.graphs: dict[tuple, tuple] = {}  # mode -> (graph, static logits)
        self.eager_steps: dict[tuple, int] = {}
        self.graph_failed: str | None = None
        self.replays = 0
        self.capture_s = 0.0  # wall time of the captures and of the eager warm-up steps before them (synchronised)
        self.warmup_s = 0.0
        self._pool = None
        self._stream = torch.cuda.Stream(device) if self.use_graph else None

    def _eager(self, mode):
        return static_decode_step(self.model, self.ids, self.state, mode)

    def step(self, token: Tensor) -> Tensor:
        if self.state.length >= self.state.max_len:
            raise ValueError(f"static decode holds {self.state.max_len} positions; all {self.state.max_len} are used")
        self.ids.copy_(token.view(-1, 1))
        mode = self.state.mode()
        if not self.use_graph:
            logits = self._eager(mode)
        elif mode in self.graphs:
            graph, logits = self.graphs[mode]
            graph.replay()
            self.replays += 1
        elif self.eager_steps.get(mode, 0) < self.warmup:
            # Warm-up on a side stream (as torch.cuda.graphs recommends): real steps, whose results are used.
            t0 = time.perf_counter()
            self._stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._stream):
                logits = self._eager(mode)
            torch.cuda.current_stream().wait_stream(self._stream)
            torch.cuda.synchronize()
            self.warmup_s += time.perf_counter() - t0
            self.eager_steps[mode] = self.eager_steps.get(mode, 0) + 1
        else:
            logits = self._capture(mode)
        self.state.advance()
        return logits

    def _capture(self, mode) -> Tensor:
        """Capture this step's graph (capture runs nothing), then replay it for this very token."""
        graph = torch.cuda.CUDAGraph()
        t0 = time.perf_counter()
        try:
            torch.cuda.synchronize()
            with torch.cuda.graph(graph, pool=self._pool):
                logits = self._eager(mode)
            torch.cuda.synchronize()
            self.capture_s += time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 — any capture failure: warn once, stay eager (state is untouched)
            self.graph_failed = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            warnings.warn(f"CUDA-graph capture of the decode step failed ({self.graph_failed}); decoding eagerly",
                          stacklevel=3)
            self.use_graph = False
            torch.cuda.synchronize()
            return self._eager(mode)
        self._pool = graph.pool()
        self.graphs[mode] = (graph, logits)
        graph.replay()
        self.replays += 1
        return logits


__all__ = ["StaticDecodeState", "StaticDecoder", "select_block_slots", "static_decode_step"]
