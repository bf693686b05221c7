"""Offline text sources for RULER's haystacks and word lists.

RULER's ``essay`` haystack is the Paul Graham essays, fetched from the web; it cannot ship here. longforge's
essay haystack is **the Python standard library's own documentation**, which exists on every machine with Python:
the language-reference topics that ``help()`` shows (``pydoc_data.topics``) followed by the docstrings of a fixed
list of pure-Python standard-library modules, filtered down to prose paragraphs (no code, grammar or tables).
That is about 60K words of English technical prose; like RULER, longer haystacks repeat it. The text depends on
the Python version only, never on the seed or the machine; `haystack_info()` records the version and a hash in
every results file. Essay-task scores (niah_single_2/3, niah_multikey_1, niah_multivalue, niah_multiquery) are
therefore not comparable with published RULER numbers, which use the essays.

Sentence splitting: RULER uses ``nltk.sent_tokenize`` (Punkt data is a download); here a regular expression splits
after ``.``, ``!`` or ``?`` followed by whitespace and a capital letter, digit or opening quote.

Word lists: RULER draws adjective-noun keys and the CWE vocabulary from the ``wonderwords`` package's bundled lists
(read from its files, as RULER does). When CWE needs more distinct words than wonderwords has (RULER then reads an
8.6 MB ``english_words.json`` that is not downloadable here), the vocabulary of the prose haystack is added, then
pronounceable made-up words — enough for any length.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import random
import re
import sys
import warnings
from functools import lru_cache

NOISE_HAYSTACK = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

# Pure-Python modules present in every CPython build (no Tk, no optional C libraries); order is part of the corpus.
DOCSTRING_MODULES = (
    "abc argparse asyncio base64 bisect calendar collections concurrent.futures configparser contextlib copy csv "
    "dataclasses datetime decimal difflib email enum fractions functools gettext glob hashlib heapq html "
    "http.client inspect io ipaddress itertools json logging mailbox math operator os pathlib pickle pprint queue "
    "random re sched secrets shelve shlex shutil socket statistics string struct subprocess tarfile tempfile "
    "textwrap threading timeit tokenize typing unittest urllib.parse uuid warnings weakref xml.etree.ElementTree "
    "zipfile"
).split()

_MARKUP_LINE = re.compile(r"^\s*(\*{3,}|={3,}|-{3,}|>>>|\.\.\.|\+-)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'“(\[]?[A-Z0-9])")


def _prose_paragraphs(text: str) -> list[str]:
    """Paragraphs of running prose from reStructuredText-like help text: headings, code blocks, doctests, grammar
    productions and tables are dropped; bullets are kept as plain sentences."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.split("\n") if line.strip()]
        if not lines or any(_MARKUP_LINE.match(line) for line in lines):
            continue
        bullet = lines[0].lstrip().startswith(("* ", "- "))
        if all(line.startswith("   ") for line in lines) and not bullet:  # an indented code / grammar block
            continue
        paragraph = re.sub(r"^[*-] ", "", " ".join(line.strip() for line in lines))
        if len(paragraph.split()) < 8 or not paragraph.endswith((".", ":")):
            continue
        if sum(c.isalpha() or c == " " for c in paragraph) / len(paragraph) < 0.85:  # symbols: a signature or table
            continue
        paragraphs.append(paragraph)
    return paragraphs


def _docstrings(module_name: str) -> list[str]:
    try:
        module = importlib.import_module(module_name)
    except ImportError:  # pragma: no cover - every listed module is pure Python and always present
        return []
    docs = [inspect.getdoc(module) or ""]
    with warnings.catch_warnings():  # e.g. typing.io / typing.re warn when touched
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                docs.append(inspect.getdoc(obj) or "")
    return docs


@lru_cache(maxsize=1)
def prose_text() -> str:
    """The essay haystack: prose paragraphs from the Python documentation, in a fixed order, one per line."""
    paragraphs = []
    try:
        from pydoc_data.topics import topics
    except ImportError:  # pragma: no cover - some distributions strip pydoc_data; docstrings alone still work
        topics = {}
    for key in sorted(topics):
        paragraphs += _prose_paragraphs(topics[key])
    for module_name in DOCSTRING_MODULES:
        for doc in _docstrings(module_name):
            paragraphs += _prose_paragraphs(doc)
    return "\n".join(paragraphs)


@lru_cache(maxsize=1)
def prose_words() -> tuple[str, ...]:
    """The essay haystack as RULER uses it: whitespace-normalised, split on single spaces."""
    return tuple(re.sub(r"\s+", " ", prose_text()).strip().split(" "))


def haystack_info() -> dict:
    """Where the essay haystack came from, for results files: source, Python version, size, SHA-256."""
    text = prose_text()
    return {
        "essay_source": "python-stdlib-docs (pydoc_data.topics + docstrings of a fixed module list)",
        "python": sys.version.split()[0],
        "words": len(prose_words()),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }


def split_sentences(text: str) -> list[str]:
    """Split text into sentences (stands in for ``nltk.sent_tokenize``; see the module docstring)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def _wonderwords_list(name: str) -> list[str]:
    try:
        import wonderwords
    except ImportError as e:  # pragma: no cover - wonderwords is a base dependency
        raise ImportError("RULER's word lists come from the `wonderwords` package: pip install wonderwords") from e
    from importlib.resources import files

    text = files(wonderwords).joinpath("assets", name).read_text(encoding="utf-8")
    return [line.rstrip() for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=1)
def key_word_parts() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Sorted unique (adjectives, nouns) for RULER's ``adjective-noun`` keys. There are millions of pairs, so a key
    is drawn as a uniform index into the pair grid instead of materialising the list as RULER does; the
    distribution (uniform over unique pairs) is the same."""
    return tuple(sorted(set(_wonderwords_list("adjectivelist.txt")))), tuple(
        sorted(set(_wonderwords_list("nounlist.txt")))
    )


def random_key_word(rng: random.Random) -> str:
    adjectives, nouns = key_word_parts()
    index = rng.randrange(len(adjectives) * len(nouns))
    return f"{adjectives[index // len(nouns)]}-{nouns[index % len(nouns)]}"


@lru_cache(maxsize=1)
def common_words() -> tuple[str, ...]:
    """RULER CWE's vocabulary: wonderwords nouns + adjectives + verbs, sorted and de-duplicated."""
    words = _wonderwords_list("nounlist.txt") + _wonderwords_list("adjectivelist.txt")
    return tuple(sorted(set(words + _wonderwords_list("verblist.txt"))))


def _made_up_words(count: int, exclude: set[str]) -> list[str]:
    """Deterministic pronounceable non-words (consonant-vowel syllables), never in ``exclude``."""
    rng = random.Random("longforge-cwe-made-up-words")
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    out, seen = [], set(exclude)
    while len(out) < count:
        word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


def extended_words(count: int) -> list[str]:
    """At least ``count`` distinct words for long CWE lists (RULER's ``english_words.json`` fallback): the
    wonderwords vocabulary, then the prose haystack's own lowercase words, then made-up words."""
    words = list(common_words())
    known = set(words)
    for word in sorted({w for w in re.findall(r"\b[a-z]{3,}\b", prose_text())} - known):
        words.append(word)
    if len(words) < count:
        words += _made_up_words(count - len(words), set(words))
    return words
