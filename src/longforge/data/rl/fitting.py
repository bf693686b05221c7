"""Fitting a context into a token range with the policy's tokenizer.

A prompt is ``header`` + context + ``question``, where the context is a sequence of *units* (documents, needle
sentences, conversation turns, key lines) joined by blank lines. The task's own units (the evidence) are always kept;
filler units are added until the prompt reaches the item's target length, the evidence is placed among them at random
positions, and the whole prompt is then counted exactly once: while it is over the range's upper bound, filler units
are dropped. So ``context_tokens`` is exact and never above ``max_tokens``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["LengthRange", "TokenCounter", "Fitted", "fit_context", "SEPARATOR"]

SEPARATOR = "\n\n"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class TokenCounter:
    """Exact token counts with a policy tokenizer (``transformers`` tokenizer or ``tokenizers.Tokenizer``); the counts
    of repeated pieces (filler documents) are cached."""

    def __init__(self, tokenizer, max_cache: int = 500_000):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None and hasattr(tokenizer, "encode_batch"):
            backend = tokenizer
        if backend is None and not callable(getattr(tokenizer, "encode", None)):
            raise ValueError("tokenizer: expected a transformers tokenizer or a tokenizers.Tokenizer")
        self.tokenizer = tokenizer
        self._backend = backend
        self._cache: dict[str, int] = {}
        self._max_cache = max_cache

    def exact(self, text: str) -> int:
        if self._backend is not None:
            return len(self._backend.encode(text, add_special_tokens=False).ids)
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def count(self, text: str) -> int:
        n = self._cache.get(text)
        if n is None:
            if len(self._cache) >= self._max_cache:
                self._cache.clear()
            n = self._cache[text] = self.exact(text)
        return n


@dataclass(frozen=True)
class LengthRange:
    """A prompt-length range in tokens; an item's target is drawn uniformly from [min_tokens, max_tokens] (raised
    to what the task itself needs)."""

    min_tokens: int = 0
    max_tokens: int = 32768

    def __post_init__(self):
        if self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be > 0, got {self.max_tokens}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens}")


@dataclass
class Fitted:
    prompt: str
    tokens: int
    units: list[str]  # the context units in their final order
    evidence_positions: list[int]  # index in ``units`` of each evidence unit, in the order given


def fit_context(
    counter: TokenCounter,
    header: str,
    evidence: Sequence[str],
    question: str,
    filler: Iterator[str] | Callable[[], str | None],
    length: LengthRange,
    rng: random.Random,
    task: str,
    *,
    keep_order: bool = False,
    place: Callable[[random.Random, int, int], list[int]] | None = None,
) -> Fitted:
    """Build ``header + units + question`` within ``length``.

    ``filler``: an iterator (or a zero-argument callable) of filler units; it may end early (the prompt is then
    shorter than the target). ``keep_order``: evidence units keep their relative order (otherwise they are shuffled).
    ``place(rng, n_filler, n_evidence)``: custom insertion slots (0..n_filler) for the evidence units.
    Raises ValueError naming ``task`` when the evidence alone does not fit ``length.max_tokens``."""
    sep = counter.count(SEPARATOR)
    fixed = counter.exact(SEPARATOR.join([header, *evidence, question]))
    if fixed > length.max_tokens:
        raise ValueError(
            f"{task}: max_tokens={length.max_tokens} is too small for this task: its header, question and evidence "
            f"alone take {fixed} tokens; raise --max-tokens (or shorten the task)"
        )
    target = rng.randint(max(fixed, length.min_tokens), length.max_tokens)
    budget = target - fixed
    units: list[str] = []
    next_unit = filler if callable(filler) else lambda: next(filler, None)
    while budget > sep:
        unit = next_unit()
        if unit is None:
            break
        cost = counter.count(unit) + sep
        if cost > budget:
            trimmed = _trim_to(counter, unit, budget - sep)
            if trimmed:
                units.append(trimmed)
            break
        units.append(unit)
        budget -= cost
    order = list(range(len(evidence)))
    if not keep_order:
        rng.shuffle(order)
    slots = place(rng, len(units), len(evidence)) if place else sorted(rng.randint(0, len(units)) for _ in evidence)
    assert len(slots) == len(evidence)
    merged: list[tuple[str, int | None]] = [(u, None) for u in units]
    # insert from the back so earlier slots keep their meaning (and, within one slot, the given order)
    for _, (slot, ev) in sorted(enumerate(zip(slots, order)), key=lambda t: (t[1][0], t[0]), reverse=True):
        merged.insert(slot, (evidence[ev], ev))
    while True:
        prompt = SEPARATOR.join([header, *(u for u, _ in merged), question])
        tokens = counter.exact(prompt)
        if tokens <= length.max_tokens:
            break
        # boundary effects made it a few tokens long: drop the filler unit nearest the end
        idx = max((i for i, (_, ev) in enumerate(merged) if ev is None), default=None)
        assert idx is not None, "evidence alone was checked to fit"
        merged.pop(idx)
    positions = [0] * len(evidence)
    for i, (_, ev) in enumerate(merged):
        if ev is not None:
            positions[ev] = i
    return Fitted(prompt, tokens, [u for u, _ in merged], positions)


def _trim_to(counter: TokenCounter, unit: str, budget: int) -> str:
    """The longest prefix of ``unit`` made of whole sentences that fits in ``budget`` tokens ("" if none does)."""
    if budget <= 8:
        return ""
    pieces = _SENTENCE_END.split(unit)
    lo, hi, best = 1, len(pieces), ""
    while lo <= hi:
        mid = (lo + hi) // 2
        text = " ".join(pieces[:mid])
        if counter.count(text) <= budget:
            best, lo = text, mid + 1
        else:
            hi = mid - 1
    return best if len(best) > 20 else ""
