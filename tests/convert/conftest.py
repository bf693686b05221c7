"""A tiny random Qwen3 teacher (with the embedded teacher's real tokenizer) and a small text corpus on disk."""

from __future__ import annotations

import json
import shutil

import pytest
import torch


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from longforge.assets import asset_path

    out = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=12000, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, tie_word_embeddings=True, max_position_embeddings=4096,
        rope_theta=10000.0, eos_token_id=0, bos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    Qwen3ForCausalLM(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(asset_path("tiny-teacher") / name, out / name)
    return out


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """~200 short documents of varied prose (Python's own docstrings), as JSONL."""
    import collections
    import difflib
    import json as js
    import pathlib
    import textwrap

    texts = []
    for module in (collections, difflib, js, pathlib, textwrap, shutil):
        for name in dir(module):
            doc = getattr(getattr(module, name), "__doc__", None)
            if isinstance(doc, str) and len(doc) > 200:
                texts.append(doc)
    path = tmp_path_factory.mktemp("data") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:200]))
    return path
