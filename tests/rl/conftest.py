"""Shared fixtures: a tiny byte-level BPE tokenizer trained here (no downloads) and tiny policies."""

from __future__ import annotations

import pytest


def train_tokenizer(vocab_size: int = 800):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from longforge.data.rl import World

    world = World(seed=0, size=0.3)
    text = [world.page(e) for e in world.entities]
    text += ["The answer is: 42. User: Write a poem about tapirs.\nAssistant: The quiet river hums."] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(text, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer()


@pytest.fixture(scope="session")
def tokenizer_dir(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(path)
    return path


def make_tiny_model(kind: str, tokenizer):
    """A tiny random policy: a transformers Qwen3ForCausalLM or a longforge hybrid (lightning + full attention)."""
    import torch

    import longforge

    torch.manual_seed(0)
    ids = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    if kind == "hybrid":
        config = longforge.HybridConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            layer_types="LF",
            **ids,
        )
        return longforge.HybridForCausalLM(config)
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        **ids,
    )
    return Qwen3ForCausalLM(config)


@pytest.fixture()
def tiny_model(tokenizer):
    return lambda kind="qwen3": make_tiny_model(kind, tokenizer)
