"""QA sources for RULER's qa_1 (SQuAD v2.0 dev) and qa_2 (HotpotQA dev, distractor setting).

``read_squad`` / ``read_hotpotqa`` turn the official JSON files into RULER's question list and document pool
(``NVIDIA/RULER: scripts/data/synthetic/qa.py``): SQuAD keeps answerable questions, with the gold paragraph as
``context`` and the other paragraphs of the same article as ``more_context``; HotpotQA uses all ten context
paragraphs of a question (gold and distractors) as its ``context``, each rendered ``"{title}\\n{sentences}"``.

Without files, ``synthetic_squad`` / ``synthetic_hotpotqa`` generate data *in the same JSON formats* about invented
towns, people and films (so the answers cannot be known without reading the context), and the same readers
parse them. The synthetic sets are fixed (not seeded): the evaluation seed only picks distractors and order, as
with the real files. Scores on them are not comparable with published qa_1 / qa_2 numbers.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

_ONSETS = "b br c ch d dr f g gr h k l m n p pr r s st t tr v w z".split()
_VOWELS = "a e i o u ai ea ou".split()
_CODAS = ["", "", "n", "r", "l", "s", "m", "th", "nd", "rk"]
_MONTHS = "January February March April May June July August September October November December".split()
_PRODUCTS = (
    "woollen blankets,copper kettles,blue cheese,glass beads,walnut furniture,salted fish,cider,wax candles,"
    "linen cloth,clay pipes,silver spoons,honey cakes,leather saddles,paper lanterns,rope"
).split(",")
_PROFESSIONS = "merchant,monk,shipwright,weaver,miller,soldier,physician,astronomer,brewer,mason".split(",")
_BUILDINGS = "Tower,Hall,Bridge,Library,Market,Chapel,Observatory,Granary,Theatre,Lighthouse".split(",")
_GENRES = "comedy,drama,western,thriller,documentary,musical,romance,war film,mystery".split(",")
_FILLERS = (
    "Visitors often describe the streets as quiet in the early morning.",
    "The winters there are long, and the summers are short but warm.",
    "Several old roads meet near the centre, where a small square was laid out.",
    "Local records from the early years are incomplete, and historians disagree about some details.",
    "Many families have lived in the area for several generations.",
    "A weekly market still takes place on the main square.",
    "The surrounding countryside is mostly farmland, with a few patches of forest.",
    "In recent decades the population has grown slowly but steadily.",
)


def _name(rng: random.Random, syllables: int) -> str:
    word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
    return word.capitalize()


def _unique(rng: random.Random, used: set[str], make) -> str:
    while True:
        value = make()
        if value not in used:
            used.add(value)
            return value


def _person(rng: random.Random) -> str:
    return f"{_name(rng, 2)} {_name(rng, rng.randint(2, 3))}"


@lru_cache(maxsize=8)
def synthetic_squad(num_articles: int) -> dict:
    """A SQuAD v2.0-format dataset (``{"version", "data": [{"title", "paragraphs": [{"context", "qas"}]}]}``) of
    ``num_articles`` articles about invented towns, four paragraphs each, with answerable questions whose answers
    are spans of their paragraph and one unanswerable question per article (``is_impossible``), as in v2.0.
    Article ``i`` is the same for every ``num_articles > i``."""
    rng = random.Random("longforge-synthetic-squad")
    used: set[str] = set()
    articles = []
    for a in range(num_articles):
        town = _unique(rng, used, lambda: _name(rng, rng.randint(2, 3)))
        river, province, other = (_unique(rng, used, lambda: _name(rng, 2)) for _ in range(3))
        founder, architect = _unique(rng, used, lambda: _person(rng)), _unique(rng, used, lambda: _person(rng))
        festival = _unique(rng, used, lambda: f"{_name(rng, 2)} Day")
        building = f"{_name(rng, 2)} {rng.choice(_BUILDINGS)}"
        year, population = str(rng.randint(1100, 1890)), f"{rng.randint(2, 90)},{rng.randint(0, 999):03d}"
        month, product, profession = rng.choice(_MONTHS), rng.choice(_PRODUCTS), rng.choice(_PROFESSIONS)
        fill = rng.sample(_FILLERS, 4)
        facts = [
            (
                f"{town} is a town on the banks of the river {river}, in the province of {province}. {fill[0]} "
                f"{town} has a population of about {population} people.",
                [(f"On which river is {town}?", river), (f"What is the population of {town}?", population)],
            ),
            (
                f"According to the town chronicle, {town} was founded in {year} by {founder}, a {profession} from "
                f"{other}. {fill[1]}",
                [(f"Who founded {town}?", founder), (f"In what year was {town} founded?", year)],
            ),
            (
                f"The town is best known for its {product}, which traders carried to {other} and beyond. {fill[2]} "
                f"Its most famous building is the {building}, designed by the architect {architect}.",
                [(f"What is {town} best known for?", product), (f"Who designed the {building}?", architect)],
            ),
            (
                f"Every year in {month} the people of {town} celebrate a festival called {festival}. {fill[3]}",
                [(f"In which month is {festival} celebrated?", month)],
            ),
        ]
        paragraphs = []
        for p, (context, questions) in enumerate(facts):
            qas = []
            for q, (question, answer) in enumerate(questions):
                assert answer in context
                qas.append(
                    {
                        "id": f"syn-squad-{a}-{p}-{q}",
                        "question": question,
                        "answers": [{"text": answer, "answer_start": context.index(answer)}],
                        "is_impossible": False,
                    }
                )
            paragraphs.append({"context": context, "qas": qas})
        paragraphs[0]["qas"].append(  # v2.0's unanswerable kind: the readers must skip it
            {
                "id": f"syn-squad-{a}-impossible",
                "question": f"Which king granted {town} its charter?",
                "answers": [],
                "plausible_answers": [{"text": founder, "answer_start": 0}],
                "is_impossible": True,
            }
        )
        articles.append({"title": town, "paragraphs": paragraphs})
    return {"version": "v2.0", "data": articles}


def _sentences(*sentences: str) -> list[str]:
    """HotpotQA stores sentences with their leading space (joined with ``''.join``)."""
    return [sentences[0]] + [" " + s for s in sentences[1:]]


@lru_cache(maxsize=8)
def synthetic_hotpotqa(num_questions: int) -> list[dict]:
    """A HotpotQA-format dataset (``[{"_id", "question", "answer", "type", "supporting_facts", "context":
    [[title, [sentences]], ...]}]``) of two-hop bridge questions ("In which city was the director of F born?")
    with two gold paragraphs and eight distractor paragraphs each, as in the dev distractor setting."""
    rng = random.Random("longforge-synthetic-hotpotqa")
    used: set[str] = set()

    def film_paragraph():
        film = _unique(rng, used, lambda: f"The {_name(rng, 2)} {_name(rng, 2)}")
        director = _unique(rng, used, lambda: _person(rng))
        year, genre = rng.randint(1931, 2019), rng.choice(_GENRES)
        sentences = _sentences(
            f"{film} is a {year} {genre} film directed by {director}.",
            f"It was shot on location in {_name(rng, 2)} over {rng.randint(3, 14)} weeks.",
            f"The film received {rng.choice(['mixed', 'warm', 'enthusiastic', 'cool'])} reviews on its release.",
        )
        return film, director, [film, sentences]

    def person_paragraph(person):
        city = _unique(rng, used, lambda: _name(rng, rng.randint(2, 3)))
        sentences = _sentences(
            f"{person} (born {rng.randint(1890, 1985)}) is a film director and screenwriter.",
            f"{person} was born in the city of {city}.",
            f"Before turning to film, {person.split()[0]} worked as a {rng.choice(_PROFESSIONS)}.",
        )
        return city, [person, sentences]

    data = []
    for i in range(num_questions):
        film, director, film_par = film_paragraph()
        city, person_par = person_paragraph(director)
        distractors = []
        for _ in range(4):
            _, other_director, other_film = film_paragraph()
            distractors += [other_film, person_paragraph(other_director)[1]]
        context = [film_par, person_par] + distractors
        rng.shuffle(context)
        data.append(
            {
                "_id": f"syn-hotpot-{i}",
                "question": f"In which city was the director of {film} born?",
                "answer": city,
                "type": "bridge",
                "supporting_facts": [[film, 0], [director, 1]],
                "context": context,
            }
        )
    return data


def read_squad(data: dict) -> tuple[list[dict], list[str]]:
    """SQuAD v2.0 JSON → (questions, documents) the way RULER's ``read_squad`` builds them."""
    try:
        docs = sorted({p["context"] for d in data["data"] for p in d["paragraphs"]})
        index = {c: i for i, c in enumerate(docs)}
        qas = []
        for article in data["data"]:
            article_docs = [index[p["context"]] for p in article["paragraphs"]]
            for p in article["paragraphs"]:
                gold = index[p["context"]]
                for qa in p["qas"]:
                    if qa.get("is_impossible", False):
                        continue
                    qas.append(
                        {
                            "query": qa["question"],
                            "outputs": [a["text"] for a in qa["answers"]],
                            "context": [gold],
                            "more_context": [i for i in article_docs if i != gold],
                        }
                    )
    except (KeyError, TypeError) as e:
        raise ValueError(f"not a SQuAD v2.0 JSON file (missing or malformed field {e})") from e
    return qas, docs


def read_hotpotqa(data: list) -> tuple[list[dict], list[str]]:
    """HotpotQA (dev distractor) JSON → (questions, documents) the way RULER's ``read_hotpotqa`` builds them."""
    try:
        docs = sorted({f"{title}\n{''.join(sents)}" for d in data for title, sents in d["context"]})
        index = {c: i for i, c in enumerate(docs)}
        qas = [
            {
                "query": d["question"],
                "outputs": [d["answer"]],
                "context": [index[f"{title}\n{''.join(sents)}"] for title, sents in d["context"]],
            }
            for d in data
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a HotpotQA JSON file (missing or malformed field {e})") from e
    return qas, docs


def load_qa_file(path: str | Path, dataset: str) -> tuple[list[dict], list[str]]:
    """Read a user-supplied SQuAD v2.0 (``dataset="squad"``) or HotpotQA (``"hotpotqa"``) JSON file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{dataset} QA file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{dataset} QA file {path} is not valid JSON: {e}") from e
    qas, docs = read_squad(data) if dataset == "squad" else read_hotpotqa(data)
    if not qas:
        raise ValueError(f"{dataset} QA file {path} has no answerable questions")
    return qas, docs
