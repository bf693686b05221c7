"""Reasoning family: LongMath (Beyond Reward Engineering §1.2).

A math problem told as a story whose quantities are stated in ≥ 5 separate fragments scattered through a long,
irrelevant document; the question at the end asks for a value that needs all of them.

Built-in problems come from templates with 5–6 integer variables (the label is computed from the values placed).
User problems (DeepMath-103K ``{question, final_answer}``, MATH ``{problem, solution}``) are cut into ≥ 5 numbered
notes at sentence / clause boundaries and scattered in order; the paper rewrites them as narratives with an LLM and
checks the rewrite with a second one, which needs a model this offline generator does not assume.
"""

from __future__ import annotations

import random
import re

from .base import ANSWER_INSTRUCTION, Generator
from .world import _syllable_name

__all__ = ["LongMath", "MATH_TEMPLATES", "split_fragments"]

MIN_FRAGMENTS = 5


def _bakery(rng):
    p = rng.randint(4, 9)
    v = {"a": rng.randint(3, 12), "b": rng.randint(6, 24), "d": rng.randint(5, 30), "p": p, "c": rng.randint(1, p - 1)}
    return v, v["a"] * v["b"] * v["d"] * (v["p"] - v["c"])


def _orchard(rng):
    t, k = rng.randint(5, 30), rng.randint(20, 90)
    v = {"r": rng.randint(4, 20), "t": t, "k": k, "s": rng.randint(1, 40), "q": rng.randint(2, 9)}
    return v, v["r"] * (v["t"] * v["k"] - v["s"]) * v["q"]


def _journey(rng):
    v = {f"v{i}": rng.randint(20, 120) for i in (1, 2, 3)} | {f"h{i}": rng.randint(1, 9) for i in (1, 2, 3)}
    return v, sum(v[f"v{i}"] * v[f"h{i}"] for i in (1, 2, 3))


def _savings(rng):
    a = rng.randint(100, 2000)
    v = {"a": a, "m": rng.randint(20, 300), "n": rng.randint(3, 24), "w": rng.randint(50, a), "b": rng.randint(10, 500)}
    return v, v["a"] + v["m"] * v["n"] - v["w"] + v["b"]


def _workshop(rng):
    w, c = rng.randint(3, 15), rng.randint(2, 8)
    v = {"w": w, "c": c, "d": rng.randint(3, 20), "e": rng.randint(1, w * c - 1), "p": rng.randint(20, 90)}
    return v, v["d"] * (v["w"] * v["c"] - v["e"]) * v["p"]


def _library(rng):
    v = {
        "k": rng.randint(2, 9),
        "s": rng.randint(10, 60),
        "b": rng.randint(20, 80),
        "g": rng.randint(10, 200),
        "l": rng.randint(1, 50),
    }
    return v, v["k"] * (v["s"] * v["b"] + v["g"] - v["l"])


# name -> (subject pattern, draw(rng) -> (values, answer), fragments, question)
MATH_TEMPLATES = {
    "bakery": (
        "{X}'s Bakery",
        _bakery,
        (
            "Every morning, {S} bakes {a} trays of bread.",
            "Each tray at {S} holds {b} loaves.",
            "That season {S} stayed open for {d} days in a row.",
            "{S} sells every loaf for {p} dollars.",
            "Making one loaf costs {S} {c} dollars in flour and fuel.",
        ),
        "Every loaf {S} baked that season was sold. What was its total profit, in dollars, over the season?",
    ),
    "orchard": (
        "the {X} orchard",
        _orchard,
        (
            "The trees of {S} stand in {r} rows.",
            "Every row of {S} has {t} apple trees.",
            "This autumn each tree in {S} gave {k} apples.",
            "In each row of {S}, {s} apples spoiled before they could be sold.",
            "The good apples of {S} sell for {q} cents each.",
        ),
        "All good apples of {S} were sold. How many cents did they bring in?",
    ),
    "journey": (
        "the courier {X}",
        _journey,
        (
            "On the first leg of the trip, {S} rode at {v1} km/h.",
            "The first leg took {S} {h1} hours.",
            "On the second leg, {S} kept a speed of {v2} km/h.",
            "{S} spent {h2} hours on the second leg.",
            "The third leg was covered by {S} at {v3} km/h.",
            "The third leg took {S} {h3} hours.",
        ),
        "How many kilometres did {S} travel over the three legs?",
    ),
    "savings": (
        "{X}'s savings account",
        _savings,
        (
            "{S} was opened with {a} dollars.",
            "Every month, {m} dollars were paid into {S}.",
            "The monthly payments into {S} went on for {n} months.",
            "Once during that time, {w} dollars were withdrawn from {S}.",
            "At the end, the bank added a bonus of {b} dollars to {S}.",
        ),
        "No other money moved. How many dollars were in {S} at the end?",
    ),
    "workshop": (
        "the {X} workshop",
        _workshop,
        (
            "{S} employs {w} carpenters.",
            "Each carpenter at {S} builds {c} chairs a day.",
            "Last month {S} worked for {d} days.",
            "Every day at {S}, {e} of the chairs built turned out defective and were discarded.",
            "{S} sells each good chair for {p} dollars.",
        ),
        "Every good chair was sold. How many dollars did {S} earn last month?",
    ),
    "library": (
        "the {X} library network",
        _library,
        (
            "{S} has {k} branches.",
            "Each branch of {S} has {s} shelves.",
            "Each shelf in {S} holds {b} books.",
            "This year every branch of {S} received {g} donated books.",
            "Each branch of {S} also lost {l} books this year.",
        ),
        "The donated books were added to the collection. How many books does {S} hold now, over all branches?",
    ),
}

_CLAUSE = re.compile(r"(?<=[,;:])\s+|\s+(?=and\s)")


def split_fragments(problem: str, minimum: int = MIN_FRAGMENTS) -> list[str]:
    """Cut a problem into ≥ ``minimum`` contiguous pieces at sentence, then clause, then word boundaries; the pieces
    joined with spaces give back the problem (whitespace normalised)."""
    words = problem.split()
    if len(words) < minimum:
        raise ValueError(f"a problem of {len(words)} words cannot be cut into {minimum} fragments: {problem!r}")
    pieces = [p for p in re.split(r"(?<=[.!?])\s+", " ".join(words)) if p]
    if len(pieces) < minimum:
        pieces = [c for p in pieces for c in _CLAUSE.split(p) if c]
    if len(pieces) < minimum:
        size = -(-len(words) // minimum)  # ceil
        pieces = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
        while len(pieces) < minimum:  # a short tail: split the longest piece once more
            i = max(range(len(pieces)), key=lambda j: len(pieces[j].split()))
            w = pieces[i].split()
            pieces[i : i + 1] = [" ".join(w[: len(w) // 2]), " ".join(w[len(w) // 2 :])]
    return pieces


def _spread(rng: random.Random, n_filler: int, n_evidence: int) -> list[int]:
    """Distinct insertion slots when there is room, so fragments never sit side by side."""
    if n_filler + 1 >= n_evidence:
        return sorted(rng.sample(range(n_filler + 1), n_evidence))
    return sorted(rng.randint(0, n_filler) for _ in range(n_evidence))


class LongMath(Generator):
    name = "LongMath"
    reward_type = "llm_judge"

    @property
    def source_name(self) -> str:
        return "+".join(sorted({m.source for m in self.sources.math})) if self.sources.math else "builtin"

    def build(self, rng: random.Random, index: int):
        header = "Read the following document carefully; it is long and mostly irrelevant."
        if self.sources.math:
            math = self.sources.math
            prob = math[index % len(math)] if self.attempt == 0 else math[rng.randrange(len(math))]
            pieces = split_fragments(prob.problem)
            n = len(pieces)
            fragments = [f"[Note {i + 1} of {n}] {p}" for i, p in enumerate(pieces)]
            question = (
                f"Question: The document above contains a math problem cut into {n} notes marked [Note 1 of {n}] to "
                f"[Note {n} of {n}]. Put the notes together in order and solve the problem.\n{ANSWER_INSTRUCTION}"
            )
            fitted = self.fit(rng, header, fragments, question, self.filler(rng), keep_order=True, place=_spread)
            meta = {"source": prob.source, "source_id": prob.id, "problem": prob.problem, "fragments": n}
            return fitted, [prob.answer], meta
        template = rng.choice(sorted(MATH_TEMPLATES))
        subject_pattern, draw, fragment_patterns, question_pattern = MATH_TEMPLATES[template]
        subject = subject_pattern.format(X=_syllable_name(rng, 2))
        values, answer = draw(rng)
        fragments = [f.format(S=subject, **values) for f in fragment_patterns]
        fragments = [f[0].upper() + f[1:] for f in fragments]
        q = question_pattern.format(S=subject)
        question = f"Question: The document mentions {subject} in several places. {q}\n{ANSWER_INSTRUCTION}"
        fitted = self.fit(rng, header, fragments, question, self.filler(rng), place=_spread)
        meta = {"template": template, "subject": subject, "values": values, "fragments": fragments}
        return fitted, [str(answer)], meta
