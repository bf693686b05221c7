"""Fixtures for the eval tests: a real byte-level BPE tokenizer trained here (no hub), tiny random longforge models
saved as HF directories, and an "oracle" model that answers NIAH prompts correctly by reading them."""

from __future__ import annotations

import re

import pytest
import torch

EOS = "<|endoftext|>"


def train_tokenizer(vocab_size: int = 2048, eos: str | None = EOS):
    """A byte-level BPE trained on the prose haystack, the noise sentence and the task templates."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from longforge.eval.haystack import NOISE_HAYSTACK, prose_text
    from longforge.eval.ruler import TEMPLATES

    corpus = prose_text()[:150_000].split("\n") + [NOISE_HAYSTACK] * 20
    corpus += [t.template + t.answer_prefix for t in TEMPLATES.values()] * 5
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],  # id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos)


def tiny_model(vocab_size: int, silent: bool = False):
    """A random 2-layer hybrid (Lightning + full attention). ``silent``: the final norm is zeroed, so every logit is
    0 and greedy decoding picks token 0 = EOS at once (fast end-to-end runs that still exercise every stage)."""
    from longforge import HybridConfig, HybridForCausalLM

    config = HybridConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        layer_types="LF",
        max_position_embeddings=8192,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = HybridForCausalLM(config).eval()
    if silent:
        with torch.no_grad():
            model.model.norm.weight.zero_()
    return model


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny-hybrid")
    tiny_model(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def silent_model_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("silent-hybrid")
    tiny_model(len(tokenizer), silent=True).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class OracleModel(torch.nn.Module):
    """Stands in for a model in ``evaluate``: for a NIAH prompt it "generates" the values of the queried keys
    (found by reading the needles in the prompt), then EOS; for anything else, EOS at once. A correct pipeline
    (prompt = input + answer prefix, new tokens decoded, RULER scoring) must then score NIAH tasks 100."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device
        self.generation_config = __import__("transformers").GenerationConfig(eos_token_id=tokenizer.eos_token_id)
        self.calls = []

    def answer(self, prompt: str) -> str:
        # the answer prefix ends the prompt: "... magic number(s) for <keys> mentioned in the provided text is/are"
        match = re.search(r".*magic \w+ for (.+?) mentioned in the provided text (?:is|are)$", prompt, re.S)
        if not match:
            return ""
        queried = match.group(1)
        keys = [k.strip() for k in re.split(r", and |, ", queried)]
        values = []
        for key in keys:
            values += re.findall(rf"One of the special magic \w+ for {re.escape(key)} is: ([\w-]+)\.", prompt)
        return " " + ", ".join(values) + "."

    def generate(self, input_ids, attention_mask, generation_config, **kwargs):
        self.calls.append((input_ids.shape, generation_config.max_new_tokens))
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            prompt = self.tokenizer.decode(ids[mask.bool()])
            new = self.tokenizer(self.answer(prompt), add_special_tokens=False)["input_ids"]
            new = new[: generation_config.max_new_tokens - 1] + [self.tokenizer.eos_token_id]
            rows.append(torch.cat([ids, torch.tensor(new)]))
        width = max(len(r) for r in rows)
        pad = generation_config.pad_token_id
        return torch.stack([torch.cat([r, torch.full((width - len(r),), pad)]) for r in rows])
