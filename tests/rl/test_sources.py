"""User-source adapters (HotpotQA, MuSiQue, Qasper, Wikipedia-style JSONL, DeepMath / MATH), record files, and the
bad inputs that must end in a clear error."""

from __future__ import annotations

import json
import re

import pytest

from longforge.data.rl import (
    RLRecord,
    build_generators,
    load_sources,
    read_records,
    split_fragments,
    write_records,
)
from longforge.data.rl.sources import last_boxed
from longforge.train.rewards import normalize_answer

HOTPOT = [
    {
        "_id": "h1",
        "question": "Which river flows through the town where Orla Venn was born?",
        "answer": "the Meltwater",
        "type": "bridge",
        "supporting_facts": [["Orla Venn", 0], ["Dunharrow", 1]],
        "context": [
            ["Orla Venn", ["Orla Venn is a painter.", " She was born in Dunharrow."]],
            ["Dunharrow", ["Dunharrow is a market town.", " The Meltwater flows through it."]],
            ["Kestrel Hill", ["Kestrel Hill is a hill.", " It is quite steep."]],
        ],
    }
]
WIKI = [
    {
        "title": "Dunharrow",
        "text": "Dunharrow is a market town. The Meltwater flows through it. It has a long history "
        "of wool trading and a bridge built in 1620.",
    },
    *[
        {"title": f"Filler {i}", "text": f"Filler article number {i} talks about weather and roads. " * 4}
        for i in range(30)
    ],
]
MUSIQUE = {
    "id": "m1",
    "question": "What year did the founder of Quill Press die?",
    "answer": "1911",
    "answer_aliases": ["in 1911"],
    "answerable": True,
    "paragraphs": [
        {
            "idx": 0,
            "title": "Quill Press",
            "paragraph_text": "Quill Press was founded by Ada Marr.",
            "is_supporting": True,
        },
        {"idx": 1, "title": "Ada Marr", "paragraph_text": "Ada Marr died in 1911.", "is_supporting": True},
        {"idx": 2, "title": "Other", "paragraph_text": "Unrelated text about boats.", "is_supporting": False},
    ],
}
QASPER = {
    "paper1": {
        "title": "A Study of Tiny Models",
        "abstract": "We study tiny models.",
        "full_text": [{"section_name": "Method", "paragraphs": ["We train on 42 tokens of data.", "It works."]}],
        "qas": [
            {
                "question": "How many tokens of data?",
                "question_id": "q1",
                "answers": [
                    {
                        "answer": {
                            "unanswerable": False,
                            "extractive_spans": ["42 tokens"],
                            "yes_no": None,
                            "free_form_answer": "",
                        }
                    }
                ],
            },
            {
                "question": "Is it unanswerable?",
                "question_id": "q2",
                "answers": [
                    {"answer": {"unanswerable": True, "extractive_spans": [], "yes_no": None, "free_form_answer": ""}}
                ],
            },
        ],
    }
}
MATH = [
    {
        "problem": "A farmer has 12 cows and buys 5 more, then sells 3 of them at the market. How many cows remain?",
        "solution": "12 + 5 - 3 = \\boxed{14}",
        "level": "Level 5",
        "type": "Prealgebra",
    },
]
DEEPMATH = [{"question": "Compute the sum of the first 10 positive integers.", "final_answer": "55", "difficulty": 3}]


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def source_files(tmp_path):
    return [
        write_json(tmp_path / "hotpot.json", HOTPOT),
        write_jsonl(tmp_path / "wiki.jsonl", WIKI),
        write_jsonl(tmp_path / "musique.jsonl", [MUSIQUE, {**MUSIQUE, "id": "m2", "answerable": False}]),
        write_json(tmp_path / "qasper.json", QASPER),
        write_jsonl(tmp_path / "math.jsonl", MATH),
        write_jsonl(tmp_path / "deepmath.jsonl", DEEPMATH),
    ]


def test_load_sources(source_files):
    b = load_sources(source_files)
    assert {q.source for q in b.qa} == {"hotpotqa", "musique", "qasper"}
    assert len(b.qa) == 3  # the unanswerable MuSiQue and Qasper questions are skipped
    hot = next(q for q in b.qa if q.source == "hotpotqa")
    # "HotpotQA with full Wikipedia articles": the paragraph is swapped for the user's article
    assert "bridge built in 1620" in hot.documents[hot.titles.index("Dunharrow")]
    assert hot.supporting == [0, 1]
    mus = next(q for q in b.qa if q.source == "musique")
    assert mus.answers == ["1911", "in 1911"] and mus.supporting == [0, 1]
    qas = next(q for q in b.qa if q.source == "qasper")
    assert qas.answers == ["42 tokens"] and "We train on 42 tokens" in qas.documents[0]
    assert sorted((m.source, m.answer) for m in b.math) == [("deepmath", "55"), ("math", "14")]
    assert len(b.documents) == 31


def test_generators_use_user_sources(tokenizer, source_files):
    gens = build_generators(
        tokenizer,
        max_tokens=1500,
        seed=0,
        sources=load_sources(source_files),
        datasets=["LongDocQA", "KeyChain", "LongMath"],
    )
    assert gens["LongDocQA"].source_name == "hotpotqa+musique+qasper"
    assert gens["KeyChain"].source_name == "hotpotqa+musique"
    for i in range(3):
        r = gens["LongDocQA"].generate(i)
        assert any(normalize_answer(a) in normalize_answer(r.prompt) for a in r.answers)
        assert "Filler article" in r.prompt  # padded with the user's documents
        k = gens["KeyChain"].generate(i)
        assert k.metadata["question"] in (HOTPOT[0]["question"], MUSIQUE["question"])
    seen = set()
    for i in range(4):
        m = gens["LongMath"].generate(i)
        notes = re.findall(r"^\[Note (\d+) of (\d+)\] (.+)$", m.prompt, flags=re.M)
        n = int(notes[0][1])
        assert n >= 5 and [int(k) for k, _, _ in notes] == list(range(1, n + 1))
        assert " ".join(t for _, _, t in notes) == " ".join(m.metadata["problem"].split())
        seen.add(m.answers[0])
    assert seen == {"14", "55"}


def test_split_fragments():
    text = "One two three four five six seven."
    pieces = split_fragments(text)
    assert len(pieces) >= 5 and " ".join(pieces) == text
    with pytest.raises(ValueError, match="cannot be cut into 5 fragments"):
        split_fragments("Too short.")


def test_last_boxed():
    assert last_boxed("so \\boxed{1} then \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert last_boxed("no box") is None


def test_bad_sources(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.jsonl is empty"):
        load_sources([empty])
    with pytest.raises(ValueError, match="does not exist"):
        load_sources([tmp_path / "missing.json"])
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"foo": 1}])
    with pytest.raises(ValueError, match=r"odd\.jsonl: unrecognised record with fields \['foo'\]"):
        load_sources([odd])
    unanswerable = write_jsonl(tmp_path / "mus.jsonl", [{**MUSIQUE, "answerable": False}])
    with pytest.raises(ValueError, match="no usable items"):
        load_sources([unanswerable])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        load_sources([bad])


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_records_round_trip(tmp_path, suffix):
    recs = [
        RLRecord("a-0", "retrieval", "FuzzyNeedle", "p\nq", ["Ann Lee"], "recall", 12, {"depth": 0.5, "x": [1, 2]}),
        RLRecord("b-0", "reasoning", "LongMath", "p2", ["14"], "llm_judge", 30, {}),
    ]
    path = write_records(recs, tmp_path / f"r.{suffix}")
    assert read_records(path) == recs
    assert [p.name for p in tmp_path.iterdir()] == [f"r.{suffix}"]  # no temporary file left behind
    with pytest.raises(ValueError, match="must end in .jsonl or .parquet"):
        write_records(recs, tmp_path / "r.csv")


def test_read_records_errors(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"id": "1"}\n')
    with pytest.raises(ValueError, match="missing field"):
        read_records(tmp_path / "x.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .jsonl or .parquet"):
        read_records(tmp_path / "empty")
