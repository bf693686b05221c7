"""Functional attention kernels of longforge: no ``nn.Module``, no transformers import.

Each op is a folder: ``naive.py`` is the fp32 PyTorch reference (the truth every fast path is tested
against), ``__init__.py`` is the one seam that picks a backend (see ``_backend.resolve``) and ``README.md``
gives the op's formula.

- ``attention``: causal / sliding-window / bidirectional softmax attention with GQA and key padding.
- ``sparse_attention``: InfLLM-V2 trainable block-sparse attention (token-level queries, block-level KV).
- ``linear_attention``: Lightning attention (simple GLA with a fixed per-head decay).
"""

from . import attention, linear_attention, sparse_attention

__all__ = ["attention", "linear_attention", "sparse_attention"]
