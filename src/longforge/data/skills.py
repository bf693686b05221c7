"""Synthetic long-context skills in RULER's styles, and a synthetic world for multi-hop facts.

Every skill is a function ``skill(rng, tokenizer_or_len_fn, target_tokens, ctx=None) -> Sample`` whose text is at
most ``target_tokens`` tokens long (exactly counted with a tokenizer; estimated with a length function). Following
``reference/teacher_notes.md`` (run C), a sample is *dense*: many needles and many queries, each query followed by
its answer, so a sequence carries many supervised answers; the answers' character ranges are returned so their
tokens can be up-weighted in the loss.

Formats follow RULER (NVIDIA/RULER ``scripts/data/synthetic``: ``niah.py``, ``variable_tracking.py``,
``constants.py``): the needle "One of the special magic {numbers} for {key} is: {value}.", the task template and
the answer prefix, singular wording when one value is asked for, the "noise" haystack (one repeated line), the
"essay" haystack (prose sentences joined by spaces) and the "needle" haystack (every line a distractor needle);
variable tracking as ``VAR ABCDE = 12345`` / ``VAR FGHIJ = VAR ABCDE`` chains in noise with an optional in-context
example. Keys are drawn from longforge's own word lists (:mod:`longforge.data.words`), not RULER's, so evaluation
keys are unseen.

Tokenization contract
    A sample is a sequence of *segments*. Every segment after the first starts with its whole run of whitespace
    and every segment ends with a non-space character, so each boundary is a boundary of the byte-level
    pre-tokenizer: encoding the segments one by one (and caching the repeated ones: noise lines, templates, prose
    sentences) gives exactly the tokens of encoding the whole text. That is what makes the stream fast and the
    token counts exact; ``tests/data`` checks it.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import words

__all__ = [
    "PROBES",
    "SKILLS",
    "RULER_NOISE",
    "Sample",
    "SkillContext",
    "TokenCounter",
    "World",
    "facts",
    "kv",
    "multikey",
    "niah",
    "vt",
]

RULER_NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
# Other repeated filler lines, a little variety so the model does not tie retrieval to RULER's one line.
_ALT_NOISE = (
    "The river runs to the sea. The hills are quiet. The road goes on. Birds fly south in winter.",
    "It was a day like any other. The town woke slowly. Nothing much happened before noon.",
    "Rain fell on the old roof. The lamps were lit early. Somebody was reading by the window.",
)
# A small essay used when no prose is given (SkillContext() without ``essay``).
_FALLBACK_ESSAY = (
    "A library keeps more than books; it keeps the habits of the people who use it.",
    "Most good tools are simple to explain and hard to build.",
    "The first version of a program teaches you what the second version should have been.",
    "When a city grows, its old streets become the shortcuts that only residents know.",
    "Writing a clear sentence is mostly deciding what not to say.",
    "A map is useful precisely because it leaves things out.",
    "People remember stories far better than they remember lists.",
    "Every measurement carries the assumptions of the instrument that made it.",
    "The harbour was busy in the morning and almost empty by the afternoon.",
    "Small experiments, repeated often, beat large plans that are never tested.",
    "The committee met twice a year and agreed on very little.",
    "An old bridge is a record of what the builders feared the river would do.",
)

_NIAH_NEEDLE = "One of the special magic {type_v} for {key} is: {value}."
_NIAH_HEADER = (
    "Some special magic {type_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_v} afterwards."
)
_NIAH_QUESTION = (
    "What are all the special magic {type_v} for {query} mentioned in the provided text?"
    " The special magic {type_v} for {query} mentioned in the provided text are"
)
_VT_HEADER = "Memorize and track the chain(s) of variable assignment hidden in the following text."
_VT_QUESTION = "Question: Find all variables that are assigned the value {query} in the text above."
_VT_ANSWER_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, "
    "{num_v} variables are assigned the value {query}, they are:"
)


def _singular(template: str) -> str:
    """RULER's singular wording when one value is asked for (``niah.py``: Some->A, are all->is, are->is).

    Applied to the template *before* it is filled in, as RULER does, so keys such as "square-bear" stay intact.
    """
    return template.replace("Some", "A").replace("are all", "is").replace("are", "is")


_NIAH_HEADER_ONE = _singular(_NIAH_HEADER)
_NIAH_QUESTION_ONE = _singular(_NIAH_QUESTION)


# ------------------------------------------------------------------------------------------ samples and counting

Segment = tuple[str, "tuple[int, int] | None"]  # (text, answer character range within the text, or None)


@dataclass
class Sample:
    """A training document: ``text``, the character ranges of its answers, and how it splits into segments."""

    text: str
    answer_spans: list[tuple[int, int]]
    segments: tuple[Segment, ...] = ()
    skill: str = ""


# Pieces that tokenize independently with the corpus tokenizer: single digits (the Digits pre-tokenizer isolates
# them before anything else) and words with their leading whitespace run (byte-level BPE never merges across a
# non-space -> space boundary). Only ASCII whitespace splits, so the rule holds whatever the regex engine's \s is.
_PIECE = re.compile(r"[0-9]|[ \t\n\r\f\v]*[^ \t\n\r\f\v0-9]+|[ \t\n\r\f\v]+")


# Segment sequences with every kind of boundary the skills produce; a tokenizer is "segmentable" when encoding
# them piece by piece (and word by word) gives the tokens of the joined text.
_SEGMENT_PROBES = (
    ("Some text.", "\nOne of the special magic numbers for", " dusty-lantern is: 1234567.", "\nWhat is it? It is"),
    ("they are:", "  ABCDE FGHIJ", "\n\nQuestion: x 42", "\n The grass is green.", "  VAR QRS = VAR TUV"),
    ("The value", " 3b0c9f2e-1d4a-4c5e-8f6a-0b1c2d3e4f5a.", " Answer: Kestria.", "\tend,", "\r\nnext (a) [b]"),
)


class TokenCounter:
    """Counts text pieces in tokens and, with a tokenizer, encodes and caches them.

    Built from a ``PreTrainedTokenizerFast`` / ``tokenizers.Tokenizer`` (exact counts, cached ids) or from a
    ``len_fn(text) -> int`` (estimates; used to make tokenizer-training text before a tokenizer exists).

    Speed: a call into the tokenizer costs ~50 us whatever the length, so an uncached ASCII text is split into
    words and digits (:data:`_PIECE`), each encoded once and cached. That, and encoding a sample segment by
    segment, is exact for the corpus tokenizer (digits split, byte-level). ``segmentable`` says whether it holds for
    this tokenizer (checked on probe strings); when it does not (another model's tokenizer may merge across those
    boundaries), texts are encoded whole and counts of joined segments are estimates.
    """

    def __init__(self, tokenizer_or_len_fn, max_cache: int = 2_000_000):
        backend = getattr(tokenizer_or_len_fn, "backend_tokenizer", None)
        if backend is None and hasattr(tokenizer_or_len_fn, "encode_batch"):
            backend = tokenizer_or_len_fn  # a raw tokenizers.Tokenizer
        if backend is None and not callable(tokenizer_or_len_fn):
            raise ValueError("tokenizer_or_len_fn: expected a fast tokenizer or a callable text -> token count")
        self._backend = backend
        self._len_fn = None if backend is not None else tokenizer_or_len_fn
        self._cache: dict[str, np.ndarray] = {}
        self._pieces: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._max_cache = max_cache
        self._split_words = True
        self.segmentable = backend is not None and self._check_segmentable()
        self._split_words = self.segmentable

    @property
    def exact(self) -> bool:
        return self._backend is not None

    def _piece(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        cached = self._pieces.get(text)
        if cached is None:
            if len(self._pieces) >= self._max_cache:
                self._pieces.clear()  # outputs never depend on the caches, only the speed does
            encoding = self._backend.encode(text, add_special_tokens=False)
            cached = (encoding.ids, encoding.offsets)
            self._pieces[text] = cached
        return cached

    def _check_segmentable(self) -> bool:
        for segments in _SEGMENT_PROBES:
            whole = self._backend.encode("".join(segments), add_special_tokens=False).ids
            if [i for segment in segments for i in self.ids(segment)] != whole:
                self._cache.clear()
                self._pieces.clear()
                return False
        return True

    def _split(self, text: str) -> list[str]:
        return _PIECE.findall(text) if self._split_words and text.isascii() else [text]

    def ids(self, text: str) -> np.ndarray:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        if self._backend is None:
            raise ValueError("this TokenCounter was built from a length function and cannot encode text")
        if len(self._cache) >= self._max_cache:
            self._cache.clear()
        ids: list[int] = []
        for piece in self._split(text):
            ids += self._piece(piece)[0]
        array = np.array(ids, dtype=np.int32)
        self._cache[text] = array
        return array

    def count(self, text: str) -> int:
        return len(self.ids(text)) if self._backend is not None else int(self._len_fn(text))

    def answer_mask(self, text: str, span: tuple[int, int]) -> np.ndarray:
        """Which tokens of ``text`` overlap the character range ``span``."""
        mask, pos = [], 0
        for piece in self._split(text):
            mask += [s + pos < span[1] and e + pos > span[0] for s, e in self._piece(piece)[1]]
            pos += len(piece)
        return np.array(mask, dtype=bool)


def as_counter(tokenizer_or_len_fn) -> TokenCounter:
    return tokenizer_or_len_fn if isinstance(tokenizer_or_len_fn, TokenCounter) else TokenCounter(tokenizer_or_len_fn)


class _Builder:
    """Collects segments and their token count; checks the segment-boundary contract."""

    def __init__(self, counter: TokenCounter):
        self.counter = counter
        self.segments: list[Segment] = []
        self.tokens = 0

    def add(self, text: str, answer: tuple[int, int] | None = None) -> None:
        assert text and not text[-1].isspace(), f"segment must end with a non-space character: {text!r}"
        assert not self.segments or text[0].isspace(), f"segment must start with whitespace: {text!r}"
        self.segments.append((text, answer))
        self.tokens += self.counter.count(text)

    def add_answer(self, prefix_ws: str, answer: str, suffix: str = "") -> None:
        self.add(prefix_ws + answer + suffix, (len(prefix_ws), len(prefix_ws) + len(answer)))

    def sample(self, skill: str) -> Sample:
        spans, pos = [], 0
        for text, span in self.segments:
            if span is not None:
                spans.append((pos + span[0], pos + span[1]))
            pos += len(text)
        return Sample("".join(t for t, _ in self.segments), spans, tuple(self.segments), skill)


# -------------------------------------------------------------------------------------------- world and context


class World:
    """The synthetic world: people, cities, countries and companies with invented names, fixed by ``seed``.

    Only the *names* are fixed. Each facts sample draws fresh relations between them (who lives where, who works
    for whom), so the answers can only be read from the context, never recalled from training.
    """

    def __init__(self, seed: int = 0, num_people: int = 2000, num_cities: int = 400, num_countries: int = 60):
        rng = random.Random(f"longforge-world-{seed}")
        self.people = _unique(
            rng, num_people, lambda: f"{rng.choice(words.FIRST_NAMES)} {rng.choice(words.LAST_NAMES)}"
        )
        self.cities = _unique(
            rng,
            num_cities,
            lambda: rng.choice(words.PLACE_ONSETS) + rng.choice(words.PLACE_MIDDLES) + rng.choice(words.PLACE_ENDINGS),
        )
        self.countries = _unique(
            rng, num_countries, lambda: rng.choice(words.PLACE_ONSETS) + rng.choice(words.COUNTRY_ENDINGS)
        )
        self.companies = _unique(
            rng,
            num_cities,
            lambda: (
                rng.choice(words.PLACE_ONSETS)
                + rng.choice(("ex", "on", "ix", "ar", "is", "ant"))
                + " "
                + rng.choice(words.COMPANY_WORDS)
            ),
        )


def _unique(rng: random.Random, n: int, make: Callable[[], str]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for _ in range(n * 20):
        out[make()] = None
        if len(out) == n:
            break
    return tuple(out)


@dataclass
class SkillContext:
    """What skills draw from besides the RNG: essay sentences (haystacks), a word pool for keys, the world."""

    essay: Sequence[str] = _FALLBACK_ESSAY
    word_pool: Sequence[str] = ()
    world: World = field(default_factory=World)

    @staticmethod
    def from_sentences(sentences: Sequence[str], world_seed: int = 0) -> SkillContext:
        """Context whose essay is ``sentences`` and whose extra key words are their plain lowercase words."""
        pool: dict[str, int] = {}
        for sentence in sentences[:50_000]:
            for word in sentence.split():
                if word.isalpha() and word.islower() and 4 <= len(word) <= 10:
                    pool[word] = pool.get(word, 0) + 1
        common = sorted(w for w, c in pool.items() if c >= 3)
        return SkillContext(essay=tuple(sentences) or _FALLBACK_ESSAY, word_pool=tuple(common), world=World(world_seed))


_DEFAULT_CONTEXT: SkillContext | None = None


def _context(ctx: SkillContext | None) -> SkillContext:
    global _DEFAULT_CONTEXT
    if ctx is not None:
        return ctx
    if _DEFAULT_CONTEXT is None:
        _DEFAULT_CONTEXT = SkillContext()
    return _DEFAULT_CONTEXT


# ------------------------------------------------------------------------------------------------ random values


def _number(rng: random.Random, digits: int = 7) -> str:
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _word_key(rng: random.Random, ctx: SkillContext) -> str:
    # Mostly adjective-noun as in RULER; one key in five takes a word from the prose, so keys at evaluation time
    # (RULER's own word lists) are not all out of distribution.
    if ctx.word_pool and rng.random() < 0.2:
        if rng.random() < 0.5:
            return f"{rng.choice(words.ADJECTIVES)}-{rng.choice(ctx.word_pool)}"
        return f"{rng.choice(ctx.word_pool)}-{rng.choice(words.NOUNS)}"
    return f"{rng.choice(words.ADJECTIVES)}-{rng.choice(words.NOUNS)}"


def _random_value(rng: random.Random, kind: str, ctx: SkillContext) -> str:
    if kind == "numbers":
        return _number(rng)
    if kind == "uuids":
        return _uuid(rng)
    if kind == "words":
        return _word_key(rng, ctx)
    raise ValueError(f"value kind must be one of numbers, uuids, words; got {kind!r}")


def _near_duplicate(rng: random.Random, key: str) -> str:
    """A key that differs from ``key`` in one word: the multi-key distractor of teacher_notes."""
    adj, _, noun = key.partition("-")
    if rng.random() < 0.5:
        return f"{adj}-{rng.choice(words.NOUNS)}"
    return f"{rng.choice(words.ADJECTIVES)}-{noun}"


def _join_list(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", and " + items[-1]


# ---------------------------------------------------------------------------------------------------- haystacks


def _fill_context(
    builder: _Builder,
    rng: random.Random,
    kind: str,
    ctx: SkillContext,
    inserts: Sequence[str],
    budget: int,
    needle_like=None,
) -> None:
    """Add a haystack of ``kind`` with ``inserts`` (needles) at random depths, using at most ``budget`` tokens.

    Items are joined by newlines (noise, needle haystacks) or spaces (essay), as RULER does; the first item follows
    the template's newline.
    """
    sep = " " if kind == "essay" else "\n"
    counter = builder.counter
    free = budget - sum(counter.count(sep + x) for x in inserts) - 1
    if kind == "essay":  # consecutive sentences (they differ in length) while they fit
        start = rng.randrange(len(ctx.essay))
        items = []
        for i in range(len(ctx.essay) * 4):
            sentence = ctx.essay[(start + i) % len(ctx.essay)]
            free -= counter.count(sep + sentence)
            if free < 0:
                break
            items.append(sentence)
    elif kind == "needle":
        line_tokens = max(1, counter.count(sep + needle_like()))
        items = [needle_like() for _ in range(max(0, free) // line_tokens)]
    else:
        line = RULER_NOISE if kind == "noise" else rng.choice(_ALT_NOISE)
        items = [line] * (max(0, free) // max(1, counter.count(sep + line)))
    depths = sorted(rng.random() for _ in inserts)
    # Trim until the whole context fits: the first item and the needle-haystack lines vary by a token or two.
    while True:
        sequence = list(items)
        for depth, text in zip(reversed(depths), reversed(inserts)):
            sequence.insert(round(depth * len(items)), text)
        parts = [("\n" if i == 0 else sep) + text for i, text in enumerate(sequence)]
        total = sum(counter.count(p) for p in parts)
        if total <= budget or not items:
            break
        per_item = max(1, total // len(parts))
        items = items[: len(items) - max(1, (total - budget) // per_item)]
    for part in parts:
        builder.add(part)


# ------------------------------------------------------------------------------------------------ needle skills


def _needle_sample(
    rng: random.Random,
    counter: TokenCounter,
    target_tokens: int,
    ctx: SkillContext,
    *,
    skill: str,
    haystack: str,
    n_keys: int,
    n_queries: int,
    key_kind: str = "words",
    value_kind: str = "numbers",
    values_per_key: int = 1,
    near_duplicates: int = 0,
) -> Sample:
    """RULER needle-in-a-haystack with ``n_keys`` needle keys of which ``n_queries`` are asked, one after another."""

    def make_key() -> str:
        return _random_value(rng, key_kind, ctx) if key_kind != "words" else _word_key(rng, ctx)

    while True:
        keys: dict[str, None] = {}
        while len(keys) < n_keys:
            keys[make_key()] = None
        queried = list(keys)[:n_queries]
        if key_kind == "words":
            for key in queried:
                for _ in range(near_duplicates):
                    keys.setdefault(_near_duplicate(rng, key), None)
        values = {k: [_random_value(rng, value_kind, ctx) for _ in range(values_per_key if k in queried else 1)]
                  for k in keys}  # fmt: skip
        needles = [(k, v) for k in keys for v in values[k]]
        rng.shuffle(needles)  # the context holds the needles in this order: answers list values in it too
        for key in queried:
            values[key] = [v for k, v in needles if k == key]
        needles = [_NIAH_NEEDLE.format(type_v=value_kind, key=k, value=v) for k, v in needles]
        one_value = values_per_key == 1  # each question asks for one value: RULER's singular wording
        singular_type = value_kind[:-1]  # "number"

        builder = _Builder(counter)
        if n_queries == 1 and one_value:
            builder.add(_NIAH_HEADER_ONE.format(type_v=singular_type))
        else:
            builder.add(_NIAH_HEADER.format(type_v=value_kind))
        questions = []
        for key in queried:
            if one_value:
                question = _NIAH_QUESTION_ONE.format(type_v=singular_type, query=key)
            else:
                question = _NIAH_QUESTION.format(type_v=value_kind, query=key)
            questions.append(("\n" + question, _join_list(values[key])))
        fixed = builder.tokens + sum(counter.count(q) + counter.count(" " + a + ".") for q, a in questions)
        needle_cost = sum(counter.count("\n" + n) for n in needles)
        if fixed + needle_cost + 8 <= target_tokens or n_keys + values_per_key + near_duplicates == 2:
            break
        n_keys, n_queries = max(1, n_keys // 2), max(1, n_queries // 2)
        near_duplicates, values_per_key = near_duplicates // 2, max(1, values_per_key // 2)

    def needle_like() -> str:  # a distractor line of the "needle" haystack (multikey_2 style)
        while True:
            key = make_key()
            if key not in keys:
                return _NIAH_NEEDLE.format(type_v=value_kind, key=key, value=_random_value(rng, value_kind, ctx))

    _fill_context(builder, rng, haystack, ctx, needles, target_tokens - fixed, needle_like)
    for question, answer in questions:
        builder.add(question)
        builder.add_answer(" ", answer, ".")
    _check_fits(builder, target_tokens, skill)
    return builder.sample(skill)


def _check_fits(builder: _Builder, target_tokens: int, skill: str) -> None:
    if builder.counter.exact and builder.tokens > target_tokens:
        raise ValueError(f"{skill}: target_tokens={target_tokens} is too small for one needle and one question")


def _count_cap(target_tokens: int, per_item: int, share: float, cap: int) -> int:
    return max(1, min(cap, int(target_tokens * share) // per_item))


def _log_uniform_int(rng: random.Random, high: int) -> int:
    """1..high, small values as likely as large ones on a log scale (so 1 and 2 needles stay common)."""
    return max(1, min(high, int(round(2 ** rng.uniform(0, np.log2(max(1, high)))))))


def niah(rng: random.Random, tokenizer_or_len_fn, target_tokens: int, ctx: SkillContext | None = None) -> Sample:
    """Needle retrieval: 1-32 word-key/7-digit needles in noise, essay or needle haystacks; 1-16 queries answered."""
    ctx = _context(ctx)
    # Dense supervision (teacher_notes run C): up to 16 questions, each answered, over up to 32 needles; one
    # question (the evaluation's shape) stays the most common case.
    n_queries = min(rng.choice((1, 1, 2, 4, 8, 16)), _count_cap(target_tokens, 45, 0.3, 16))
    n_keys = max(n_queries, _log_uniform_int(rng, _count_cap(target_tokens, 24, 0.25, 32)))
    haystack = rng.choices(("noise", "essay", "needle", "alt_noise"), weights=(0.35, 0.45, 0.1, 0.1))[0]
    values_per_key = 1 if rng.random() < 0.85 else rng.randint(2, 4)  # niah_multivalue
    return _needle_sample(
        rng,
        as_counter(tokenizer_or_len_fn),
        target_tokens,
        ctx,
        skill="niah",
        haystack=haystack,
        n_keys=n_keys,
        n_queries=n_queries,
        values_per_key=values_per_key,
    )


def multikey(rng: random.Random, tokenizer_or_len_fn, target_tokens: int, ctx: SkillContext | None = None) -> Sample:
    """Multi-key retrieval: each asked key has near-identical distractor keys (one word changed) plus random ones."""
    ctx = _context(ctx)
    n_queries = rng.choice((1, 1, 2, 4))
    n_keys = n_queries + rng.randint(1, _count_cap(target_tokens, 24, 0.15, 8))
    haystack = rng.choices(("essay", "noise", "needle"), weights=(0.6, 0.25, 0.15))[0]
    return _needle_sample(
        rng,
        as_counter(tokenizer_or_len_fn),
        target_tokens,
        ctx,
        skill="multikey",
        haystack=haystack,
        n_keys=n_keys,
        n_queries=n_queries,
        near_duplicates=rng.randint(1, 3),
    )


def kv(rng: random.Random, tokenizer_or_len_fn, target_tokens: int, ctx: SkillContext | None = None) -> Sample:
    """Key-value retrieval with uuid values (RULER niah_single_3 / niah_multikey_3 styles)."""
    ctx = _context(ctx)
    key_kind = rng.choice(("words", "words", "uuids")) if target_tokens >= 512 else "words"  # uuid pairs are long
    n_keys = _log_uniform_int(rng, _count_cap(target_tokens, 60, 0.3, 12))
    n_queries = min(n_keys, rng.choice((1, 2, 4)))
    haystack = rng.choices(("essay", "noise", "needle"), weights=(0.5, 0.3, 0.2))[0]
    return _needle_sample(
        rng,
        as_counter(tokenizer_or_len_fn),
        target_tokens,
        ctx,
        skill="kv",
        haystack=haystack,
        n_keys=n_keys,
        n_queries=n_queries,
        key_kind=key_kind,
        value_kind="uuids",
    )


# --------------------------------------------------------------------------------------------- variable tracking


def _vt_chains(rng: random.Random, num_chains: int, num_hops: int, name_len: int) -> tuple[list, list, list]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    names: dict[str, None] = {}
    while len(names) < num_chains * (num_hops + 1):
        names["".join(rng.choice(letters) for _ in range(name_len))] = None
    names_list = list(names)
    chains, statements, values = [], [], []
    for c in range(num_chains):
        chain = names_list[c * (num_hops + 1) : (c + 1) * (num_hops + 1)]
        value = str(rng.randint(10000, 99999))
        chains.append(chain)
        values.append(value)
        statements.append(
            [f"VAR {chain[0]} = {value}"] + [f"VAR {chain[j + 1]} = VAR {chain[j]}" for j in range(num_hops)]
        )
    return chains, statements, values


def _vt_block(
    builder: _Builder,
    rng: random.Random,
    budget: int,
    num_chains: int,
    num_hops: int,
    n_queries: int,
    name_len: int,
    first: bool,
) -> None:
    """One VT task: header, noise with the chains inserted at sorted random positions, then questions + answers.

    The text is RULER's: noise lines end with a newline, items are joined by spaces, hop statements end with a
    space (``"VAR B = VAR A "``), so the separators below reproduce exactly the same characters.
    """
    counter = builder.counter
    head = ("" if first else "\n\n\n\n") + _VT_HEADER
    while True:  # fewer chains, then fewer hops, until the task fits without noise
        chains, statements, values = _vt_chains(rng, num_chains, num_hops, name_len)
        qa = []
        for c in rng.sample(range(num_chains), min(n_queries, num_chains)):
            question = _VT_QUESTION.format(query=values[c])
            prefix = _VT_ANSWER_PREFIX.format(num_v=len(chains[c]), query=values[c])
            qa.append((question + prefix, " ".join(chains[c])))
        fixed = counter.count(head) + sum(counter.count("\n" + q) + counter.count("  " + a) for q, a in qa)
        stmt_cost = sum(counter.count("  " + s) for chain in statements for s in chain)
        if fixed + stmt_cost + 4 <= budget or num_chains + num_hops == 2:
            break
        num_chains, num_hops = (num_chains - 1, num_hops) if num_chains > 1 else (1, num_hops - 1)
    line_cost = counter.count("\n " + RULER_NOISE)
    num_noise = max(0, (budget - fixed - stmt_cost - 4) // line_cost)
    while True:
        items = [RULER_NOISE + "\n"] * num_noise
        for chain in statements:
            positions = sorted(rng.randrange(len(items) + 1) for _ in chain)
            for j, (pos, stmt) in enumerate(zip(positions, chain)):
                items.insert(pos + j, stmt + (" " if j > 0 else ""))
        # " ".join(items): each separator is the previous item's trailing whitespace plus one space.
        parts = ["\n\n" + items[0].rstrip()]  # the template's "\n\n{context}"
        for prev, item in zip(items, items[1:]):
            parts.append(prev[len(prev.rstrip()) :] + " " + item.rstrip())
        tail = items[-1][len(items[-1].rstrip()) :]
        total = counter.count(head) + sum(counter.count(p) for p in parts)
        total += sum(counter.count(tail + "\n" + q) + counter.count("  " + a) for q, a in qa)
        if total <= budget or num_noise == 0:
            break
        num_noise = max(0, num_noise - max(1, (total - budget) // line_cost + 1))
    builder.add(head)
    for part in parts:
        builder.add(part)
    for i, (question, answer) in enumerate(qa):
        builder.add((tail if i == 0 else "") + "\n" + question)
        builder.add_answer("  ", answer)  # the prefix ends with ": " and RULER adds " " before the names


def vt(rng: random.Random, tokenizer_or_len_fn, target_tokens: int, ctx: SkillContext | None = None) -> Sample:
    """Variable tracking (RULER vt): 1-3 chains of 1-6 hops in noise, an in-context example half of the time."""
    counter = as_counter(tokenizer_or_len_fn)
    builder = _Builder(counter)
    num_chains = rng.choice((1, 1, 2, 3)) if target_tokens >= 512 else 1
    num_hops = rng.choice((2, 3, 4, 4, 4, 5, 6)) if target_tokens >= 384 else rng.randint(1, 3)
    n_queries = rng.randint(1, num_chains)
    if target_tokens >= 1024 and rng.random() < 0.5:
        # RULER prepends one solved example (3-letter names, ~500 tokens) before the real task.
        _vt_block(builder, rng, min(480, target_tokens // 4), 1, num_hops, 1, 3, first=True)
        remaining = target_tokens - builder.tokens
        _vt_block(builder, rng, remaining, num_chains, num_hops, n_queries, 5, first=False)
    else:
        _vt_block(builder, rng, target_tokens, num_chains, num_hops, n_queries, 5, first=True)
    _check_fits(builder, target_tokens, "vt")
    return builder.sample("vt")


# ------------------------------------------------------------------------------------------- multi-hop facts

_LIVES = ("{p} lives in {c}.", "{p} has a home in {c}.", "{p} moved to {c} some years ago and still lives there.")
_IN_COUNTRY = ("{c} is a city in {k}.", "{c} lies in {k}.", "The city of {c} is part of {k}.")
_WORKS = ("{p} works for {m}.", "{p} is employed by {m}.", "{p} has a job at {m}.")
_BASED = ("{m} is based in {c}.", "The headquarters of {m} are in {c}.", "{m} has its main office in {c}.")
_FRIEND = ("The best friend of {p} is {q}.", "{q} is the best friend of {p}.")


def facts(rng: random.Random, tokenizer_or_len_fn, target_tokens: int, ctx: SkillContext | None = None) -> Sample:
    """Multi-hop questions over facts about the world's people, cities, countries and companies (1-3 hops)."""
    ctx = _context(ctx)
    counter = as_counter(tokenizer_or_len_fn)
    world = ctx.world
    n_people = _log_uniform_int(rng, _count_cap(target_tokens, 45, 0.4, 16))
    while True:
        people = rng.sample(world.people, n_people)
        cities = rng.sample(world.cities, max(2, n_people))
        companies = rng.sample(world.companies, max(1, (n_people + 1) // 2))
        lives = {p: rng.choice(cities) for p in people}
        country = {c: rng.choice(world.countries) for c in cities}
        works = {p: rng.choice(companies) for p in people}
        based = {m: rng.choice(cities) for m in companies}
        friend = {p: rng.choice([q for q in people if q != p]) for p in people} if n_people > 1 else {}
        statements = [rng.choice(_LIVES).format(p=p, c=lives[p]) for p in people]
        statements += [rng.choice(_WORKS).format(p=p, m=works[p]) for p in people]
        statements += [rng.choice(_IN_COUNTRY).format(c=c, k=country[c]) for c in cities]
        statements += [rng.choice(_BASED).format(m=m, c=based[m]) for m in companies]
        statements += [rng.choice(_FRIEND).format(p=p, q=q) for p, q in friend.items()]
        rng.shuffle(statements)
        questions = []
        for p in rng.sample(people, min(n_people, rng.choice((1, 2, 4, 8)))):
            options = [
                (f"In which city does {p} live?", lives[p]),
                (f"Which company does {p} work for?", works[p]),
                (f"In which country does {p} live?", country[lives[p]]),
                (f"In which city is the company that {p} works for based?", based[works[p]]),
                (f"In which country is the company that {p} works for based?", country[based[works[p]]]),
            ]
            if p in friend:
                options += [
                    (f"In which city does the best friend of {p} live?", lives[friend[p]]),
                    (f"In which country does the best friend of {p} live?", country[lives[friend[p]]]),
                ]
            questions.append(rng.choice(options))
        header = (
            "Read the following text carefully. It states facts about people, cities, countries and companies. "
            "Answer the questions that follow using only those facts."
        )
        fixed = counter.count(header)
        fixed += sum(counter.count(f"\nQuestion: {q} Answer:") + counter.count(f" {a}.") for q, a in questions)
        if fixed + sum(counter.count("\n" + s) for s in statements) + 8 <= target_tokens or n_people == 1:
            break
        n_people = max(1, n_people // 2)
    builder = _Builder(counter)
    builder.add(header)
    haystack = rng.choices(("essay", "noise"), weights=(0.7, 0.3))[0]
    _fill_context(builder, rng, haystack, ctx, statements, target_tokens - fixed)
    for question, answer in questions:
        builder.add(f"\nQuestion: {question} Answer:")
        builder.add_answer(" ", answer, ".")
    _check_fits(builder, target_tokens, "facts")
    return builder.sample("facts")


# --------------------------------------------------------------------------------------------------- registries

SKILLS: dict[str, Callable[..., Sample]] = {"niah": niah, "multikey": multikey, "kv": kv, "vt": vt, "facts": facts}


def _probe(**kwargs):
    def probe(rng, tokenizer_or_len_fn, target_tokens, ctx=None):
        return _needle_sample(rng, as_counter(tokenizer_or_len_fn), target_tokens, _context(ctx), **kwargs)

    return probe


def _vt_probe(rng, tokenizer_or_len_fn, target_tokens, ctx=None):
    builder = _Builder(as_counter(tokenizer_or_len_fn))
    if target_tokens >= 1024:  # RULER's in-context example, as in vt() above
        _vt_block(builder, rng, min(480, target_tokens // 4), 1, 4, 1, 3, first=True)
    _vt_block(builder, rng, target_tokens - builder.tokens, 1, 4, 1, 5, first=not builder.segments)
    _check_fits(builder, target_tokens, "vt_probe")
    return builder.sample("vt")


# Evaluation-shaped samples (one query, RULER's task settings) for cheap retrieval probes during training: with
# teacher forcing, "every answer token is the argmax" is exactly greedy decoding's exact match on the answer.
PROBES: dict[str, Callable[..., Sample]] = {
    "niah_single_1": _probe(skill="niah_single_1", haystack="noise", n_keys=1, n_queries=1),
    "niah_single_2": _probe(skill="niah_single_2", haystack="essay", n_keys=1, n_queries=1),
    "niah_single_3": _probe(skill="niah_single_3", haystack="essay", n_keys=1, n_queries=1, value_kind="uuids"),
    "niah_multikey_1": _probe(skill="niah_multikey_1", haystack="essay", n_keys=4, n_queries=1),
    "vt": _vt_probe,
}
