"""`HybridModel` / `HybridForCausalLM`: a transformers-native causal LM whose token mixer is chosen per layer.

Each decoder layer is pre-norm: h ← h + mixer(RMSNorm(h)); h ← h + SwiGLU(RMSNorm(h)) — the block of Qwen3,
with the mixer given by ``config.layer_types[i]``. Shapes: input_ids [B, T]; attention_mask [B, past + T] (1 = token,
0 = padding, as transformers' ``generate`` builds it); hidden states [B, T, hidden]; logits [B, T, vocab].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from ...layers.attention import SoftmaxAttention
from ...layers.deco_moe import build_mlp
from ...layers.lightning import LightningAttention
from ...modules import RMSNorm, RotaryEmbedding
from ...utils import atomic_directory, check_checkpoint_dir
from .cache import HybridCache
from .configuration_hybrid import HybridConfig, parse_logit_scaling

# transformers renamed the cache field of its outputs from `past_key_values` to `cache` during 5.x; `generate`
# reads whichever name its own output classes use, so we fill that one.
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class HybridDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: HybridConfig, layer_idx: int):
        super().__init__()
        self.layer_type = config.layer_types[layer_idx]
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        if self.layer_type == "lightning_attention":
            self.mixer = LightningAttention(config, layer_idx)
        else:
            self.mixer = SoftmaxAttention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = build_mlp(config, layer_idx)

    def forward(self, hidden_states, position_embeddings, position_ids, attention_mask, cache_layer=None):
        h = hidden_states + self.mixer(
            self.input_layernorm(hidden_states), position_embeddings, position_ids, attention_mask, cache_layer
        )
        return h + self.mlp(self.post_attention_layernorm(h))


class HybridPreTrainedModel(PreTrainedModel):
    config_class = HybridConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["HybridDecoderLayer"]
    _supports_attention_backend = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loader, after checking a local directory: config present, safetensors weights only
        (pickles refused), every shard complete — so a corrupt or partial checkpoint fails with its file named."""
        if Path(pretrained_model_name_or_path).is_dir():
            check_checkpoint_dir(pretrained_model_name_or_path)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' safetensors save, made atomic: written to a temporary directory, then each file moved
        into place with os.replace (config.json last). An interrupted save leaves no half-written file."""
        if kwargs.get("push_to_hub"):
            raise ValueError("push_to_hub is not supported: longforge never reaches the network")
        with atomic_directory(save_directory) as tmp:
            super().save_pretrained(tmp, *args, **kwargs)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # `generate` must not build a transformers DynamicCache: the model creates its own HybridCache.
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(mean=0.0, std=std)
        elif isinstance(module, RMSNorm):
            module.weight.fill_(1.0)


class HybridModel(HybridPreTrainedModel):
    def __init__(self, config: HybridConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(HybridDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        # One rotary table per head size in use (softmax and lightning heads may differ).
        dims = {config.head_dim, config.lightning_head_dim}
        self.rotary = nn.ModuleDict(
            {str(d): RotaryEmbedding(d, config.rope_theta, config.rope_extension) for d in sorted(dims)}
        )
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: HybridCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        cache: HybridCache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be [batch, seq_len], got shape {tuple(input_ids.shape)}")
            inputs_embeds = self.embed_tokens(input_ids)
        elif inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"inputs_embeds must be [batch, seq_len, {self.config.hidden_size}], got {tuple(inputs_embeds.shape)}"
            )
        B, T, _ = inputs_embeds.shape
        cache = cache if cache is not None else past_key_values
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if cache is not None and not isinstance(cache, HybridCache):
            raise ValueError(
                f"HybridForCausalLM needs a longforge HybridCache, got {type(cache).__name__}; "
                "pass HybridCache(model.config) or let the model create one (use_cache=True)"
            )
        if use_cache and cache is None:
            cache = HybridCache(self.config)
        past = cache.get_seq_length() if cache is not None else 0

        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[0] != B or attention_mask.shape[1] != past + T:
                raise ValueError(
                    f"attention_mask must be 2-D [batch, past + seq_len] = [{B}, {past + T}], "
                    f"got shape {tuple(attention_mask.shape)}"
                )
            attention_mask = attention_mask.bool()
            if bool(attention_mask.all()):
                attention_mask = None  # nothing to mask: take the unmasked (faster) paths
        if position_ids is None:
            if attention_mask is not None:
                # Left padding: a sequence's first real token has position 0.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = torch.arange(past, past + T, device=inputs_embeds.device).unsqueeze(0).expand(B, T)
        elif position_ids.shape[-1] != T:
            raise ValueError(f"position_ids must have seq_len {T} entries, got shape {tuple(position_ids.shape)}")
        if position_ids.dim() == 1:
            position_ids = position_ids.unsqueeze(0)
        position_ids = position_ids.expand(B, T)

        rope = {int(d): emb(position_ids, inputs_embeds.dtype) for d, emb in self.rotary.items()}
        hidden = inputs_embeds
        all_hidden = [] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            if all_hidden is not None:
                all_hidden.append(hidden)
            dim = self.config.lightning_head_dim if layer.layer_type == "lightning_attention" else self.config.head_dim
            hidden = layer(hidden, rope[dim], position_ids, attention_mask, cache[i] if cache is not None else None)
        hidden = self.norm(hidden)
        if all_hidden is not None:
            all_hidden.append(hidden)
        if cache is not None:
            cache.advance(T)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            **{_CACHE_FIELD: cache if use_cache else None},
        )


class HybridForCausalLM(HybridPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: HybridConfig):
        super().__init__(config)
        self.model = HybridModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def set_attn_logit_scaling(self, value: str | float | None) -> None:
        """Set ``config.attn_logit_scaling`` (e.g. ``"hype 500"``, a float, or None) and the attention layers that
        cache it, so a model can be re-scaled in place (the HyPE sweep) and saves what it computes."""
        parsed = parse_logit_scaling(value)  # raises on a bad value before anything changes
        self.config.attn_logit_scaling = value
        for layer in self.model.layers:
            if hasattr(layer.mixer, "logit_scaling"):
                uses = self.config.layer_uses_logit_scaling(layer.mixer.layer_idx)
                layer.mixer.logit_scaling = parsed if uses else None

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: HybridCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int = 0,
        cache: HybridCache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Causal LM forward. ``labels`` [B, T] (-100 = ignore) gives the mean next-token cross-entropy: position t
        predicts labels[t + 1] (the shift happens here, as in transformers). ``logits_to_keep=n`` computes logits
        for the last n positions only (``generate`` uses 1)."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            cache=cache,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"labels must have shape {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
            loss = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                labels[:, 1:].reshape(-1).to(logits.device),
                ignore_index=-100,
            )
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, hidden_states=out.hidden_states, **{_CACHE_FIELD: out.get(_CACHE_FIELD)}
        )


__all__ = ["HybridModel", "HybridForCausalLM", "HybridPreTrainedModel", "HybridDecoderLayer"]
