"""What every generator shares: the world, the user's sources, the token counter, the length range, filler pools,
and the record it returns."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from .fitting import Fitted, LengthRange, TokenCounter, fit_context
from .records import FAMILIES, RLRecord
from .sources import SourceBundle
from .world import World

__all__ = ["Generator", "TaskTooLong", "ANSWER_INSTRUCTION", "ordinal"]

ANSWER_INSTRUCTION = 'Answer briefly. If you reason first, end with "The answer is: <answer>".'


class TaskTooLong(ValueError):
    """The task's own content does not fit the requested token range."""


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class Generator:
    """Base class: ``generate(index)`` → one :class:`RLRecord`, a pure function of (seed, dataset, index).

    Subclasses set ``name``, ``reward_type`` and ``default_max_tokens`` (the paper's length bucket) and implement
    ``build(rng, index) -> (Fitted, answers, metadata)``."""

    name = ""
    reward_type = "recall"
    default_max_tokens = 65536

    def __init__(
        self,
        counter: TokenCounter,
        length: LengthRange,
        world: World | None = None,
        sources: SourceBundle | None = None,
        seed: int = 0,
    ):
        self.counter = counter
        self.length = length
        self.world = world if world is not None else World(seed)
        self.sources = sources or SourceBundle()
        self.seed = seed
        self.attempt = 0  # which draw of the current item (0 first; generators may vary the item on retries)

    @property
    def family(self) -> str:
        return FAMILIES[self.name]

    @property
    def source_name(self) -> str:
        """Where this generator's items come from with the current sources (shown in the summary)."""
        return "builtin"

    def rng(self, index: int) -> random.Random:
        return random.Random(f"longforge-rl-{self.seed}-{self.name}-{index}")

    def generate(self, index: int, attempts: int = 20) -> RLRecord:
        """One record; retries other draws when a draw is ambiguous or too long, then raises the last error."""
        last: Exception | None = None
        for attempt in range(attempts):
            rng = self.rng(index if attempt == 0 else f"{index}-retry{attempt}")
            self.attempt = attempt
            try:
                fitted, answers, metadata = self.build(rng, index)
            except _Retry as e:
                last = e
                continue
            except TaskTooLong as e:
                last = e  # a smaller draw (fewer needles, another item) may fit
                continue
            return RLRecord(
                id=f"{self.name}-{self.seed}-{index}",
                family=self.family,
                dataset=self.name,
                prompt=fitted.prompt,
                answers=list(answers),
                reward_type=self.reward_type,
                context_tokens=fitted.tokens,
                metadata=metadata,
            )
        if isinstance(last, TaskTooLong):
            raise TaskTooLong(f"{last} (in each of {attempts} draws)")
        raise ValueError(f"{self.name}: could not build item {index} in {attempts} draws: {last}")

    def build(self, rng: random.Random, index: int) -> tuple[Fitted, list[str], dict]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------ helpers
    def fit(self, rng, header: str, evidence: Sequence[str], question: str, filler, **kw) -> Fitted:
        try:
            return fit_context(self.counter, header, evidence, question, filler, self.length, rng, self.name, **kw)
        except ValueError as e:
            raise TaskTooLong(str(e)) from None

    def filler(
        self, rng: random.Random, exclude: set[str] = frozenset(), seen: set[str] | None = None
    ) -> Iterator[str]:
        """Filler documents in a random order: the user's documents when given, else world pages (minus
        ``exclude``, entity ids). ``seen`` collects the ids of world pages handed out. Cycles when exhausted."""
        if self.sources.documents:
            docs = self.sources.documents
            while True:
                for i in rng.sample(range(len(docs)), len(docs)):
                    yield docs[i]
        ids = [e for e in self.world.entities if e not in exclude]
        while ids:
            for eid in rng.sample(ids, len(ids)):
                if seen is not None:
                    seen.add(eid)
                yield self.world.page(eid)


class _Retry(Exception):
    """This draw is unusable (ambiguous answer, tie); draw again."""
