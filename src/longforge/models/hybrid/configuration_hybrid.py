"""`HybridConfig`: the whole hybrid network described as data.

A hybrid is a decoder-only Transformer whose token mixer is chosen per layer:

- ``full_attention``      causal softmax attention over every past token (GQA)
- ``sliding_attention``   causal softmax attention over the last ``sliding_window`` tokens
- ``sparse_attention``    InfLLM-V2 block-sparse attention (arXiv 2509.24663); dense below ``sparse_dense_len``
- ``lightning_attention`` Lightning attention: linear attention with a fixed per-head decay (HypeNet, MiniCPM-SALA)

``layer_types`` is always stored written out in full in ``config.json``; a short pattern such as ``"SLLL"``
(tiled over the depth) or ``full_attention_interval`` is expanded when the config is built.
"""

from __future__ import annotations

import math
import re
from typing import Any

from transformers import PretrainedConfig

LAYER_TYPES = ("full_attention", "sliding_attention", "sparse_attention", "lightning_attention")
# One letter per layer type for short patterns ("SLLL"): F(ull), W(indow), S(parse), L(ightning).
PATTERN_LETTERS = {"F": "full_attention", "W": "sliding_attention", "S": "sparse_attention", "L": "lightning_attention"}
MLP_TYPES = ("dense", "deco_moe", "remoe", "topk_moe")
MOE_PENALTIES = ("entropy", "l1")
POSITION_ENCODINGS = ("rope", "hype")
LIGHTNING_DECAYS = ("alibi",)
ROPE_TYPES = ("default", "linear", "llama3")
# HyPE (HALO §5.1): a defaults to 362 when "hype" is given without a number.
DEFAULT_HYPE_BASE = 362.0


def expand_layer_types(
    layer_types: str | list[str] | None, num_hidden_layers: int, full_attention_interval: int | None = None
) -> list[str]:
    """Expand a layer-type spec into one entry per layer.

    Accepts a full list (validated), a letter pattern tiled over the depth (``"SLLL"`` → sparse, lightning ×3,
    repeated; letters: F=full, W=sliding window, S=sparse, L=lightning), or ``None`` with
    ``full_attention_interval=k`` (every k-th layer full attention — layers k-1, 2k-1, … — the rest Lightning,
    as in Qwen3-Next / HypeNet's 1:3 layouts). ``None`` without an interval means every layer is full attention.
    """
    if num_hidden_layers <= 0:
        raise ValueError(f"num_hidden_layers must be a positive integer, got {num_hidden_layers!r}")
    if layer_types is None:
        if full_attention_interval is None:
            return ["full_attention"] * num_hidden_layers
        if not isinstance(full_attention_interval, int) or full_attention_interval <= 0:
            raise ValueError(f"full_attention_interval must be a positive integer, got {full_attention_interval!r}")
        return [
            "full_attention" if (i + 1) % full_attention_interval == 0 else "lightning_attention"
            for i in range(num_hidden_layers)
        ]
    if full_attention_interval is not None:
        raise ValueError("give either layer_types or full_attention_interval, not both")
    if isinstance(layer_types, str):
        pattern = layer_types.strip().upper()
        if not pattern or any(c not in PATTERN_LETTERS for c in pattern):
            raise ValueError(
                f"layer_types pattern {layer_types!r} may only use the letters "
                + ", ".join(f"{k}={v}" for k, v in PATTERN_LETTERS.items())
            )
        return [PATTERN_LETTERS[pattern[i % len(pattern)]] for i in range(num_hidden_layers)]
    layer_types = list(layer_types)
    if len(layer_types) != num_hidden_layers:
        raise ValueError(
            f"layer_types has {len(layer_types)} entries but num_hidden_layers is {num_hidden_layers}; "
            "give one entry per layer or a short pattern string such as 'SLLL'"
        )
    for i, t in enumerate(layer_types):
        if t not in LAYER_TYPES:
            raise ValueError(f"layer_types[{i}] = {t!r} is not a known layer type; allowed: {', '.join(LAYER_TYPES)}")
    return layer_types


def expand_mlp_types(mlp_types: str | list[str] | None, num_hidden_layers: int) -> list[str]:
    """``None`` → all dense; a kind name (``"deco_moe"``) → the first layer dense and the rest that kind (DECO's
    ``moe_layer_freq = [0]*1 + [1]*(L-1)``); a list → validated, one entry per layer."""
    if mlp_types is None:
        return ["dense"] * num_hidden_layers
    if isinstance(mlp_types, str):
        if mlp_types not in MLP_TYPES:
            raise ValueError(f"mlp_types {mlp_types!r} is not a known MLP type; allowed: {', '.join(MLP_TYPES)}")
        return ["dense"] + [mlp_types] * (num_hidden_layers - 1)
    mlp_types = list(mlp_types)
    if len(mlp_types) != num_hidden_layers:
        raise ValueError(f"mlp_types has {len(mlp_types)} entries but num_hidden_layers is {num_hidden_layers}")
    for i, t in enumerate(mlp_types):
        if t not in MLP_TYPES:
            raise ValueError(f"mlp_types[{i}] = {t!r} is not a known MLP type; allowed: {', '.join(MLP_TYPES)}")
    return mlp_types


def parse_logit_scaling(value: Any) -> tuple[str, float] | None:
    """Parse ``attn_logit_scaling``: ``None`` → None, a float → ("const", c), ``"hype <a>"`` → ("hype", a)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"attn_logit_scaling must be null, a number or 'hype <a>', got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"attn_logit_scaling as a number must be finite and > 0, got {value!r}")
        return ("const", float(value))
    if isinstance(value, str):
        m = re.fullmatch(r"\s*hype(?:\s+([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?))?\s*", value)
        if m:
            a = float(m.group(1)) if m.group(1) else DEFAULT_HYPE_BASE
            if a <= 1:
                raise ValueError(f"attn_logit_scaling 'hype <a>' needs a > 1 (log(a) is the divisor), got {a}")
            return ("hype", a)
    raise ValueError(f"attn_logit_scaling must be null, a number or 'hype <a>' (e.g. 'hype 500'), got {value!r}")


class HybridConfig(PretrainedConfig):
    r"""Configuration of a longforge hybrid causal LM (``model_type = "longforge_hybrid"``).

    Decoder fields follow Qwen3's names. Hybrid fields:

    - ``layer_types``: list (one per layer) of ``full_attention | sliding_attention | sparse_attention |
      lightning_attention``, or a letter pattern (F/W/S/L, tiled), or ``None`` with ``full_attention_interval``.
    - ``position_encoding``: ``"rope"`` (RoPE in every layer) or ``"hype"`` (HyPE: RoPE on lightning and sliding
      layers, NoPE on full and sparse layers).
    - ``attn_logit_scaling``: ``None``, a float, or ``"hype <a>"``: queries of the global softmax layers (full and
      sparse — the NoPE layers under HyPE) are multiplied by log(t + a) / log(a), t the absolute position
      (HALO Eq. 11). Applied at inference, and in training only when ``attn_logit_scaling_in_training``.
    - sliding: ``sliding_window``. sparse (InfLLM-V2 defaults): ``sparse_block_size=64``,
      ``sparse_kernel_size=32``, ``sparse_kernel_stride=16``, ``sparse_topk=64``, ``sparse_init_blocks=1``,
      ``sparse_window_size=2048``, ``sparse_dense_len=8192`` (dense below that many tokens; ``-1`` forces sparse).
    - ``rope_theta`` and ``rope_extension`` (``None``, or ``{"rope_type": "linear" | "llama3", "factor": ...}`` for
      RoPE context extension; named apart from transformers' ``rope_scaling`` / ``rope_parameters`` on purpose,
      whose handling differs between transformers 5.x releases).
    - lightning (HypeNet / MiniCPM-SALA): ``lightning_num_heads``, ``lightning_head_dim`` (default: the attention
      heads and head_dim), ``lightning_decay="alibi"`` (g_h = -2^(-8(h+1)/H), fixed), ``lightning_qk_norm``,
      ``lightning_output_norm``, ``lightning_output_gate``, ``lightning_chunk_size``.
    - ``attn_output_gate``: o ← o ⊙ sigmoid(W_g x) before o_proj in the softmax layers (gated attention).
    - ``mlp_types``: per layer ``dense | deco_moe | remoe | topk_moe``, or one kind name (first layer dense, the rest
      that kind, as DECO lays it out). DECO defaults: ``moe_num_experts=42`` (0.1B shape), ``moe_expert_dim=64``,
      ``moe_shared_dim=128``, ``moe_router_scale_init=0.1``, ``moe_target_activation=0.2``,
      ``moe_lambda_init=1e-8``, ``moe_lambda_multiplier=1.002``; ``moe_penalty`` entropy (DECO) or l1 (ReMoE);
      ``moe_top_k`` for the top-k baseline (default round(target · E)).
    """

    model_type = "longforge_hybrid"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 1024,
        intermediate_size: int = 2816,
        num_hidden_layers: int = 8,
        num_attention_heads: int = 16,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 1_000_000.0,
        rope_extension: dict | None = None,
        max_position_embeddings: int = 32768,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = False,
        attention_bias: bool = False,
        qk_norm: bool = True,
        layer_types: str | list[str] | None = None,
        full_attention_interval: int | None = None,
        position_encoding: str = "rope",
        attn_logit_scaling: float | str | None = None,
        attn_logit_scaling_in_training: bool = False,
        attn_output_gate: bool = False,
        sliding_window: int = 4096,
        sparse_block_size: int = 64,
        sparse_kernel_size: int = 32,
        sparse_kernel_stride: int = 16,
        sparse_topk: int = 64,
        sparse_init_blocks: int = 1,
        sparse_window_size: int = 2048,
        sparse_dense_len: int = 8192,
        lightning_num_heads: int | None = None,
        lightning_head_dim: int | None = None,
        lightning_decay: str = "alibi",
        lightning_qk_norm: bool = True,
        lightning_output_norm: bool = True,
        lightning_output_gate: bool = True,
        lightning_chunk_size: int = 64,
        mlp_types: str | list[str] | None = None,
        moe_num_experts: int = 42,
        moe_expert_dim: int = 64,
        moe_shared_dim: int = 128,
        moe_router_scale_init: float = 0.1,
        moe_target_activation: float = 0.2,
        moe_penalty: str | None = None,
        moe_lambda_init: float = 1e-8,
        moe_lambda_multiplier: float = 1.002,
        moe_top_k: int | None = None,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.head_dim = (
            head_dim if head_dim is not None else (hidden_size // num_attention_heads if num_attention_heads else None)
        )
        self.hidden_act = hidden_act
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.rope_extension = rope_extension
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.attention_bias = attention_bias
        self.qk_norm = qk_norm
        # full_attention_interval is consumed here: config.json stores the expanded list only. The attribute is set
        # after PretrainedConfig.__init__ (below): transformers' own init-time check rejects layer names it
        # does not know, such as sparse_attention and lightning_attention.
        expanded_layer_types = expand_layer_types(layer_types, num_hidden_layers, full_attention_interval)
        self.position_encoding = position_encoding
        self.attn_logit_scaling = attn_logit_scaling
        self.attn_logit_scaling_in_training = attn_logit_scaling_in_training
        self.attn_output_gate = attn_output_gate
        self.sliding_window = sliding_window
        self.sparse_block_size = sparse_block_size
        self.sparse_kernel_size = sparse_kernel_size
        self.sparse_kernel_stride = sparse_kernel_stride
        self.sparse_topk = sparse_topk
        self.sparse_init_blocks = sparse_init_blocks
        self.sparse_window_size = sparse_window_size
        self.sparse_dense_len = sparse_dense_len
        self.lightning_num_heads = num_attention_heads if lightning_num_heads is None else lightning_num_heads
        self.lightning_head_dim = self.head_dim if lightning_head_dim is None else lightning_head_dim
        self.lightning_decay = lightning_decay
        self.lightning_qk_norm = lightning_qk_norm
        self.lightning_output_norm = lightning_output_norm
        self.lightning_output_gate = lightning_output_gate
        self.lightning_chunk_size = lightning_chunk_size
        self.mlp_types = expand_mlp_types(mlp_types, num_hidden_layers)
        self.moe_num_experts = moe_num_experts
        self.moe_expert_dim = moe_expert_dim
        self.moe_shared_dim = moe_shared_dim
        self.moe_router_scale_init = moe_router_scale_init
        self.moe_target_activation = moe_target_activation
        # DECO regularises with router entropy, ReMoE with L1 (moe_and_sp.md §1.3, §1.6).
        self.moe_penalty = moe_penalty or ("l1" if "remoe" in self.mlp_types else "entropy")
        self.moe_lambda_init = moe_lambda_init
        self.moe_lambda_multiplier = moe_lambda_multiplier
        self.moe_top_k = moe_top_k if moe_top_k is not None else max(1, round(moe_target_activation * moe_num_experts))
        self.use_cache = use_cache
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self.layer_types = expanded_layer_types
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "max_position_embeddings",
            "sliding_window",
            "sparse_block_size",
            "sparse_kernel_size",
            "sparse_kernel_stride",
            "sparse_window_size",
            "lightning_num_heads",
            "lightning_head_dim",
            "lightning_chunk_size",
        ):
            positive(name)
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be divisible by num_key_value_heads "
                f"({self.num_key_value_heads}) for grouped-query attention"
            )
        if self.sparse_topk < 0 or self.sparse_init_blocks < 0:
            raise ValueError(
                f"sparse_topk and sparse_init_blocks must be >= 0, got {self.sparse_topk} and {self.sparse_init_blocks}"
            )
        if self.sparse_block_size % self.sparse_kernel_stride != 0:
            raise ValueError(
                f"sparse_block_size ({self.sparse_block_size}) must be a multiple of sparse_kernel_stride "
                f"({self.sparse_kernel_stride}): blocks are max-pooled from whole compression strides"
            )
        if self.sparse_kernel_size < self.sparse_kernel_stride:
            raise ValueError(
                f"sparse_kernel_size ({self.sparse_kernel_size}) must be >= sparse_kernel_stride "
                f"({self.sparse_kernel_stride}) so compressed keys cover every token"
            )
        if isinstance(self.sparse_dense_len, bool) or not isinstance(self.sparse_dense_len, int):
            raise ValueError(f"sparse_dense_len must be an integer (-1 forces sparse), got {self.sparse_dense_len!r}")
        for name in ("moe_num_experts", "moe_expert_dim", "moe_top_k"):
            positive(name)
        if isinstance(self.moe_shared_dim, bool) or not isinstance(self.moe_shared_dim, int) or self.moe_shared_dim < 0:
            raise ValueError(f"moe_shared_dim must be an integer >= 0, got {self.moe_shared_dim!r}")
        if not 0 < self.moe_target_activation < 1:
            raise ValueError(f"moe_target_activation must be in (0, 1), got {self.moe_target_activation!r}")
        if self.moe_top_k > self.moe_num_experts:
            raise ValueError(f"moe_top_k ({self.moe_top_k}) must be <= moe_num_experts ({self.moe_num_experts})")
        if self.moe_penalty not in MOE_PENALTIES:
            raise ValueError(f"moe_penalty must be one of {', '.join(MOE_PENALTIES)}, got {self.moe_penalty!r}")
        if not self.moe_lambda_multiplier > 1 or not self.moe_lambda_init > 0:
            raise ValueError(
                f"moe_lambda_multiplier must be > 1 and moe_lambda_init > 0, got {self.moe_lambda_multiplier!r}, "
                f"{self.moe_lambda_init!r}"
            )
        expand_mlp_types(self.mlp_types, self.num_hidden_layers)
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"position_encoding must be one of {', '.join(POSITION_ENCODINGS)}, got {self.position_encoding!r}"
            )
        if self.lightning_decay not in LIGHTNING_DECAYS:
            raise ValueError(
                f"lightning_decay must be one of {', '.join(LIGHTNING_DECAYS)}, got {self.lightning_decay!r}"
            )
        if self.hidden_act != "silu":
            raise ValueError(f"hidden_act must be 'silu' (SwiGLU MLP), got {self.hidden_act!r}")
        if not (isinstance(self.rms_norm_eps, (int, float)) and self.rms_norm_eps > 0):
            raise ValueError(f"rms_norm_eps must be > 0, got {self.rms_norm_eps!r}")
        if not (isinstance(self.rope_theta, (int, float)) and self.rope_theta > 0):
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta!r}")
        if self.rope_extension is not None:
            if not isinstance(self.rope_extension, dict):
                raise ValueError(f"rope_extension must be a dict or null, got {self.rope_extension!r}")
            rope_type = self.rope_extension.get("rope_type", self.rope_extension.get("type", "default"))
            if rope_type not in ROPE_TYPES:
                raise ValueError(f"rope_extension.rope_type must be one of {', '.join(ROPE_TYPES)}, got {rope_type!r}")
        parse_logit_scaling(self.attn_logit_scaling)

    def validate(self):
        """Run transformers' config checks (it calls this on save) except its layer-type check, which only knows
        transformers' layer names, then ours."""
        for validator in getattr(PretrainedConfig, "__class_validators__", []):
            if validator.__name__ != "validate_layer_type":
                validator(self)
        expand_layer_types(self.layer_types, self.num_hidden_layers)
        self._validate()

    # ------------------------------------------------------------------ derived views
    @property
    def logit_scaling(self) -> tuple[str, float] | None:
        return parse_logit_scaling(self.attn_logit_scaling)

    def layer_uses_rope(self, layer_idx: int) -> bool:
        """HyPE: RoPE on lightning and sliding layers, NoPE on full and sparse layers; 'rope': RoPE everywhere."""
        if self.position_encoding == "rope":
            return True
        return self.layer_types[layer_idx] in ("lightning_attention", "sliding_attention")

    def layer_uses_logit_scaling(self, layer_idx: int) -> bool:
        return self.logit_scaling is not None and self.layer_types[layer_idx] in ("full_attention", "sparse_attention")

    @property
    def rope_type(self) -> str:
        if not self.rope_extension:
            return "default"
        return self.rope_extension.get("rope_type", self.rope_extension.get("type", "default"))


__all__ = ["HybridConfig", "LAYER_TYPES", "expand_layer_types", "parse_logit_scaling"]
