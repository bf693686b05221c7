"""The models HALO moves between: the teacher (as a longforge hybrid of full attention), the bank of Lightning
students (one per layer, stage 1), the one-layer-converted probes of layer selection, and the final hybrid.

Parameter transfer (HALO §1.3, ``architecture.md``): a Lightning student copies W_q, W_k, W_v, W_o and the q/k
norms of its layer's attention; GQA keys and values are repeated out to the Lightning heads. The new output gates
(`z_proj` of Lightning, `o_gate` of the kept attention) start *neutral*: the gate's weight is zero, so
σ(0) = 1/2, and W_o is doubled — the layer computes exactly what it computed without a gate, while the gate still
receives gradients. (HALO initialises the gates randomly, which halves every converted layer's output on average
before training; the neutral start keeps the teacher's function where the architecture allows it.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from ..layers.lightning import LightningAttention
from ..models.adapters.hf import _repeat_kv_rows
from ..models.hybrid import HybridConfig, HybridForCausalLM

ATTENTION_TYPE = {"hypenet": "full_attention", "sala": "sparse_attention"}


def _neutral_gate(gate: nn.Linear | None, out_proj: nn.Linear) -> None:
    if gate is None:
        return
    with torch.no_grad():
        gate.weight.zero_()
        out_proj.weight.mul_(2.0)


def load_teacher(name_or_path: str, dtype: torch.dtype | None = None) -> HybridForCausalLM:
    """A Qwen3 / Llama directory (or built-in name) as a longforge hybrid computing the same function."""
    from ..models import from_transformers

    return from_transformers(name_or_path, dtype=dtype)


def student_config(
    teacher: HybridConfig, layer_types: list[str], recipe: str, extra: dict | None = None
) -> HybridConfig:
    """The hybrid's config: the teacher's decoder with ``layer_types``, HyPE positions (RoPE on Lightning, NoPE on
    the kept attention), output gates on every mixer, Lightning heads = attention heads (MHA)."""
    data = teacher.to_dict()
    for key in ("architectures", "model_type", "transformers_version", "auto_map", "_name_or_path", "dtype"):
        data.pop(key, None)
    data.update(
        layer_types=list(layer_types),
        position_encoding="hype",
        attn_logit_scaling=None,  # off while training (HALO); chosen by the HyPE sweep at the end
        attn_output_gate=True,
        lightning_num_heads=teacher.num_attention_heads,
        lightning_head_dim=teacher.head_dim,
        max_position_embeddings=max(teacher.max_position_embeddings, 1 << 20),
    )
    data.pop("full_attention_interval", None)
    data.update(extra or {})
    config = HybridConfig(**data)
    if recipe == "sala":  # sanity: the recipe decides the kept attention's kind
        assert all(t in ("sparse_attention", "lightning_attention") for t in config.layer_types)
    return config


def lightning_from_attention(attn: nn.Module, config: HybridConfig, layer_idx: int) -> LightningAttention:
    """HALO's transfer of one attention layer into a Lightning student (same device and dtype as ``attn``)."""
    student = LightningAttention(config, layer_idx)
    ref = attn.q_proj.weight
    student.to(device=ref.device, dtype=ref.dtype)
    h, hkv = config.num_attention_heads, config.num_key_value_heads
    with torch.no_grad():
        student.q_proj.weight.copy_(attn.q_proj.weight)
        student.k_proj.weight.copy_(_repeat_kv_rows(attn.k_proj.weight, hkv, h))
        student.v_proj.weight.copy_(_repeat_kv_rows(attn.v_proj.weight, hkv, h))
        student.o_proj.weight.copy_(attn.o_proj.weight)
        if config.attention_bias:
            student.q_proj.bias.copy_(attn.q_proj.bias)
            student.k_proj.bias.copy_(_repeat_kv_rows(attn.k_proj.bias, hkv, h))
            student.v_proj.bias.copy_(_repeat_kv_rows(attn.v_proj.bias, hkv, h))
            student.o_proj.bias.copy_(attn.o_proj.bias)
        if student.q_norm is not None:
            if getattr(attn, "q_norm", None) is not None:
                student.q_norm.weight.copy_(attn.q_norm.weight)
                student.k_norm.weight.copy_(attn.k_norm.weight)
            else:
                student.q_norm.weight.fill_(1.0)
                student.k_norm.weight.fill_(1.0)
        if student.o_norm is not None:
            student.o_norm.weight.fill_(1.0)
    _neutral_gate(student.z_proj, student.o_proj)
    return student


class StudentBank(nn.Module):
    """The Lightning students of every layer (``bank[i]`` is layer i's; state-dict keys ``"<i>.q_proj.weight"``).

    ``bank(inputs)`` runs student i on ``inputs[i]`` (the mixer's positional arguments) and returns their outputs:
    one call through the bank, so that under FSDP2 the bank is the root that gathers each student in turn. A plain
    Module with children "0", "1", … rather than an ``nn.ModuleList``: torch 2.11's ``fully_shard`` refuses any
    ModuleList as a root, even one with a ``forward`` (2.13 accepts it)."""

    def __init__(self, students: Iterable[nn.Module]):
        super().__init__()
        for i, student in enumerate(students):
            self.add_module(str(i), student)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._modules.values())

    def __getitem__(self, idx: int) -> nn.Module:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"student {idx} out of range for a bank of {len(self)}")
        return self._modules[str(idx % len(self))]

    def forward(self, inputs: list[tuple]) -> list[torch.Tensor]:
        if len(inputs) != len(self):
            raise ValueError(f"the bank has {len(self)} students, got inputs for {len(inputs)} layers")
        return [student(*args) for student, args in zip(self, inputs)]


def build_student_bank(teacher: HybridForCausalLM, config: HybridConfig) -> StudentBank:
    """One Lightning student per teacher layer (stage 1 trains all of them at once)."""
    return StudentBank(lightning_from_attention(layer.mixer, config, i) for i, layer in enumerate(teacher.model.layers))


@contextlib.contextmanager
def one_layer_converted(model: HybridForCausalLM, layer_idx: int, student: nn.Module) -> Iterator[HybridForCausalLM]:
    """``model`` with only layer ``layer_idx``'s mixer replaced by ``student`` (in place; restored on exit)."""
    layer = model.model.layers[layer_idx]
    old_mixer, old_type = layer.mixer, layer.layer_type
    old_types = list(model.config.layer_types)
    types = list(old_types)
    types[layer_idx] = "lightning_attention"
    object.__setattr__(model.config, "layer_types", types)  # the cache reads the config's layer map
    layer.mixer, layer.layer_type = student, "lightning_attention"
    try:
        yield model
    finally:
        layer.mixer, layer.layer_type = old_mixer, old_type
        object.__setattr__(model.config, "layer_types", old_types)


@contextlib.contextmanager
def one_layer_nope(model: HybridForCausalLM, layer_idx: int) -> Iterator[HybridForCausalLM]:
    """``model`` with only layer ``layer_idx``'s attention made NoPE (no RoPE on q and k), as HyPE keeps it."""
    mixer = model.model.layers[layer_idx].mixer
    if not hasattr(mixer, "use_rope"):
        raise ValueError(f"layer {layer_idx} is a {type(mixer).__name__}, not softmax attention")
    old = mixer.use_rope
    mixer.use_rope = False
    try:
        yield model
    finally:
        mixer.use_rope = old


def assemble_hybrid(
    teacher: HybridForCausalLM, students: nn.ModuleList, keep: list[int], recipe: str, extra: dict | None = None
) -> HybridForCausalLM:
    """The hybrid: layers in ``keep`` stay softmax attention (full for ``hypenet``, InfLLM-V2 sparse for ``sala``;
    NoPE, neutral output gate), the others take their stage-1 Lightning student; everything else is the teacher's."""
    n = teacher.config.num_hidden_layers
    if not keep or any(not 0 <= i < n for i in keep):
        raise ValueError(f"keep must name layers in [0, {n}), got {keep}")
    types = [ATTENTION_TYPE[recipe] if i in keep else "lightning_attention" for i in range(n)]
    config = student_config(teacher.config, types, recipe, extra)
    ref = next(teacher.parameters())
    with torch.device(ref.device):
        hybrid = HybridForCausalLM(config).to(ref.dtype)
    state = {}
    for key, value in teacher.state_dict().items():
        if ".mixer." in key:
            idx = int(key.split(".")[2])
            if idx not in keep:
                continue
        state[key] = value
    for i, student in enumerate(students):
        if i in keep:
            continue
        for key, value in student.state_dict().items():
            state[f"model.layers.{i}.mixer.{key}"] = value
    missing, unexpected = hybrid.load_state_dict(state, strict=False)
    gates = {f"model.layers.{i}.mixer.o_gate.weight" for i in keep}
    really_missing = [
        k for k in missing if k not in gates and not (k == "lm_head.weight" and config.tie_word_embeddings)
    ]
    if really_missing or unexpected:
        raise RuntimeError(f"hybrid assembly: missing {really_missing[:4]}, unexpected {unexpected[:4]}")
    if config.tie_word_embeddings:
        hybrid.tie_weights()
    for i in keep:
        _neutral_gate(hybrid.model.layers[i].mixer.o_gate, hybrid.model.layers[i].mixer.o_proj)
    return hybrid


def kept_layers(
    scores: list[float],
    ratio: float,
    recipe: str,
    retrieval_drop: list[float] | None = None,
    general_drop: list[float] | None = None,
) -> list[int]:
    """The layers that stay attention: the top ``round(ratio · L)`` by score; ``sala`` keeps the first and last layers
    in any case (MiniCPM-SALA, for training stability) and fills the rest by score. Ties — several layers at the cap
    of 50, or at 0 when converting them costs no retrieval — go to the larger retrieval drop (the score's numerator)
    when given, then to the smaller general-quality drop ``max C − C_i`` (the limit of the score ΔR / ΔC as the equal
    ΔR shrink), then to the lower index."""
    n = len(scores)
    count = max(1, round(ratio * n))
    forced = [0, n - 1] if recipe == "sala" and n > 1 else []
    count = max(count, len(forced))
    drop = retrieval_drop or [0.0] * n
    cost = general_drop or [0.0] * n
    order = sorted((i for i in range(n) if i not in forced), key=lambda i: (-scores[i], -drop[i], cost[i], i))
    return sorted(forced + order[: count - len(forced)])


def selection_scores(
    retrieval: list[float], general: list[float], cap: float = 50.0, kept_retrieval: list[float] | None = None
) -> list[float]:
    """HALO's layer score: ``min(cap, (max R − R_i) / (max C − C_i + 1e-10))``: a layer matters when converting it
    costs retrieval (R) much more than general quality (C). Higher = keep as attention.

    ``kept_retrieval`` (the ``hype`` selection mode): N_i, the retrieval with only layer i's attention made NoPE —
    the form a kept layer takes in a HyPE hybrid — replaces max R, so the numerator is what keeping layer i as NoPE
    attention buys over its Lightning student: ``N_i − R_i``. It is negative for a layer whose job needs positions
    (a previous-token head): as NoPE attention it would lose that job, while its RoPE Lightning student keeps part."""
    if len(retrieval) != len(general) or not retrieval:
        raise ValueError(f"need one R and one C per layer, got {len(retrieval)} and {len(general)}")
    c_max = max(general)
    return [min(cap, g / (c_max - c + 1e-10)) for g, c in zip(retrieval_gains(retrieval, kept_retrieval), general)]


def retrieval_gains(retrieval: list[float], kept_retrieval: list[float] | None = None) -> list[float]:
    """The selection score's numerator per layer: ``max R − R_i`` (HALO), or ``N_i − R_i`` given ``kept_retrieval``."""
    if kept_retrieval is not None and len(kept_retrieval) != len(retrieval):
        raise ValueError(f"need one N per layer, got {len(kept_retrieval)} for {len(retrieval)} layers")
    tops = kept_retrieval if kept_retrieval is not None else [max(retrieval)] * len(retrieval)
    return [top - r for top, r in zip(tops, retrieval)]
