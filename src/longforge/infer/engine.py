"""`InferenceEngine`: long-prompt generation on one device — chunked prefill, planned memory, greedy / sampled decode.

    plan     weights + cache(prompt + new tokens) + one chunk's activations vs. free device memory → or a clear
             `InferenceMemoryError` before anything is allocated
    prefill  the prompt in chunks of ``chunk_size`` tokens through the model's cache; logits of the last position
             only (``logits_to_keep=1``), so activation memory is set by the chunk, not by the prompt
    decode   one token at a time over the cache: argmax, or temperature / top-k / top-p sampling with a seed;
             stops when every sequence has produced EOS

A `HybridForCausalLM` gets a `HybridCache` whose full / sparse KV is pre-allocated for the whole request
(`longforge.infer.cache`); any other transformers causal LM gets transformers' ``DynamicCache``. On CUDA a hybrid
decodes over static buffers (`longforge.infer.static_decode`) with the step captured once in a CUDA graph and
replayed per token (``cuda_graph=True``, the default; sampling stays outside the graph). Shapes: input_ids
[B, T] (every row a full prompt of the same length, no padding); generated tokens [B, N].
"""

from __future__ import annotations

import gc
import inspect
import secrets
import time
from dataclasses import dataclass, field

import torch

from .cache import preallocated_cache
from .memory import GiB, InferenceMemoryError, MemoryPlan, free_device_bytes, plan_memory

DEFAULT_CHUNK_SIZE = 32768


@dataclass
class GenerationResult:
    """What `InferenceEngine.generate` returns: the new tokens [B, N] (EOS included; rows that stopped earlier are
    filled with EOS) and the timings. ``ttft_s`` is prefill plus the first token; ``decode_tokens_per_s`` counts the
    tokens after the first, per sequence."""

    tokens: torch.Tensor
    prompt_tokens: int
    ttft_s: float
    decode_s: float
    decode_steps: int
    peak_mem_bytes: int | None
    plan: MemoryPlan
    stopped_on_eos: bool = False
    chunk_times_s: list[float] = field(default_factory=list)

    @property
    def decode_tokens_per_s(self) -> float | None:
        return self.decode_steps / self.decode_s if self.decode_steps and self.decode_s > 0 else None

    def summary(self) -> str:
        tps = self.decode_tokens_per_s
        peak = "n/a (cpu)" if self.peak_mem_bytes is None else f"{self.peak_mem_bytes / GiB:.2f} GiB"
        return (
            f"prompt tokens {self.prompt_tokens} | prefill (TTFT) {self.ttft_s:.3f} s | "
            f"decode {'n/a' if tps is None else f'{tps:.1f}'} tokens/s ({self.tokens.shape[1]} new) | "
            f"peak memory {peak}"
        )


def sample_next(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token [B] from logits [B, V]: argmax when ``temperature == 0``, else a draw from
    softmax(logits / temperature) restricted to the ``top_k`` most likely tokens (0 = all) and to the smallest set
    whose probability reaches ``top_p`` (the most likely token is always kept)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _validate_sampling(temperature: float, top_k: int, top_p: float) -> None:
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = no limit), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


class InferenceEngine:
    """Chunked-prefill generation over a causal LM (a `HybridForCausalLM` or a transformers model).

    Args:
        model: the causal LM, already on its device (eval mode is set here).
        chunk_size: prompt tokens per prefill step (16K–64K on a GPU; small values on CPU for tests).
        memory_budget_bytes: bytes the request may use besides the resident weights; ``None`` = what the device has
            free now (``torch.cuda.mem_get_info`` plus the allocator's unused reserve; available RAM on CPU).
        static_cache: pre-allocate the hybrid's KV for the whole request (no ``torch.cat`` growth).
        cuda_graph: on CUDA, decode a hybrid with the static-shape step captured in a CUDA graph (ignored on CPU;
            a failed capture warns once and decodes eagerly).
        static_decode: decode a hybrid with the static-shape step (`infer.static_decode`); ``None`` = exactly when
            CUDA graphs are used. ``True`` on CPU runs the same step eagerly (tests compare it with the dynamic one).
    """

    def __init__(
        self,
        model,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        memory_budget_bytes: int | None = None,
        static_cache: bool = True,
        cuda_graph: bool = True,
        static_decode: bool | None = None,
    ):
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if memory_budget_bytes is not None and memory_budget_bytes < 0:
            raise ValueError(f"memory_budget_bytes must be >= 0, got {memory_budget_bytes}")
        from ..models.hybrid.modeling_hybrid import HybridForCausalLM

        if static_decode and not isinstance(model, HybridForCausalLM):
            raise ValueError("static_decode needs a HybridForCausalLM (other models decode with transformers' cache)")
        self.model = model.eval()
        self.config = model.config
        self.chunk_size = chunk_size
        self.memory_budget_bytes = memory_budget_bytes
        self.is_hybrid = isinstance(model, HybridForCausalLM)
        self.static_cache = static_cache
        # transformers 5.x renames `past_key_values` to `cache` (the old name warns): pass the one forward takes.
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.cuda_graph = bool(cuda_graph) and self.device.type == "cuda" and self.is_hybrid
        self.static_decode = self.cuda_graph if static_decode is None else bool(static_decode)
        self.cuda_graph = self.cuda_graph and self.static_decode
        # How the last request decoded: {"static", "cuda_graph", "graph_replays", "graph_failed", "capture_s"}.
        self.last_decode_info: dict | None = None

    # ------------------------------------------------------------------ planning
    def describe_request(self, batch: int, prompt_len: int, max_new_tokens: int) -> str:
        name = getattr(self.config, "_name_or_path", "") or type(self.model).__name__
        return f"generating {max_new_tokens} tokens after a {prompt_len}-token prompt (batch {batch}) with {name}"

    def plan(self, batch: int, prompt_len: int, max_new_tokens: int) -> MemoryPlan:
        """The memory plan of a request (weights already resident, so not counted)."""
        free = self.memory_budget_bytes if self.memory_budget_bytes is not None else free_device_bytes(self.device)
        return plan_memory(
            self.config,
            batch=batch,
            total_len=prompt_len + max_new_tokens,
            chunk_size=self.chunk_size,
            dtype=self.dtype,
            free_bytes=free,
            device=self.device,
        )

    def check_fits(self, batch: int, prompt_len: int, max_new_tokens: int) -> MemoryPlan:
        plan = self.plan(batch, prompt_len, max_new_tokens)
        if not plan.fits:
            raise InferenceMemoryError(
                self.describe_request(batch, prompt_len, max_new_tokens),
                plan.need_bytes,
                plan.free_bytes,
                plan.describe(),
            )
        return plan

    # ------------------------------------------------------------------ the two phases
    def new_cache(self, batch: int, max_len: int):
        if self.is_hybrid:
            if self.static_cache:
                return preallocated_cache(self.config, batch, max_len, self.dtype, self.device)
            from ..models.hybrid.cache import HybridCache

            return HybridCache(self.config)
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.config)
        except TypeError:  # older transformers: no config argument
            return DynamicCache()

    def _step(self, input_ids: torch.Tensor, cache) -> torch.Tensor:
        """Run ``input_ids`` [B, t] through the model on ``cache``; logits [B, V] (fp32) of the last position."""
        out = self.model(input_ids=input_ids, **{self._cache_kwarg: cache}, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float()

    # ------------------------------------------------------------------ the API
    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        eos_token_id: int | list[int] | None = "default",
        progress=None,
    ) -> GenerationResult:
        """Generate up to ``max_new_tokens`` after ``input_ids`` ([T] or [B, T] token ids, no padding).

        ``eos_token_id``: "default" = the model's generation config (or config); None = never stop early.
        ``progress``: optional callable ``(phase, done, total)`` called after each prefill chunk / decoded token."""
        if not isinstance(input_ids, torch.Tensor):
            input_ids = torch.as_tensor(input_ids, dtype=torch.long)
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        if input_ids.dim() != 2 or input_ids.shape[1] == 0 or input_ids.dtype not in (torch.long, torch.int):
            raise ValueError(
                f"input_ids must be integer token ids [T] or [B, T] with T >= 1, got "
                f"{tuple(input_ids.shape)} {input_ids.dtype}"
            )
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        _validate_sampling(temperature, top_k, top_p)
        eos = self._eos_ids(eos_token_id)
        B, T = input_ids.shape
        input_ids = input_ids.to(self.device, torch.long)
        plan = self.check_fits(B, T, max_new_tokens)

        generator = None
        if temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(seed if seed is not None else secrets.randbits(63))  # no seed: fresh entropy
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        cache = decoder = None
        chunk_times: list[float] = []
        try:
            _sync(self.device)
            t0 = time.perf_counter()
            cache = self.new_cache(B, T + max_new_tokens)
            logits = None
            n_chunks = -(-T // self.chunk_size)
            for i, start in enumerate(range(0, T, self.chunk_size)):
                tc = time.perf_counter()
                logits = self._step(input_ids[:, start : start + self.chunk_size], cache)
                if progress is not None or self.device.type == "cuda":
                    _sync(self.device)
                chunk_times.append(time.perf_counter() - tc)
                if progress is not None:
                    progress("prefill", i + 1, n_chunks)
            token = sample_next(logits, temperature, top_k, top_p, generator)
            _sync(self.device)
            ttft = time.perf_counter() - t0

            tokens = [token]
            finished = self._is_eos(token, eos)
            if self.static_decode and max_new_tokens > 1:
                from .static_decode import StaticDecoder, StaticDecodeState

                decoder = StaticDecoder(self.model, StaticDecodeState(self.model, cache, T + max_new_tokens),
                                        cuda_graph=self.cuda_graph)
            t1 = time.perf_counter()
            steps = 0
            # Without EOS ids nothing can finish: skip the per-token host sync of `finished.all()`.
            while len(tokens) < max_new_tokens and not (eos and bool(finished.all())):
                logits = decoder.step(token) if decoder is not None else self._step(token[:, None], cache)
                token = sample_next(logits, temperature, top_k, top_p, generator)
                if eos:
                    token = torch.where(finished, torch.full_like(token, eos[0]), token)
                    finished = finished | self._is_eos(token, eos)
                tokens.append(token)
                steps += 1
                if progress is not None:
                    progress("decode", len(tokens), max_new_tokens)
            _sync(self.device)
            decode_s = time.perf_counter() - t1
            self.last_decode_info = {
                "static": decoder is not None,
                "cuda_graph": decoder is not None and decoder.use_graph,
                "graph_replays": 0 if decoder is None else decoder.replays,
                "graph_failed": None if decoder is None else decoder.graph_failed,
                "capture_s": 0.0 if decoder is None else round(decoder.capture_s, 4),
                # tokens/s of the replays alone: decode time less the eager warm-up steps and the captures
                "replay_tokens_per_s": None,
            }
            if decoder is not None and decoder.replays:
                t = decode_s - decoder.warmup_s - decoder.capture_s  # the replays (and their sampling) alone
                self.last_decode_info["replay_tokens_per_s"] = round(decoder.replays / t, 2) if t > 0 else None
        except Exception as e:
            if not _is_oom(e):
                raise
            del cache, decoder  # the static state and graphs hold the buffers
            cache = decoder = None
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise InferenceMemoryError(
                self.describe_request(B, T, max_new_tokens),
                plan.need_bytes,
                plan.free_bytes,
                f"the device ran out of memory although the plan ({plan.describe()}) fitted: {str(e).splitlines()[0]}",
            ) from e
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
        out = torch.stack(tokens, dim=1)
        return GenerationResult(
            tokens=out,
            prompt_tokens=T,
            ttft_s=ttft,
            decode_s=decode_s,
            decode_steps=steps,
            peak_mem_bytes=peak,
            plan=plan,
            stopped_on_eos=bool(finished.all()) and len(tokens) < max_new_tokens,
            chunk_times_s=chunk_times,
        )

    def _eos_ids(self, eos_token_id) -> list[int]:
        if isinstance(eos_token_id, str) and eos_token_id == "default":
            gen = getattr(self.model, "generation_config", None)
            eos_token_id = getattr(gen, "eos_token_id", None)
            if eos_token_id is None:
                eos_token_id = getattr(self.config, "eos_token_id", None)
        if eos_token_id is None:
            return []
        ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        if not all(isinstance(i, int) and i >= 0 for i in ids):
            raise ValueError(f"eos_token_id must be a token id or a list of them, got {eos_token_id!r}")
        return ids

    @staticmethod
    def _is_eos(token: torch.Tensor, eos: list[int]) -> torch.Tensor:
        if not eos:
            return torch.zeros_like(token, dtype=torch.bool)
        return torch.isin(token, torch.tensor(eos, device=token.device))


__all__ = ["DEFAULT_CHUNK_SIZE", "GenerationResult", "InferenceEngine", "sample_next"]
