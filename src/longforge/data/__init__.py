"""Data: the offline corpus (prose + synthetic long-context skills), its tokenizer, user sources, the train stream.

``corpus``    prose from the installed standard library's (and numpy / torch's) documentation, held-out split
``skills``    RULER-style synthetic skills (needles, multi-key, key-value, variable tracking, multi-hop facts)
``tokenizer`` byte-level BPE with single-digit tokens, trained on the corpus
``sources``   JSONL / Parquet / ``datasets.load_from_disk`` text readers
``stream``    ``TrainStream``: packed, loss-weighted, resumable batches
"""

from .corpus import DEFAULT_PROSE_SOURCES, Document, prose_documents, split_documents
from .skills import PROBES, SKILLS, Sample, SkillContext, TokenCounter, World
from .sources import read_texts
from .stream import DEFAULT_MIX, TrainStream, answer_accuracy
from .tokenizer import EOS_TOKEN, build_tokenizer, load_tokenizer, train_tokenizer

__all__ = [
    "DEFAULT_MIX",
    "DEFAULT_PROSE_SOURCES",
    "EOS_TOKEN",
    "PROBES",
    "SKILLS",
    "Document",
    "Sample",
    "SkillContext",
    "TokenCounter",
    "TrainStream",
    "World",
    "answer_accuracy",
    "build_tokenizer",
    "load_tokenizer",
    "prose_documents",
    "read_texts",
    "split_documents",
    "train_tokenizer",
]
