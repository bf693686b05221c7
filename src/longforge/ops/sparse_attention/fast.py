"""InfLLM-V2 sparse attention fast path: GPU block selection to per-token block lists + a Triton block-sparse kernel.

``fast_sparse_attention`` has ``naive_sparse_attention``'s signature and result:

1. Dense switch, per query (as the reference): queries with ``t + 1 < dense_len`` form a prefix of the query
   range; they run dense causal attention through ``ops.attention``'s seam (SDPA on CUDA) over keys ``0..t``.
2. The remaining (sparse) queries get their blocks from ``select_block_indices``: the same compressed-key scores as
   ``select_blocks`` (per-head softmax over visible compressed keys, summed over the GQA group, max-pooled onto
   blocks), computed C queries at a time so memory stays bounded (never ``[Tq, Tk]``) -- in PyTorch (exactly the
   reference's ops) for small problems, by the Triton kernels of ``triton_select.py`` for large ones
   (``LONGFORGE_SPARSE_SCORES=auto|torch|triton``; ``triton-lowp`` opts into 16-bit dots, see
   ``triton_select.py``) -- then init + local blocks
   plus the ``topk`` best remaining ones. Top-k uses an exact int64 key (score bits, then the reversed block id),
   so ties go to the lower block exactly like the reference's stable sort -- or, after a Triton scorer
   (``LONGFORGE_SPARSE_TOPK=auto|torch|triton``), ``triton_topk.select_topk``: the same rule in one kernel per row.
   Output: ``idx [B, Hkv, Tq, S]`` int32 (valid ids first, ascending) and ``cnt [B, Hkv, Tq]``.
3. ``sparse_attend`` (``LONGFORGE_SPARSE_KERNEL=auto|tile|split|token``): ``triton_kernel.triton_sparse_attention``
   attends each token over its own blocks (forward and backward); ``triton_tile`` runs the forward by tiles of
   consecutive tokens over the union of their blocks (``auto`` when that union is small, see
   ``TILE_MAX_UNION_RATIO``), or (``split``) over their shared blocks only, the rest per token.

Explicit fallbacks to ``naive_sparse_attention`` (same result), with a one-time warning naming the reason:
tensors not on CUDA (unless ``LONGFORGE_SPARSE_TRITON_INTERPRET=1`` and ``TRITON_INTERPRET=1``, used by the CPU
test), triton missing, q/k/v of different dtypes, or a head dim above 256.
One sparse query without grad (decode) takes ``sparse_decode``: the same fp32 selection from the cached
``compressed_k``, the selected blocks gathered per kv head, one SDPA call (no Triton launches, no sort).
"""

from __future__ import annotations

import math
import os
import warnings

import torch
from torch import Tensor

from ..attention.naive import masked_softmax, resolve_scale
from .naive import (
    _block_scores,
    _check_selection_args,
    _check_sparse_inputs,
    compress_keys,
    dense_prefix,
    naive_sparse_attention,
)

# One chunk's [B, H, C, Nc] fp32 logits (plus a few temporaries of that size) stay under this many elements.
_SELECT_ELEMENTS = 2**27
_MAX_SELECT_CHUNK = 4096
_MAX_HEAD_DIM = 256
_warned: set[str] = set()
_blockscore_failed: list[str] = []  # the bf16 block scorer raised once here: "auto" stops choosing it
_kernel_failed: list[str] = []  # the fused top-k or the tile kernel raised once here: "auto" stops choosing them
# Under "auto" each new kernel checks itself once per process against the path it replaces, on its first real
# input (the fused top-k: exactly the same selection; the tile kernel: the per-token kernel's output up to bf16
# summation order); a mismatch is recorded in _kernel_failed and "auto" stops choosing it.
_kernel_checked: set[str] = set()


def _same_selection(fused: tuple[Tensor, Tensor], reference: Tensor) -> bool:
    """The fused top-k's (idx ascending, -1 padded; cnt) against the PyTorch path's unsorted ids (-1 = none)."""
    big = torch.iinfo(torch.int32).max
    ref = torch.where(reference >= 0, reference, big).to(torch.int32).sort(dim=-1).values
    got = torch.where(fused[0] >= 0, fused[0], big).to(torch.int32)
    width = max(ref.shape[-1], got.shape[-1])
    ref = torch.nn.functional.pad(ref, (0, width - ref.shape[-1]), value=big)
    got = torch.nn.functional.pad(got, (0, width - got.shape[-1]), value=big)
    return bool(torch.equal(ref, got)) and bool(torch.equal((ref != big).sum(-1).to(fused[1].dtype), fused[1]))


def _env_choice(name: str) -> str:
    return os.environ.get(name, "auto").strip().lower() or "auto"


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def selection_chunk_size(batch: int, num_heads: int, width: int) -> int:
    """Queries per selection chunk so that ``[batch, num_heads, chunk, width]`` fp32 stays bounded."""
    return max(1, min(_MAX_SELECT_CHUNK, _SELECT_ELEMENTS // max(1, batch * num_heads * width)))


def _select_chunk_indices(q, kc, pos, num_blocks, block_size, kernel_size, kernel_stride, topk, init_blocks,
                          window_size, scale, use_triton=False, check_candidates=True, fused_topk=False):
    """One chunk: q ``[B, C, H, D]``, kc ``[B, Nc, Hkv, D]`` fp32, pos ``[C]`` -> idx ``[B, Hkv, C, S]`` (-1 = none).

    ``fused_topk``: step 5 in ``triton_topk.select_topk`` instead; returns ``(idx, cnt)`` with idx already
    ascending (valid ids first) and ``S = min(NB, init + n_local + topk)``."""
    B, C, H, D = q.shape
    Hkv = kc.shape[2]
    dev = q.device
    n_local = math.ceil(window_size / block_size)
    n_init, n_loc, k_eff = min(init_blocks, num_blocks), min(n_local, num_blocks), min(topk, num_blocks)
    if fused_topk:  # no [C, NB] masks here: the kernel derives forced / candidate blocks per row itself
        from .triton_topk import select_topk

        # a candidate (init <= m <= b - n_local) exists iff the last (largest) position's block reaches that far
        has_candidate = int(pos[-1]) // block_size - n_local >= init_blocks
        edge = None
        if k_eff == 0 or (check_candidates and not has_candidate):
            scores = torch.zeros(B, Hkv, C, num_blocks, device=dev)
        else:
            scores, edge = _chunk_scores(q, kc, pos, num_blocks, block_size, kernel_size, kernel_stride, scale,
                                         use_triton, raw=True)
        width = max(1, min(num_blocks, n_init + n_loc + k_eff))
        return select_topk(scores, int(pos[0]), block_size=block_size, n_local=n_local, init_blocks=init_blocks,
                           topk=k_eff, width=width, edge=edge)
    blk = torch.arange(num_blocks, device=dev)
    b_t = (pos // block_size)[:, None]  # [C, 1]
    past = blk <= b_t  # [C, NB]
    forced = past & ((blk < init_blocks) | (blk > b_t - n_local))
    candidate = past & ~forced  # [C, NB]
    parts = []
    # Forced blocks as explicit ids: init 0..init-1 (if past), then local ones not already init.
    if n_init:
        init = torch.arange(n_init, device=dev)[None, :].expand(C, n_init)
        parts.append(torch.where(init <= b_t, init, -1))
    if n_loc:
        local = b_t - n_loc + 1 + torch.arange(n_loc, device=dev)[None, :]  # [C, n_loc]
        parts.append(torch.where((local >= 0) & (local >= init_blocks), local, -1))
    forced_ids = torch.cat(parts, dim=-1) if parts else torch.empty(C, 0, dtype=torch.long, device=dev)
    forced_ids = forced_ids[None, None].expand(B, Hkv, C, forced_ids.shape[-1])
    # (With no candidate at all the top-k below yields only -1 ids, so skipping this device sync is always exact.)
    if k_eff == 0 or (check_candidates and not bool(candidate.any())):
        return forced_ids
    scores, _ = _chunk_scores(q, kc, pos, num_blocks, block_size, kernel_size, kernel_stride, scale, use_triton)
    # Exact top-k with the reference's tie rule: for non-negative floats the int32 bit pattern is monotonic, so
    # (bits << 32) | (NB - 1 - block) orders by score, then by lower block.
    key = (scores.view(torch.int32).long() << 32) | (num_blocks - 1 - blk)
    key = key.masked_fill(~candidate[None, None], -1)
    top = key.topk(k_eff, dim=-1, sorted=False).values
    top_ids = torch.where(top >= 0, num_blocks - 1 - (top & 0xFFFFFFFF), -1)
    return torch.cat([forced_ids, top_ids], dim=-1)


def _chunk_scores(q, kc, pos, num_blocks, block_size, kernel_size, kernel_stride, scale, use_triton, raw=False):
    """Block scores ``[B, Hkv, C, NB]`` (>= +0.0) of one chunk by the chosen scorer, and ``None``; with ``raw`` and
    the bf16 block scorer, its two outputs ``(gmax, edge)`` uncombined (``triton_topk`` combines them)."""
    B, C, H, D = q.shape
    Nc, Hkv = kc.shape[1], kc.shape[2]
    G = H // Hkv
    dev = q.device
    # Compressed-key scores, exactly the reference's formula (select_blocks / _select_chunk).
    if use_triton == "blockscore":  # bf16 tensor-core scorer, block scores straight from the kernel
        try:
            from .triton_blockscore import block_scores_lowp

            out = block_scores_lowp(q, kc, int(pos[0]), num_blocks, block_size=block_size,
                                    kernel_size=kernel_size, kernel_stride=kernel_stride, scale=scale, raw=raw)
            return out if raw else (out + 0.0, None)
        except Exception as err:  # noqa: BLE001 - a compile/launch failure: the 16-bit group-probability scorer
            _blockscore_failed.append(f"{type(err).__name__}: {err}")
            _warn_once(f"sparse_attention: the bf16 block scorer failed ({_blockscore_failed[0][:300]}); "
                       "using the Triton group-probability scorer")
            use_triton = "lowp"
    if use_triton != "blockscore":
        if use_triton:
            from .triton_select import group_probabilities

            shared = group_probabilities(q, kc, int(pos[0]), kernel_size=kernel_size, kernel_stride=kernel_stride,
                                         scale=scale, low_precision=use_triton == "lowp")  # [B, Hkv, C, Nc]
        else:
            window_end = torch.arange(Nc, device=dev) * kernel_stride + kernel_size - 1
            visible = window_end <= pos[:, None]  # [C, Nc]
            qg = q.float().reshape(B, C, Hkv, G, D).permute(0, 2, 3, 1, 4)  # [B, Hkv, G, C, D]
            logits = (qg @ kc.float().permute(0, 2, 3, 1).unsqueeze(2)) * scale  # [B, Hkv, G, C, Nc]
            shared = masked_softmax(logits, visible[None, None, None]).sum(dim=2)  # [B, Hkv, C, Nc]
            del logits
        scores = _block_scores(shared, num_blocks, block_size, kernel_stride) + 0.0  # [B, Hkv, C, NB], >= +0.0
        del shared
    return scores.contiguous(), None


# Above this many score elements (B * H * Tq * Nc) the "auto" scorer is the Triton one (torch's fp32 logits
# and softmax are memory-bound there); below it the torch scores are cheap and bit-for-bit the reference's.
TRITON_SCORES_MIN_ELEMENTS = 2**26
SCORES_ENV = "LONGFORGE_SPARSE_SCORES"
SCORES_CHOICES = ("auto", "torch", "triton", "triton-lowp", "triton-bf16")


def _use_triton_scores(q: Tensor, elements: int, block_size: int = 64, kernel_stride: int = 16) -> bool | str:
    """Which scorer computes the block scores: ``LONGFORGE_SPARSE_SCORES=auto|torch|triton|triton-lowp|triton-bf16``.

    Returns False (torch, exact fp32), True (Triton, fp32-accurate), ``"lowp"`` (Triton, dots in q's 16-bit dtype)
    or ``"blockscore"`` (``triton_blockscore``: flash-style bf16 two-pass that writes only block scores). ``auto``:
    ``blockscore`` for large problems with 16-bit q on CUDA (as InfLLM-V2's own kernel: scores only rank blocks),
    torch for small ones, Triton fp32-accurate for large fp32 ones.
    """
    choice = os.environ.get(SCORES_ENV, "auto").strip().lower() or "auto"
    if choice not in SCORES_CHOICES:
        raise ValueError(f"{SCORES_ENV}={choice!r}; allowed values: {', '.join(SCORES_CHOICES)}")
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    runnable = q.device.type == "cuda" or interpret
    if choice == "torch":
        return False
    if not runnable:
        if choice != "auto":
            raise ValueError(f"{SCORES_ENV}={choice} needs CUDA tensors (or TRITON_INTERPRET=1)")
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        if choice != "auto":
            raise ValueError(f"{SCORES_ENV}={choice} but triton is not installed") from None
        return False
    if choice == "triton-lowp":
        return "lowp"
    from .triton_blockscore import supported

    ok = supported(block_size, kernel_stride, q.shape[-1])
    if choice == "triton-bf16":
        if not ok:
            raise ValueError(f"{SCORES_ENV}=triton-bf16 needs block_size / kernel_stride a power of two <= 64 and "
                             "a head dim <= 256")
        return "blockscore"
    large = elements >= TRITON_SCORES_MIN_ELEMENTS
    if choice == "auto" and large and ok and q.dtype in (torch.bfloat16, torch.float16) and not _blockscore_failed:
        return "blockscore"
    return choice == "triton" or large


TOPK_ENV = "LONGFORGE_SPARSE_TOPK"
TOPK_CHOICES = ("auto", "torch", "triton")


def _use_triton_topk(q: Tensor, num_blocks: int, use_triton) -> bool:
    """Step 5 (forced blocks + top-k -> ascending id lists) in ``triton_topk`` or in PyTorch:
    ``LONGFORGE_SPARSE_TOPK=auto|torch|triton``. ``auto``: the Triton kernel whenever the scores come from a Triton
    scorer (long inputs on CUDA); both are exact, ties included."""
    choice = os.environ.get(TOPK_ENV, "auto").strip().lower() or "auto"
    if choice not in TOPK_CHOICES:
        raise ValueError(f"{TOPK_ENV}={choice!r}; allowed values: {', '.join(TOPK_CHOICES)}")
    runnable = q.device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    failed = any(m.startswith("top-k") for m in _kernel_failed)
    if choice == "torch" or (choice == "auto" and (failed or not (use_triton and runnable))):
        return False
    if not runnable:
        raise ValueError(f"{TOPK_ENV}=triton needs CUDA tensors (or TRITON_INTERPRET=1)")
    try:
        from .triton_topk import MAX_BLOCKS
    except ImportError:
        if choice == "auto":
            return False
        raise ValueError(f"{TOPK_ENV}=triton but triton is not installed") from None
    if num_blocks > MAX_BLOCKS:
        if choice == "auto":
            return False
        raise ValueError(f"{TOPK_ENV}=triton supports at most {MAX_BLOCKS} blocks per row, got {num_blocks}")
    return True


def select_block_indices(
    q: Tensor,
    kc: Tensor,
    *,
    num_keys: int,
    block_size: int = 64,
    kernel_size: int = 32,
    kernel_stride: int = 16,
    topk: int = 64,
    init_blocks: int = 1,
    window_size: int = 2048,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-token selected blocks of the queries ``q`` (the last Tq of ``num_keys`` positions), no dense switch.

    Same selection as ``select_blocks`` (init U local U top-k, ties to the lower block), as index lists.

    Args:
        q: ``[B, Tq, H, D]``.
        kc: ``[B, Nc, Hkv, D]`` compressed keys of the ``num_keys`` keys.
        num_keys: Tk.

    Returns:
        ``idx [B, Hkv, Tq, S]`` int32 (valid ids first, ascending; then -1) and ``cnt [B, Hkv, Tq]`` int32.
    """
    _check_selection_args(block_size, kernel_size, kernel_stride, topk, init_blocks, window_size)
    B, Tq, H, D = q.shape
    Hkv = kc.shape[2]
    scale = resolve_scale(scale, D)
    num_blocks = math.ceil(num_keys / block_size)
    use_triton = _use_triton_scores(q, Tq * kc.shape[1] * B * H, block_size, kernel_stride)
    # Torch scores hold [B, H, C, Nc] logits per chunk; the Triton scorer only the group sums [B, Hkv, C, Nc];
    # the bf16 block scorer only [B, Hkv, C, NB] (plus top-k's int64 keys of that size).
    if use_triton == "blockscore":
        step = selection_chunk_size(B, 2 * Hkv, max(num_blocks, 1))
        kcf = kc.detach().to(q.dtype if q.dtype in (torch.bfloat16, torch.float16) else torch.float32).contiguous()
    else:
        step = selection_chunk_size(B, Hkv if use_triton else H, max(kc.shape[1], num_blocks, 1))
        kcf = kc.detach().float()
    fused = _use_triton_topk(q, num_blocks, use_triton)
    outs = []
    with torch.no_grad():
        for start in range(0, Tq, step):
            qc = q[:, start : start + step].detach()
            pos = torch.arange(start, start + qc.shape[1], device=q.device) + (num_keys - Tq)
            args = (qc, kcf, pos, num_blocks, block_size, kernel_size, kernel_stride, topk, init_blocks,
                    window_size, scale, use_triton)
            try:
                part = _select_chunk_indices(*args, fused_topk=fused)
                if fused and _env_choice(TOPK_ENV) == "auto" and "top-k" not in _kernel_checked:
                    _kernel_checked.add("top-k")
                    if not _same_selection(part, _select_chunk_indices(*args, fused_topk=False)):
                        _kernel_failed.append("top-k self-check: the fused selection differs from torch.topk's")
                        _warn_once(f"sparse_attention: {_kernel_failed[-1]}; using the PyTorch top-k")
                        fused = False
                        part = _select_chunk_indices(*args, fused_topk=False)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as err:  # noqa: BLE001 - the fused top-k failed to compile / run: "auto" falls back
                if not fused or outs or _env_choice(TOPK_ENV) == "triton":
                    raise
                _kernel_failed.append(f"top-k {type(err).__name__}: {err}")
                _warn_once(f"sparse_attention: the fused Triton top-k failed ({_kernel_failed[-1][:300]}); "
                           "using the PyTorch top-k")
                fused = False
                part = _select_chunk_indices(*args, fused_topk=False)
            outs.append(part)
        if outs and fused:  # ids already ascending, -1 padded, one width for every chunk
            return torch.cat([o[0] for o in outs], dim=2).contiguous(), torch.cat([o[1] for o in outs], dim=2)
        if not outs:
            return (torch.zeros(B, Hkv, 0, 1, dtype=torch.int32, device=q.device),
                    torch.zeros(B, Hkv, 0, dtype=torch.int32, device=q.device))
        width = max(o.shape[-1] for o in outs)
        idx = torch.cat([torch.nn.functional.pad(o, (0, width - o.shape[-1]), value=-1) for o in outs], dim=2)
        if idx.shape[-1] == 0:
            idx = idx.new_full((B, Hkv, Tq, 1), -1)
        # Valid ids first, ascending (ascending ids read memory in order); -1 -> sorted to the end.
        big = torch.iinfo(torch.int32).max
        idx = torch.where(idx >= 0, idx, big).to(torch.int32).sort(dim=-1).values
        cnt = (idx != big).sum(-1, dtype=torch.int32)
        idx = torch.where(idx == big, -1, idx).contiguous()
    return idx, cnt.contiguous()


def sparse_decode(q: Tensor, k: Tensor, v: Tensor, kc: Tensor, *, block_size: int, kernel_size: int,
                  kernel_stride: int, topk: int, init_blocks: int, window_size: int, scale: float) -> Tensor:
    """One query (the last of ``Tk`` positions) through InfLLM-V2, without the Triton machinery: the reference's
    fp32 selection from the cached compressed keys (every complete window is visible to the last position), the
    selected blocks' keys / values gathered per kv head, and one SDPA call with the group's G heads as queries.

    q ``[B, 1, H, D]``, k / v ``[B, Tk, Hkv, D|Dv]``, kc ``[B, Nc, Hkv, D]`` -> ``[B, 1, H, Dv]``. No autograd.
    """
    B, _, H, D = q.shape
    Tk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[-1]
    G = H // Hkv
    num_blocks = math.ceil(Tk / block_size)
    pos = torch.full((1,), Tk - 1, device=q.device, dtype=torch.long)
    with torch.no_grad():
        ids = _select_chunk_indices(q.detach(), kc.detach().float(), pos, num_blocks, block_size, kernel_size,
                                    kernel_stride, topk, init_blocks, window_size, scale,
                                    check_candidates=False)[:, :, 0]  # [B, Hkv, S]
        ids = ids.long()
        tok = ids.clamp(min=0)[..., None] * block_size + torch.arange(block_size, device=q.device)  # [B, Hkv, S, Bs]
        valid = ((ids >= 0)[..., None] & (tok < Tk)).flatten(2)  # [B, Hkv, N]
        tok = tok.clamp(max=Tk - 1).flatten(2)
        kg = torch.gather(k.transpose(1, 2), 2, tok[..., None].expand(B, Hkv, tok.shape[-1], D))
        vg = torch.gather(v.transpose(1, 2), 2, tok[..., None].expand(B, Hkv, tok.shape[-1], Dv))
        qg = q.reshape(B, Hkv, G, D)
        o = torch.nn.functional.scaled_dot_product_attention(qg, kg, vg, attn_mask=valid[:, :, None, :], scale=scale)
    return o.reshape(B, 1, H, Dv)


def _fallback_reason(q: Tensor, k: Tensor, v: Tensor) -> str | None:
    interpret = os.environ.get("LONGFORGE_SPARSE_TRITON_INTERPRET") == "1" and os.environ.get("TRITON_INTERPRET") == "1"
    if q.device.type != "cuda" and not interpret:
        return f"tensors are on {q.device.type}, the Triton kernel needs CUDA"
    if not (q.dtype == k.dtype == v.dtype):
        return f"q, k, v have different dtypes ({q.dtype}, {k.dtype}, {v.dtype})"
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"dtype {q.dtype} is not supported by the Triton kernel"
    if q.shape[-1] > _MAX_HEAD_DIM or v.shape[-1] > _MAX_HEAD_DIM:
        return f"head dims above {_MAX_HEAD_DIM}"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    return None


KERNEL_ENV = "LONGFORGE_SPARSE_KERNEL"
KERNEL_CHOICES = ("auto", "tile", "split", "token")
# "auto" takes the tile kernel when its union of blocks is small against the tokens' own lists: it visits
# sum |U| blocks with BLOCK_T * G rows where the per-token kernel visits sum cnt blocks with G rows. Measured on
# the H200 with 4-token tiles (SALA shape, bf16): at a ratio of 0.66 the tile kernel is still a little faster
# (103 vs 108 ms at 128K), at 0.69 even (243 vs 239 ms at 256K), at 0.32 2.2x faster (48.6 vs 105.8 ms).
TILE_MAX_UNION_RATIO = 0.6
_TILE_SAMPLE = 256  # tiles sampled to estimate the union ratio before building every tile's union


def _kernel_choice() -> str:
    choice = os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"{KERNEL_ENV}={choice!r}; allowed values: {', '.join(KERNEL_CHOICES)}")
    return choice


def union_ratio(idx: Tensor, cnt: Tensor, block_t: int, sample: int | None = None) -> float:
    """``sum |U| / sum cnt`` over the ``block_t``-token tiles (``sample``: that many evenly spaced full tiles)."""
    from .triton_tile import tile_unions

    Tq = idx.shape[2]
    n_full = Tq // block_t
    if sample is not None and n_full > sample:
        tiles = torch.linspace(0, n_full - 1, sample, device=idx.device).long()
        tok = (tiles[:, None] * block_t + torch.arange(block_t, device=idx.device)).flatten()
        idx, cnt = idx[:, :, tok], cnt[:, :, tok]
    ucnt = tile_unions(idx, cnt, block_t)[2]
    union, total = torch.stack([ucnt.sum(dtype=torch.int64), cnt.sum(dtype=torch.int64)]).tolist()
    return union / max(1, total)


def sparse_attend(qs: Tensor, k: Tensor, v: Tensor, idx: Tensor, cnt: Tensor, scale: float, block_size: int,
                  kernel: str | None = None) -> Tensor:
    """Step 6: each sparse query over its selected blocks, by the per-token or the multi-token tile kernel
    (``LONGFORGE_SPARSE_KERNEL=auto|tile|split|token``, or ``kernel``). All give the reference's result; backward
    is the per-token kernel's in every case. ``auto`` picks the tile kernel when ``union_ratio`` (on a sample of
    tiles) is at most ``TILE_MAX_UNION_RATIO``, else the per-token one; ``split`` (opt-in until measured) runs each
    tile's widely shared blocks through the tile kernel and every token's other blocks through the per-token one,
    merged by log-sum-exp (``triton_tile.split_unions``)."""
    choice = kernel or _kernel_choice()
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"kernel={choice!r}; allowed values: {', '.join(KERNEL_CHOICES)}")
    if choice != "token":
        from .triton_tile import default_block_t, triton_sparse_attention_split, triton_sparse_attention_tile

        block_t = default_block_t(qs.shape[2] // k.shape[2], qs.dtype, max(qs.shape[-1], v.shape[-1]))
        if choice == "split":
            return triton_sparse_attention_split(qs, k, v, idx, cnt, scale, block_size, block_t)
        if choice == "tile":
            return triton_sparse_attention_tile(qs, k, v, idx, cnt, scale, block_size, block_t)
        tile_failed = any(m.startswith("tile") for m in _kernel_failed)
        if not tile_failed and union_ratio(idx, cnt, block_t, sample=_TILE_SAMPLE) <= TILE_MAX_UNION_RATIO:
            try:
                o = triton_sparse_attention_tile(qs, k, v, idx, cnt, scale, block_size, block_t)
                if "tile" in _kernel_checked:
                    return o
                _kernel_checked.add("tile")
                from .triton_kernel import triton_sparse_attention

                with torch.no_grad():
                    ref = triton_sparse_attention(qs, k, v, idx, cnt, scale, block_size).float()
                    err = (o.detach().float() - ref).abs().max().item()
                    rel = 2e-2 if qs.dtype in (torch.bfloat16, torch.float16) else 1e-4
                    tol = rel * max(1.0, ref.abs().max().item())
                if err <= tol:
                    return o
                _kernel_failed.append(f"tile self-check: max |tile - per-token| = {err:.3g} > {tol:.3g}")
                _warn_once(f"sparse_attention: {_kernel_failed[-1]}; using the per-token kernel")
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as err:  # noqa: BLE001 - compile / launch failure: "auto" takes the per-token kernel
                _kernel_failed.append(f"tile {type(err).__name__}: {err}")
                _warn_once(f"sparse_attention: the tile kernel failed ({_kernel_failed[-1][:300]}); "
                           "using the per-token kernel")
    from .triton_kernel import triton_sparse_attention

    return triton_sparse_attention(qs, k, v, idx, cnt, scale, block_size)


def fast_sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    compressed_k: Tensor | None = None,
    block_size: int = 64,
    kernel_size: int = 32,
    kernel_stride: int = 16,
    topk: int = 64,
    init_blocks: int = 1,
    window_size: int = 2048,
    dense_len: int = 8192,
    scale: float | None = None,
) -> Tensor:
    """``naive_sparse_attention`` on the GPU (same signature and result; see the module docstring)."""
    kwargs = dict(compressed_k=compressed_k, block_size=block_size, kernel_size=kernel_size,
                  kernel_stride=kernel_stride, topk=topk, init_blocks=init_blocks, window_size=window_size,
                  dense_len=dense_len, scale=scale)
    _check_selection_args(block_size, kernel_size, kernel_stride, topk, init_blocks, window_size)
    _check_sparse_inputs(q, k, v, compressed_k, dense_len, kernel_size, kernel_stride)
    reason = _fallback_reason(q, k, v)
    if reason is not None:
        _warn_once(f"sparse_attention fast path: {reason}; running the reference naive_sparse_attention")
        return naive_sparse_attention(q, k, v, **kwargs)
    B, Tq, H, D = q.shape
    Tk = k.shape[1]
    scale = resolve_scale(scale, D)
    offset = Tk - Tq
    # Step 1: queries i < n_dense (t + 1 < dense_len) are dense.
    n_dense = dense_prefix(Tq, Tk, dense_len)
    outs = []
    if n_dense:
        from ..attention import attention  # the seam: SDPA on CUDA

        end = offset + n_dense
        outs.append(attention(q[:, :n_dense], k[:, :end], v[:, :end], scale=scale, causal=True))
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if n_dense < Tq and Tq - n_dense == 1 and not needs_grad:  # decode: one sparse query, no Triton kernels
        kc = compress_keys(k.detach(), kernel_size, kernel_stride) if compressed_k is None else compressed_k
        outs.append(sparse_decode(q[:, n_dense:], k, v, kc, block_size=block_size, kernel_size=kernel_size,
                                  kernel_stride=kernel_stride, topk=topk, init_blocks=init_blocks,
                                  window_size=window_size, scale=scale))
    elif n_dense < Tq:
        qs = q[:, n_dense:]
        kc = compress_keys(k.detach(), kernel_size, kernel_stride) if compressed_k is None else compressed_k
        idx, cnt = select_block_indices(qs, kc, num_keys=Tk, block_size=block_size, kernel_size=kernel_size,
                                        kernel_stride=kernel_stride, topk=topk, init_blocks=init_blocks,
                                        window_size=window_size, scale=scale)
        outs.append(sparse_attend(qs, k, v, idx, cnt, scale, block_size))
    if not outs:
        return q.new_zeros(B, 0, H, v.shape[-1])
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


__all__ = ["fast_sparse_attention", "select_block_indices", "selection_chunk_size", "sparse_attend", "sparse_decode",
           "union_ratio"]
