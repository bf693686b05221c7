"""Every generator's label is re-derived here from the prompt it wrote (or from the facts it placed), independently
of the generator's own logic; determinism by seed; length fitting."""

from __future__ import annotations

import json
import re

import pytest

from longforge.data.rl import (
    DATASETS,
    TAXONOMY,
    LengthRange,
    TokenCounter,
    build_generators,
    fit_context,
    resolve,
)
from longforge.data.rl.world import facts_of_pages
from longforge.train.rewards import normalize_answer

MAX = 2600
N = 4


@pytest.fixture(scope="module")
def gens(tokenizer):
    return build_generators(tokenizer, max_tokens=MAX, seed=3)


@pytest.fixture(scope="module")
def records(gens):
    return {name: [g.generate(i) for i in range(N)] for name, g in gens.items()}


def units(prompt: str) -> list[str]:
    return prompt.split("\n\n")


# ------------------------------------------------------------------------------------------------ a page parser


def parse_pages(prompt: str) -> dict[str, str]:
    """title -> page text for every unit that looks like a world page (title line, then prose)."""
    pages = {}
    for u in units(prompt):
        if "\n" in u:
            title, body = u.split("\n", 1)
            pages[title] = body
    return pages


def person_facts(pages: dict[str, str], name: str) -> dict:
    body = pages[name]
    birth = int(re.search(re.escape(name) + r" \(born (\d+)\)", body).group(1))
    award_year = int(re.search(r"In (\d+), " + re.escape(name) + " received the", body).group(1))
    return {"birth": birth, "award_year": award_year}


def test_all_eight_datasets(records):
    assert list(records) == list(DATASETS)
    families = {r.dataset: r.family for rs in records.values() for r in rs}
    assert families["FuzzyNeedle"] == families["MultiNeedle"] == "retrieval"
    assert families["LongMath"] == "reasoning"
    for rs in records.values():
        for r in rs:
            assert r.answers and all(a.strip() for a in r.answers)
            assert r.prompt.rstrip().endswith((".", "?", '".')), r.prompt[-80:]


def test_fuzzy_needle(records):
    for r in records["FuzzyNeedle"]:
        m = re.search(r"Question: (.+)\? Give the person's full name", r.prompt)
        question = m.group(1)
        domain, category = next(
            (d, c) for d, cats in TAXONOMY.items() for c in cats if question.endswith(" " + c) or f" {c}" in question
        )
        name = r.answers[0]
        # every sentence of the context that names an item of the asked category is about the answer person ...
        sentences = re.split(r"(?<=\.)\s+", r.prompt)
        hits = [s for s in sentences if any(re.search(rf"\b{re.escape(i)}\b", s) for i in TAXONOMY[domain][category])]
        assert hits and all(name in s for s in hits), (category, hits)
        # ... and there are distractors from sibling categories, worded the same way
        siblings = [i for c, items in TAXONOMY[domain].items() if c != category for i in items]
        distractors = [s for s in sentences if any(re.search(rf"\b{re.escape(i)}\b", s) for i in siblings)]
        assert len(distractors) >= 3
        assert name not in " ".join(distractors)
        # an IS-A paraphrase: the question never names the item
        assert not any(i in question for i in TAXONOMY[domain][category])


def test_multi_needle(records):
    for r in records["MultiNeedle"]:
        m = re.search(r"the (\d+)\w\w (.+?) about (\w+) that the assistant wrote", r.prompt)
        k, fmt, topic = int(m.group(1)), m.group(2), m.group(3)
        request = f"User: Write a {fmt} about {topic}.\nAssistant: "
        responses = [u[len(request) :] for u in units(r.prompt) if u.startswith(request)]
        assert len(responses) >= k >= 1
        assert r.answers == [responses[k - 1]]
        near = [u for u in units(r.prompt) if u.startswith("User: Write a") and (fmt in u or topic in u)]
        assert len(near) > len(responses)  # near-duplicates are there


def _derived_from_pages(pages, kind, name):
    if kind == "age_at_award":
        f = person_facts(pages, name)
        return f["award_year"] - f["birth"]
    body = pages[name]
    if kind == "director_age_at_release":
        year = int(re.search(r"film released in (\d+)", body).group(1))
        director = re.search(r"It was directed by (.+?)\.", body).group(1)
        return year - person_facts(pages, director)["birth"]
    if kind == "author_age_at_publication":
        year = int(re.search(r"first published in (\d+)", body).group(1))
        author = re.search(r" by ([^.]+?)\.", body).group(1)
        return year - person_facts(pages, author)["birth"]
    year = int(re.search(r"It was founded in (\d+)", body).group(1))
    city = re.search(r"headquartered in (.+?)\.", body).group(1)
    city_year = int(re.search(r"(?:founded|The town was founded) in (\d+)", pages[city]).group(1))
    return year - city_year


def test_cross_entity(records):
    for r in records["CrossEntity"]:
        meta = r.metadata
        pages = parse_pages(r.prompt)
        values = {name: _derived_from_pages(pages, meta["derived"], name) for name in meta["peers"]}
        for name, v in values.items():  # a derived value is never stated in the text
            assert str(v) not in pages[name].split(), (name, v)
        if meta["ask"] == "value":
            assert r.answers == [str(values[meta["peers"][0]])]
        else:
            pick = min if meta["ask"] in ("youngest", "fewest") else max
            best = pick(values, key=values.get)
            assert list(values.values()).count(values[best]) == 1
            assert r.answers == [best]
        assert r.reward_type == "llm_judge"


def test_web_search(records, gens):
    world = gens["WebSearch"].world
    for r in records["WebSearch"]:
        # the pages really in the context, found by scanning the prompt (not the generator's bookkeeping)
        present = [e for e in world.entities if world.page(e) in r.prompt]
        clauses = [tuple(c) for c in r.metadata["clauses"]]
        answers = resolve(world, facts_of_pages(world, present), clauses, "A")
        assert {world.name(a) for a in answers} == set(r.answers), r.metadata
        assert "Who is A?" in r.prompt or "What is A?" in r.prompt
        assert len(r.metadata["chain"]) >= 3 and r.metadata["distractor_pages"]


_QUERY_PATTERNS = [
    (r"In which city was (.+) born\?", [r"{} was born in (.+?)\.", r"{} grew up in (.+?)\."]),
    (r"In what year was (.+) born\?", [r"{} \(born (\d+)\)"]),
    (r"What is the occupation of (.+)\?", [r"{} \(born \d+\) is an? (.+?)\."]),
    (r"Which award did (.+) receive\?", [r", {} received the (.+?)\."]),
    (r"Who directed (.+)\?", [r"^{}\n.*?It was directed by (.+?)\."]),
    (r"Who plays the lead role in (.+)\?", [r"^{}\n.*?The lead role is played by (.+?)\."]),
    (r"In what year was (.+) released\?", [r"^{}\n.*?released in (\d+)\."]),
    (r"Who founded (.+)\?", [r"^{}\n.*?founded in \d+ by (.+?)\."]),
    (r"Where is (.+) headquartered\?", [r"^{}\n.*?headquartered in (.+?)\."]),
    (r"In what year was (.+) founded\?", [r"^{}\n.*?[Ff]ounded in (\d+)"]),
    (r"Who wrote (.+)\?", [r"^{}\n.*? by ([^.]+?)\."]),
    (r"In what year was (.+) first published\?", [r"^{}\n.*?first published in (\d+)\."]),
    (r"In which country is (.+)\?", [r"^{}\n.*? is a city in (.+?), on the"]),
]


def _answer_query(prompt: str, query: str) -> str:
    for q, answers in _QUERY_PATTERNS:
        m = re.fullmatch(q, query)
        if m:
            name = re.escape(m.group(1))
            for a in answers:
                found = re.search(a.format(name), prompt, flags=re.M | re.S)
                if found:
                    return found.group(1)
            raise AssertionError(f"no answer to {query!r} in the context")
    raise AssertionError(f"unknown query {query!r}")


def test_multi_query(records):
    for r in records["MultiQuery"]:
        queries = re.findall(r"^\[Query (\d+)\] (.+)$", r.prompt, flags=re.M)
        assert [int(k) for k, _ in queries] == list(range(1, len(queries) + 1)) and len(queries) >= 3
        answers = [_answer_query(r.prompt, q) for _, q in queries]
        assert r.answers == ["; ".join(answers)]


def test_key_chain(records):
    for r in records["KeyChain"]:
        table = {}
        for u in units(r.prompt):
            if u.startswith("{") and u.endswith("}"):
                table.update(json.loads(u))
        start = re.search(r'Find the value of the key "([0-9a-f-]{36})"', r.prompt).group(1)
        value, hops = start, 0
        while value in table:
            value, hops = table[value], hops + 1
        assert hops >= 2 and value.endswith("?")
        assert value == r.metadata["question"]
        ends = [v for v in table.values() if v not in table and v.endswith("?")]
        assert len(ends) >= 3 and len(set(ends)) == len(ends)  # decoy chains end at other questions
        assert normalize_answer(r.answers[0]) in normalize_answer(r.prompt)  # the documents hold the answer


def test_long_doc_qa(records):
    for r in records["LongDocQA"]:
        assert normalize_answer(r.answers[0]) in normalize_answer(r.prompt)
        for title in r.metadata["titles"]:  # the supporting pages are there, whole
            assert f"\n\n{title}\n" in r.prompt


_MATH = {
    "bakery": lambda v: v["a"] * v["b"] * v["d"] * (v["p"] - v["c"]),
    "orchard": lambda v: v["r"] * (v["t"] * v["k"] - v["s"]) * v["q"],
    "journey": lambda v: v["v1"] * v["h1"] + v["v2"] * v["h2"] + v["v3"] * v["h3"],
    "savings": lambda v: v["a"] + v["m"] * v["n"] - v["w"] + v["b"],
    "workshop": lambda v: v["d"] * (v["w"] * v["c"] - v["e"]) * v["p"],
    "library": lambda v: v["k"] * (v["s"] * v["b"] + v["g"] - v["l"]),
}


def test_long_math(gens):
    g = gens["LongMath"]
    seen = set()
    for i in range(12):
        r = g.generate(i)
        meta = r.metadata
        seen.add(meta["template"])
        found = [u for u in units(r.prompt) if u in meta["fragments"]]
        assert len(found) == len(meta["fragments"]) >= 5
        positions = [units(r.prompt).index(f) for f in found]
        assert len(set(positions)) == len(positions)
        # every placed value is stated in a fragment, and the label follows from them
        numbers = {int(x) for f in found for x in re.findall(r"\d+", f)}
        assert set(meta["values"].values()) <= numbers
        assert r.answers == [str(_MATH[meta["template"]](meta["values"]))]
        assert meta["subject"] in r.prompt.rsplit("Question:", 1)[1]
    assert len(seen) >= 3


# ------------------------------------------------------------------------------------------------ determinism


def test_determinism_by_seed(tokenizer, records):
    again = build_generators(tokenizer, max_tokens=MAX, seed=3)
    other = build_generators(tokenizer, max_tokens=MAX, seed=4)
    for name in DATASETS:
        assert [again[name].generate(i) for i in range(2)] == records[name][:2], name
        assert other[name].generate(0).prompt != records[name][0].prompt, name


# ------------------------------------------------------------------------------------------------ length fitting


def test_lengths_are_exact_and_in_range(tokenizer, records):
    for name, rs in records.items():
        for r in rs:
            exact = len(tokenizer(r.prompt, add_special_tokens=False)["input_ids"])
            assert r.context_tokens == exact <= MAX, (name, r.context_tokens, exact)


def test_min_tokens_is_reached(tokenizer):
    gens = build_generators(tokenizer, max_tokens=3000, min_tokens=2400, seed=0, datasets=["FuzzyNeedle", "LongMath"])
    for g in gens.values():
        for i in range(3):
            r = g.generate(i)
            assert 2300 <= r.context_tokens <= 3000  # a trimmed last filler page may stop a little short


def test_fit_context_never_exceeds(tokenizer):
    import random

    counter = TokenCounter(tokenizer)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    rng = random.Random(0)
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 80))) + "." for _ in range(200)]
    for trial in range(40):
        lo = rng.randint(0, 300)
        length = LengthRange(lo, lo + rng.randint(40, 400))
        fitted = fit_context(
            counter,
            "Header.",
            ["NEEDLE ONE.", "NEEDLE TWO."],
            "Question?",
            iter(docs),
            length,
            random.Random(trial),
            "test",
        )
        assert fitted.tokens == counter.exact(fitted.prompt) <= length.max_tokens
        assert "NEEDLE ONE." in fitted.units and "NEEDLE TWO." in fitted.units


def test_range_too_small_is_a_clear_error(tokenizer):
    for name in ("FuzzyNeedle", "KeyChain", "LongMath"):
        g = build_generators(tokenizer, max_tokens=60, seed=0, datasets=[name])[name]
        with pytest.raises(ValueError, match=rf"{name}: max_tokens=60 is too small for this task"):
            g.generate(0)
    with pytest.raises(ValueError, match="min_tokens"):
        LengthRange(500, 100)
