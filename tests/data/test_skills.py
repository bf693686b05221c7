import random
import re

import pytest

from longforge.data.corpus import essay_sentences, split_documents
from longforge.data.skills import PROBES, RULER_NOISE, SKILLS, SkillContext, TokenCounter, multikey, niah, vt

ALL = {**SKILLS, **{f"probe:{k}": v for k, v in PROBES.items()}}
TARGETS = (192, 333, 1000, 2048)


@pytest.fixture(scope="module")
def ctx(small_docs):
    train, _ = split_documents(small_docs)
    return SkillContext.from_sentences(essay_sentences(train))


@pytest.fixture(scope="module")
def counter(tokenizer):
    return TokenCounter(tokenizer)


def _context_and_questions(sample):
    """Split the text at the first question (RULER puts every question after the context)."""
    text = sample.text
    first_answer = min(a for a, _ in sample.answer_spans)
    cut = max(text.rfind("\nWhat ", 0, first_answer), text.rfind("\nQuestion:", 0, first_answer))
    return text[:cut], text[cut:]


def _check_answers(sample):
    context, _ = _context_and_questions(sample)
    for a, b in sample.answer_spans:
        answer = sample.text[a:b]
        question = sample.text[:a].rsplit("\n", 1)[-1]
        if sample.skill in ("niah", "multikey", "kv") or sample.skill.startswith("niah_"):
            key = re.search(r"magic \w+ for (.+?) mentioned", question).group(1)
            values = re.findall(rf"magic \w+ for {re.escape(key)} is: ([\w-]+)\.", context)
            assert values and answer == (
                values[0] if len(values) == 1 else ", ".join(values[:-1]) + ", and " + values[-1]
            )
        elif sample.skill == "vt":
            value = re.search(r"assigned the value (\d+) in", question).group(1)
            block = sample.text[:a].rsplit("Memorize and track", 1)[-1]  # the task this question belongs to
            names = re.findall(rf"VAR (\w+) = {value}\b", block)
            assert len(names) == 1
            for _ in range(10):
                names += [n for n in re.findall(rf"VAR (\w+) = VAR {names[-1]}\b", block) if n not in names]
            assert answer == " ".join(names)
            assert f"{len(names)} variables are assigned the value {value}" in question
        else:
            assert answer in context, (answer, sample.skill)


@pytest.mark.parametrize("name", sorted(ALL))
def test_skill_samples_fit_tokenize_exactly_and_answer_correctly(name, tokenizer, counter, ctx):
    skill = ALL[name]
    rng = random.Random(name)
    for target in TARGETS:
        for _ in range(3):
            sample = skill(rng, counter, target, ctx)
            full = tokenizer(sample.text, add_special_tokens=False)["input_ids"]
            assert len(full) <= target
            assert len(full) >= min(0.8 * target, target - 80)  # the haystack fills the budget (up to a sentence)
            # Segment-by-segment encoding (what the stream does) is exactly the encoding of the text.
            assert [i for text, _ in sample.segments for i in counter.ids(text)] == full
            assert "".join(t for t, _ in sample.segments) == sample.text
            assert sample.answer_spans
            _check_answers(sample)
            # The tokens marked as answers decode to the answers.
            marked = []
            for text, span in sample.segments:
                if span is not None:
                    ids = counter.ids(text)[counter.answer_mask(text, span)]
                    marked.append(tokenizer.decode(ids).strip())
            assert marked == [sample.text[a:b] for a, b in sample.answer_spans]


@pytest.mark.parametrize("name", sorted(ALL))
def test_skills_are_deterministic_and_work_without_a_tokenizer(name, counter, ctx):
    skill = ALL[name]
    a = skill(random.Random(5), counter, 700, ctx)
    b = skill(random.Random(5), counter, 700, ctx)
    c = skill(random.Random(6), counter, 700, ctx)
    assert a == b and a.text != c.text
    estimate = skill(random.Random(5), lambda text: len(text) // 4 + 1, 700, ctx)  # tokenizer-training mode
    assert estimate.answer_spans and len(estimate.text) // 4 <= 700


def test_ruler_niah_single_format(counter, ctx):
    sample = PROBES["niah_single_1"](random.Random(0), counter, 1000, ctx)
    header = (
        "A special magic number is hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the number afterwards.\n"
    )
    assert sample.text.startswith(header)
    (needle,) = re.findall(r"One of the special magic numbers for ([a-z]+-[a-z]+) is: (\d{7})\.", sample.text)
    key, value = needle
    assert sample.text.endswith(
        f"\nWhat is the special magic number for {key} mentioned in the provided text? "
        f"The special magic number for {key} mentioned in the provided text is {value}."
    )
    lines = sample.text[len(header) :].split("\n")[:-1]
    assert set(lines) == {RULER_NOISE, f"One of the special magic numbers for {key} is: {value}."}


def test_ruler_vt_format(counter, ctx):
    sample = PROBES["vt"](random.Random(0), counter, 2000, ctx)
    assert sample.text.startswith(
        "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
    )
    assert sample.text.count("Memorize and track") == 2  # the in-context example, then the task
    assert re.search(r"\n\n\n\nMemorize and track", sample.text)
    final = sample.text[sample.answer_spans[-1][0] - 2 :]
    assert re.fullmatch(r"  [A-Z]{5}( [A-Z]{5}){4}", final)  # 5 names after "they are: " + " ", as RULER writes
    assert "5 variables are assigned the value" in sample.text


def test_dense_samples_have_many_needles_and_queries(counter, ctx):
    rng = random.Random(0)
    samples = [niah(rng, counter, 4096, ctx) for _ in range(40)]
    assert max(s.text.count("One of the special magic") for s in samples) >= 12
    assert max(len(s.answer_spans) for s in samples) >= 4
    assert min(len(s.answer_spans) for s in samples) == 1


def test_multikey_has_near_identical_distractors(counter, ctx):
    rng = random.Random(0)
    near = 0
    for _ in range(20):
        sample = multikey(rng, counter, 2048, ctx)
        keys = set(re.findall(r"magic numbers for ([\w]+-[\w]+) is:", sample.text))
        for a, _ in sample.answer_spans:
            asked = re.search(r"for (\S+) mentioned", sample.text[:a].rsplit("\n", 1)[-1]).group(1)
            adj, noun = asked.split("-")
            near += sum((k != asked) and (k.startswith(adj + "-") or k.endswith("-" + noun)) for k in keys)
    assert near >= 20


def test_too_small_target_is_an_error(counter, ctx):
    with pytest.raises(ValueError, match="too small"):
        vt(random.Random(0), counter, 40, ctx)
