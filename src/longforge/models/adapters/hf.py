"""Import (and export) transformers Qwen3 / Llama checkpoints.

`from_transformers` maps the weights of a `Qwen3ForCausalLM` or `LlamaForCausalLM` into a `HybridForCausalLM`.
Softmax layers (full / sliding / sparse) take the attention weights as they are — InfLLM-V2 adds no parameters, so
a sparse layer inherits a dense one. Lightning layers take HALO's weight transfer (architecture.md §1.3):
W_q, W_k, W_v, W_o and the q/k norms are copied; GQA keys and values are repeated out to the lightning heads
(reshape to [Hkv, D, hidden], repeat_interleave H/Hkv, flatten); the output norm and gate are new (norm = 1,
gate ~ N(0, initializer_range), as HypeNet initialises them). With every layer ``full_attention`` and RoPE the
result computes the same function as the source model.

Only safetensors weights are read: pickled ``.bin`` checkpoints are refused (they can execute code on load).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ...utils import check_checkpoint_dir
from ..hybrid.configuration_hybrid import HybridConfig
from ..hybrid.modeling_hybrid import HybridForCausalLM

SUPPORTED_MODEL_TYPES = ("qwen3", "llama")


def _get(cfg: Any, key: str, default=None):
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _rope_from(cfg: Any) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling) from a transformers config in either the 4.x or 5.x spelling."""
    params = _get(cfg, "rope_parameters")
    if isinstance(params, dict) and params:
        theta = params.get("rope_theta", _get(cfg, "rope_theta", 10000.0))
        rope_type = params.get("rope_type", params.get("type", "default"))
        scaling = None if rope_type == "default" else {k: v for k, v in params.items() if k != "rope_theta"}
        return float(theta), scaling
    scaling = _get(cfg, "rope_scaling")
    if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type", "default")) == "default":
        scaling = None
    return float(_get(cfg, "rope_theta", 10000.0)), scaling


def hybrid_config_from_transformers(cfg: Any, layer_types=None, **overrides) -> HybridConfig:
    """A Qwen3 / Llama config (object or config.json dict) → the HybridConfig with the same decoder.

    ``layer_types=None`` keeps the source's layers (full attention, or sliding where Qwen3 uses a window)."""
    model_type = _get(cfg, "model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"cannot import model_type {model_type!r}: from_transformers supports {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if _get(cfg, "mlp_bias", False):
        raise ValueError("Llama configs with mlp_bias=True are not supported (longforge's SwiGLU has no biases)")
    act = _get(cfg, "hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"hidden_act {act!r} is not supported; longforge's MLP is SwiGLU (silu)")
    heads = _get(cfg, "num_attention_heads")
    hidden = _get(cfg, "hidden_size")
    head_dim = _get(cfg, "head_dim") or hidden // heads
    theta, scaling = _rope_from(cfg)
    n_layers = _get(cfg, "num_hidden_layers")
    if layer_types is None:
        source_types = _get(cfg, "layer_types") or ["full_attention"] * n_layers
        layer_types = [t if t in ("full_attention", "sliding_attention") else "full_attention" for t in source_types]
    kwargs = dict(
        vocab_size=_get(cfg, "vocab_size"),
        hidden_size=hidden,
        intermediate_size=_get(cfg, "intermediate_size"),
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=_get(cfg, "num_key_value_heads") or heads,
        head_dim=head_dim,
        rms_norm_eps=_get(cfg, "rms_norm_eps", 1e-6),
        rope_theta=theta,
        rope_extension=scaling,
        max_position_embeddings=_get(cfg, "max_position_embeddings", 32768),
        tie_word_embeddings=bool(_get(cfg, "tie_word_embeddings", False)),
        attention_bias=bool(_get(cfg, "attention_bias", False)),
        qk_norm=model_type == "qwen3",
        layer_types=layer_types,
        sliding_window=_get(cfg, "sliding_window") or 4096,
        initializer_range=_get(cfg, "initializer_range", 0.02),
        pad_token_id=_get(cfg, "pad_token_id"),
        bos_token_id=_get(cfg, "bos_token_id"),
        eos_token_id=_get(cfg, "eos_token_id"),
    )
    unknown = set(overrides) - set(HybridConfig().to_dict()) - {"full_attention_interval"}
    if unknown:
        raise ValueError(f"unknown HybridConfig field(s) in overrides: {', '.join(sorted(unknown))}")
    kwargs.update(overrides)
    return HybridConfig(**kwargs)


def _read_safetensors_dir(path: Path) -> dict[str, torch.Tensor]:
    check_checkpoint_dir(path)  # complete safetensors only; names the bad file otherwise
    index = path / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    )
    state: dict[str, torch.Tensor] = {}
    for name in files:
        with safe_open(str(path / name), framework="pt") as f:
            for key in f.keys():
                state[key] = f.get_tensor(key)
    return state


def _load_source(path_or_model) -> tuple[Any, dict[str, torch.Tensor], torch.dtype]:
    if isinstance(path_or_model, torch.nn.Module):
        model = path_or_model
        return model.config, dict(model.state_dict()), next(model.parameters()).dtype
    from ..pretrained import resolve_model_path

    path = resolve_model_path(str(path_or_model)) if not Path(path_or_model).is_dir() else Path(path_or_model)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} is not a transformers model directory (no config.json)")
    cfg = json.loads((path / "config.json").read_text())
    if cfg.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"cannot import model_type {cfg.get('model_type')!r} from {path}: "
            f"from_transformers supports {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    dtype_name = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(dtype_name).replace("torch.", ""), torch.float32)
    return cfg, _read_safetensors_dir(path), dtype


def _repeat_kv_rows(w: torch.Tensor, num_kv_heads: int, num_heads: int) -> torch.Tensor:
    """[Hkv·D, in] → [H·D, in]: each KV head's rows repeated for the H/Hkv query heads of its group."""
    d = w.shape[0] // num_kv_heads
    return (
        w.reshape(num_kv_heads, d, *w.shape[1:])
        .repeat_interleave(num_heads // num_kv_heads, dim=0)
        .reshape(num_heads * d, *w.shape[1:])
    )


def from_transformers(
    path_or_model, layer_types=None, dtype: torch.dtype | None = None, **overrides
) -> HybridForCausalLM:
    """Build a `HybridForCausalLM` from a Qwen3 / Llama model (a local directory or a loaded model object).

    ``layer_types``: None keeps the source's attention; otherwise a list or pattern as in `HybridConfig`
    (e.g. ``"LLLF"``). ``overrides``: any other `HybridConfig` field (``position_encoding="hype"``,
    ``attn_output_gate=True``, ``sparse_topk=...``). ``dtype`` defaults to the checkpoint's."""
    src_cfg, src_state, src_dtype = _load_source(path_or_model)
    config = hybrid_config_from_transformers(src_cfg, layer_types=layer_types, **overrides)
    if "lightning_attention" in config.layer_types and (
        config.lightning_head_dim != config.head_dim or config.lightning_num_heads != config.num_attention_heads
    ):
        raise ValueError(
            "HALO weight transfer copies attention projections into Lightning layers, so lightning_num_heads / "
            f"lightning_head_dim must equal the attention's ({config.num_attention_heads} / {config.head_dim}); "
            f"got {config.lightning_num_heads} / {config.lightning_head_dim}"
        )
    model = HybridForCausalLM(config)  # new parameters (gates, norms) get their initial values here
    target = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in src_state.items():
        if key.startswith("lm_head.") and config.tie_word_embeddings:
            continue
        new_key = key
        if ".self_attn." in key:
            layer_idx = int(key.split(".")[2])
            new_key = key.replace(".self_attn.", ".mixer.")
            if config.layer_types[layer_idx] == "lightning_attention":
                if key.endswith(("k_proj.weight", "v_proj.weight", "k_proj.bias", "v_proj.bias")):
                    value = _repeat_kv_rows(value, config.num_key_value_heads, config.num_attention_heads)
                if key.endswith(("q_norm.weight", "k_norm.weight")) and not config.lightning_qk_norm:
                    continue
            elif key.endswith(("q_norm.weight", "k_norm.weight")) and not config.qk_norm:
                continue
        if new_key not in target:
            if key.endswith("rotary_emb.inv_freq"):
                continue
            raise ValueError(
                f"unexpected weight {key!r} in the source checkpoint (no place for it in {config.model_type})"
            )
        if target[new_key].shape != value.shape:
            raise ValueError(
                f"shape mismatch for {key}: source {tuple(value.shape)}, target {tuple(target[new_key].shape)}"
            )
        mapped[new_key] = value
    if config.tie_word_embeddings:
        mapped.pop("lm_head.weight", None)
    missing_required = [
        k
        for k in target
        if k not in mapped and not _is_new_parameter(k) and not (k == "lm_head.weight" and config.tie_word_embeddings)
    ]
    if missing_required:
        raise ValueError(f"the source checkpoint lacks {len(missing_required)} weights, e.g. {missing_required[:3]}")
    model.load_state_dict(mapped, strict=False)
    if config.tie_word_embeddings:
        model.tie_weights()
    model = model.to(dtype or src_dtype)
    model.eval()
    return model


def _is_new_parameter(key: str) -> bool:
    """Parameters the hybrid adds that no Transformer has: output gates and the lightning output norm."""
    return key.endswith(("mixer.o_gate.weight", "mixer.z_proj.weight", "mixer.o_norm.weight")) or (
        ".mixer.q_norm." in key or ".mixer.k_norm." in key  # Llama has no q/k norms: new, initialised to 1
    )


def to_transformers_state_dict(model: HybridForCausalLM) -> dict[str, torch.Tensor]:
    """The inverse map for a hybrid whose layers are all full attention with RoPE and no gates: the state dict of
    the equivalent transformers Qwen3 (qk_norm) or Llama model."""
    cfg = model.config
    if any(t != "full_attention" for t in cfg.layer_types) or cfg.position_encoding != "rope" or cfg.attn_output_gate:
        raise ValueError("only an all-full-attention, RoPE, ungated hybrid has a transformers Qwen3 / Llama twin")
    return {k.replace(".mixer.", ".self_attn."): v for k, v in model.state_dict().items()}
