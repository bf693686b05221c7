"""Long-context RL data: the eight datasets of "Beyond Reward Engineering" (arXiv 2606.18831) in three families.

retrieval        FuzzyNeedle, MultiNeedle
multi_evidence   CrossEntity, WebSearch, MultiQuery, KeyChain, LongDocQA
reasoning        LongMath

Built from a built-in synthetic world (:mod:`.world`) or from the user's HotpotQA / MuSiQue / Qasper, Wikipedia-style
documents and math problems (:mod:`.sources`); every prompt is fitted with the policy's tokenizer into a token range
(:mod:`.fitting`). ``synth_rl`` writes the datasets in the paper's proportions; ``filter_rl`` keeps the items a policy
sometimes but not always solves, with task-balanced sampling.
"""

from .base import Generator, TaskTooLong
from .evidence import CrossEntity, KeyChain, LongDocQA, MultiQuery, WebSearch, world_question
from .filter import filter_rl, pass_rates, task_balanced_sample
from .fitting import LengthRange, TokenCounter, fit_context
from .reasoning import LongMath, split_fragments
from .records import FAMILIES, RLRecord, is_heldout, read_records, write_records
from .retrieval import FuzzyNeedle, MultiNeedle
from .sources import MathProblem, QAItem, SourceBundle, load_sources
from .synth import DATASETS, GENERATORS, PAPER_COUNTS, build_generators, load_tokenizer, scaled_counts, synth_rl
from .world import TAXONOMY, World, resolve

__all__ = [
    "DATASETS",
    "FAMILIES",
    "GENERATORS",
    "PAPER_COUNTS",
    "TAXONOMY",
    "CrossEntity",
    "FuzzyNeedle",
    "Generator",
    "KeyChain",
    "LengthRange",
    "LongDocQA",
    "LongMath",
    "MathProblem",
    "MultiNeedle",
    "MultiQuery",
    "QAItem",
    "RLRecord",
    "SourceBundle",
    "TaskTooLong",
    "TokenCounter",
    "WebSearch",
    "World",
    "build_generators",
    "filter_rl",
    "fit_context",
    "is_heldout",
    "load_sources",
    "load_tokenizer",
    "pass_rates",
    "read_records",
    "resolve",
    "scaled_counts",
    "split_fragments",
    "synth_rl",
    "task_balanced_sample",
    "world_question",
    "write_records",
]
