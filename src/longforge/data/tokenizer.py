"""A byte-level BPE tokenizer for the offline corpus, trained with the `tokenizers` library.

Digits are split into single tokens *before* the byte-level split (``Digits(individual_digits=True)``), so a
7-digit magic number is always 7 tokens and a model copies numbers digit by digit instead of having to learn
thousands of multi-digit tokens (``reference/teacher_notes.md``: a key should be a few tokens, digits one each).
Byte-level means any text round-trips, including characters never seen in training.

One special token, ``<|endoftext|>``, separates packed documents and serves as eos, bos and pad.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .corpus import DEFAULT_PROSE_SOURCES, Document, essay_sentences, prose_documents, split_documents
from .skills import SKILLS, SkillContext

__all__ = ["EOS_TOKEN", "build_tokenizer", "load_tokenizer", "tokenizer_training_texts", "train_tokenizer"]

EOS_TOKEN = "<|endoftext|>"


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 12000,
    *,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = (EOS_TOKEN,),
    model_max_length: int = 1 << 20,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (digits split) on ``texts``; ``special_tokens[0]`` is eos, bos and pad."""
    if vocab_size < 257 + len(special_tokens):
        raise ValueError(f"vocab_size must be at least {257 + len(special_tokens)} (256 bytes + specials)")
    if not special_tokens:
        raise ValueError("special_tokens: give at least the end-of-text token")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = _pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    eos = special_tokens[0]
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=eos,
        bos_token=eos,
        pad_token=eos,
        unk_token=None,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # keep decode(encode(text)) == text
    )


def tokenizer_training_texts(
    train_docs: Sequence[Document], seed: int = 0, num_skill_samples: int = 2000
) -> Iterator[str]:
    """The tokenizer's training text: every training prose document, then ``num_skill_samples`` skill samples.

    The skill samples put the task templates, key words, uuids and variable names into the merges, so a key is
    a few tokens. Lengths are estimated (4 characters per token) since no tokenizer exists yet.
    """
    yield from (doc.text for doc in train_docs)
    ctx = SkillContext.from_sentences(essay_sentences(train_docs), world_seed=seed)
    rng = random.Random(f"longforge-tokenizer-{seed}")
    names = sorted(SKILLS)
    for i in range(num_skill_samples):
        skill = SKILLS[names[i % len(names)]]
        yield skill(rng, lambda text: len(text) // 4 + 1, rng.choice((256, 512, 1024)), ctx).text


def build_tokenizer(
    out_dir: str | os.PathLike,
    seed: int = 0,
    vocab_size: int = 12000,
    *,
    docs: Sequence[Document] | None = None,
    prose_sources: Sequence[str] = DEFAULT_PROSE_SOURCES,
    heldout_fraction: float = 0.03,
    num_skill_samples: int = 2000,
    cache_dir: str | os.PathLike | None = None,
) -> PreTrainedTokenizerFast:
    """Train the corpus tokenizer (training split of the prose + skill samples) and save it to ``out_dir``.

    ``docs`` overrides the built-in prose (read from ``prose_sources``); held-out documents are never seen.
    """
    if docs is None:
        docs = prose_documents(prose_sources, cache_dir=cache_dir)
    train_docs, _ = split_documents(docs, heldout_fraction)
    if not train_docs:
        raise ValueError("build_tokenizer: no training documents (all held out, or none given)")
    tokenizer = train_tokenizer(tokenizer_training_texts(train_docs, seed, num_skill_samples), vocab_size)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by :func:`build_tokenizer` (or any fast tokenizer directory)."""
    if not Path(path).is_dir():
        raise ValueError(f"tokenizer path does not exist or is not a directory: {path}")
    return PreTrainedTokenizerFast.from_pretrained(path)
