"""Multi-evidence synthesis family: CrossEntity, WebSearch, MultiQuery, KeyChain, LongDocQA (Beyond Reward
Engineering §1.2; KeyChain after LoongRL, arXiv 2510.19363).

CrossEntity
    Peer entities compared on a *derived* attribute that no page states (age at an award = award year − birth year;
    a director's age at a film's release; years between a city's founding and a company's). Length bucket 0–64K.
WebSearch
    A relation chain over letter placeholders ("B is a film; A is the director of B; the lead actor of B is C; C was
    born in D; D was founded in 1702. Who is A?"), with the pages of sibling entities (other films of the director,
    other people born in D) as distractors. Only items whose chain has exactly one solution *in their own context*
    are kept (:func:`longforge.data.rl.world.resolve`).
MultiQuery
    Several lookup queries are embedded in the context; every one must be answered, in order.
KeyChain
    LoongRL's UUID chains: lines ``{"<uuid>": "<uuid>"}`` inserted among the documents, one chain from the given start
    key ending at the real question, the others at distractor questions.
LongDocQA
    Multi-hop QA over whole documents padded with other documents: the user's HotpotQA (paragraphs replaced by full
    articles when the user's Wikipedia documents have them), MuSiQue and Qasper, or built-in multi-hop questions.
"""

from __future__ import annotations

import json
import random
import uuid

from .base import ANSWER_INSTRUCTION, Generator, TaskTooLong, _Retry
from .sources import QAItem
from .world import RELATIONS, World, facts_of_pages, resolve

__all__ = ["CrossEntity", "WebSearch", "MultiQuery", "KeyChain", "LongDocQA", "world_question"]

# ------------------------------------------------------------------------------------------------ built-in QA

_NP = {
    "director": "the director of {}",
    "lead_actor": "the lead actor of {}",
    "author": "the author of {}",
    "founder": "the founder of {}",
    "born_in": "the birthplace of {}",
    "headquarters": "the city where {} is headquartered",
    "in_country": "the country in which {} lies",
}
_START_NP = {"film": "the film {}", "book": "the book {}", "company": "the company {}", "person": "{}", "city": "{}"}
_ATTR_QUESTION = {
    ("person", "birth_year"): "In what year was {} born?",
    ("person", "occupation"): "What is the occupation of {}?",
    ("person", "award"): "Which award did {} receive?",
    ("city", "founded_year"): "In what year was {} founded?",
    ("city", "river"): "On which river does {} lie?",
    ("country", "continent"): "Where is {}?",
    ("country", "founded_year"): "In what year was {} established as a state?",
    ("company", "founded_year"): "In what year was {} founded?",
    ("company", "industry"): "In which industry does {} work?",
    ("film", "release_year"): "In what year was {} released?",
    ("book", "publication_year"): "In what year was {} first published?",
}
_ENTITY_QUESTION = {"person": "Who is {}?", "city": "Which city is {}?", "country": "Which country is {}?"}


def world_question(world: World, rng: random.Random, min_hops: int = 1, max_hops: int = 3) -> QAItem:
    """A multi-hop question over forward (functional) relations of the world, so its answer is unique whatever else
    the context holds; ``documents`` are the pages of every entity on the path."""
    for _ in range(200):
        start = world[rng.choice(sorted(world.entities))]
        if start.kind not in _START_NP:
            continue
        path, node = [start.id], start
        np = _START_NP[start.kind].format(start.name)
        for _ in range(rng.randint(min_hops, max_hops)):
            rel = rng.choice(sorted(node.rels)) if node.rels else None
            if rel is None:
                break
            node = world[node.rels[rel]]
            path.append(node.id)
            np = _NP[rel].format(np)
        hops = len(path) - 1
        if hops < min_hops:
            continue
        attrs = [k for (kind, k) in _ATTR_QUESTION if kind == node.kind]
        if node.kind in _ENTITY_QUESTION and (not attrs or rng.random() < 0.5):
            question, answer = _ENTITY_QUESTION[node.kind].format(np), node.name
            docs = path[:-1]
        else:
            attr = rng.choice(attrs)
            question, answer = _ATTR_QUESTION[(node.kind, attr)].format(np), str(node.attrs[attr])
            docs = path
        question = question[0].upper() + question[1:]
        return QAItem(
            id="world-" + "-".join(path),
            question=question,
            answers=[answer],
            documents=world.pages(docs),
            supporting=list(range(len(docs))),
            source="builtin",
            titles=[world.title(d) for d in docs],
        )
    raise AssertionError("could not draw a world question")  # pragma: no cover


# ------------------------------------------------------------------------------------------------ CrossEntity


def _derived(world: World, kind: str, eid: str) -> int:
    e = world[eid]
    if kind == "age_at_award":
        return int(e.attrs["award_year"]) - int(e.attrs["birth_year"])
    if kind == "director_age_at_release":
        return int(e.attrs["release_year"]) - int(world[e.rels["director"]].attrs["birth_year"])
    if kind == "author_age_at_publication":
        return int(e.attrs["publication_year"]) - int(world[e.rels["author"]].attrs["birth_year"])
    if kind == "years_after_city":
        return int(e.attrs["founded_year"]) - int(world[e.rels["headquarters"]].attrs["founded_year"])
    raise AssertionError(kind)


# derived attribute -> (peer kind, related pages, comparison question with {names}/{extreme}, numeric question)
_DERIVED = {
    "age_at_award": (
        "person",
        (),
        "Of {names}, who was the {extreme} when receiving their award?",
        "How old was {name} when receiving the {award}?",
        ("youngest", "oldest"),
    ),
    "director_age_at_release": (
        "film",
        ("director",),
        "Of the films {names}, which was released when its director was the {extreme}?",
        "How old was the director of {name} when the film was released?",
        ("youngest", "oldest"),
    ),
    "author_age_at_publication": (
        "book",
        ("author",),
        "Of the books {names}, which was first published when its author was the {extreme}?",
        "How old was the author of {name} when the book was first published?",
        ("youngest", "oldest"),
    ),
    "years_after_city": (
        "company",
        ("headquarters",),
        "Of the companies {names}, which was founded the {extreme} years after the founding of the city where it is "
        "headquartered?",
        "How many years after the founding of the city where {name} is headquartered was the company founded?",
        ("fewest", "most"),
    ),
}


def _join_names(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1]


class CrossEntity(Generator):
    name = "CrossEntity"
    reward_type = "llm_judge"
    default_max_tokens = 65536

    def build(self, rng: random.Random, index: int):
        derived = rng.choice(sorted(_DERIVED))
        kind, related, compare_q, numeric_q, extremes = _DERIVED[derived]
        numeric = rng.random() < 0.3
        peers = rng.sample(self.world.by_kind[kind], 1 if numeric else rng.randint(2, 4))
        values = {p: _derived(self.world, derived, p) for p in peers}
        pages = list(peers) + [self.world[p].rels[r] for p in peers for r in related]
        pages = list(dict.fromkeys(pages))
        names = [self.world.name(p) for p in peers]
        if numeric:
            p = peers[0]
            question = numeric_q.format(name=names[0], award=self.world[p].attrs.get("award", ""))
            answer, ask = str(values[p]), "value"
        else:
            if len(set(values.values())) < len(values):
                raise _Retry("tied derived values")
            ask = rng.choice(extremes)
            pick = min if ask == extremes[0] else max
            best = pick(peers, key=lambda p: values[p])
            question = compare_q.format(names=_join_names(names), extreme=ask)
            answer = self.world.name(best)
        header = "Answer the question using the documents below. The answer needs facts from several documents."
        fitted = self.fit(
            rng,
            header,
            self.world.pages(pages),
            f"Question: {question}\n{ANSWER_INSTRUCTION}",
            self.filler(rng, exclude=set(pages)),
        )
        meta = {
            "derived": derived,
            "ask": ask,
            "peers": names,
            "values": {self.world.name(p): v for p, v in values.items()},
            "pages": [self.world.title(p) for p in pages],
        }
        return fitted, [answer], meta


# ------------------------------------------------------------------------------------------------ WebSearch

_REL_CLUE = {
    "director": "{o} is the director of {s}",
    "lead_actor": "the lead actor of {s} is {o}",
    "born_in": "{s} was born in {o}",
    "founder": "{o} is the founder of {s}",
    "headquarters": "{s} is headquartered in {o}",
    "author": "{o} wrote {s}",
    "in_country": "{s} lies in {o}",
}
_ATTR_CLUE = {
    "founded_year": "{x} was founded in {v}",
    "population": "{x} has a population of {v:,}",
    "birth_year": "{x} was born in {v}",
    "award_year": "{x} received an award in {v}",
    "release_year": "{x} was released in {v}",
    "runtime_minutes": "{x} runs for {v} minutes",
    "publication_year": "{x} was first published in {v}",
    "pages": "{x} has {v} pages",
    "employees": "{x} employs {v:,} people",
}
_ANCHORS = {
    "city": ("founded_year", "population"),
    "person": ("birth_year", "award_year"),
    "film": ("release_year", "runtime_minutes"),
    "book": ("publication_year", "pages"),
    "company": ("founded_year", "employees"),
}
_KIND_WORD = {
    "person": "a person",
    "film": "a film",
    "book": "a book",
    "company": "a company",
    "city": "a city",
    "country": "a country",
}
_LETTERS = "ABCDEFG"


class WebSearch(Generator):
    name = "WebSearch"
    reward_type = "recall"

    def _edges(self, eid: str) -> list[tuple[str, str, str]]:
        """(relation, subject, object) edges touching ``eid``, both directions."""
        e = self.world[eid]
        out = [(rel, eid, obj) for rel, obj in sorted(e.rels.items()) if rel != "in_country"]
        for rel in sorted(RELATIONS):
            if RELATIONS[rel][1] == e.kind and rel != "in_country":
                out += [(rel, s, eid) for s in self.world.subjects_of(rel, eid)]
        return out

    def build(self, rng: random.Random, index: int):
        world = self.world
        target = rng.choice(world.by_kind["person"] + world.by_kind["film"] + world.by_kind["company"])
        nodes, clauses = [target], []
        for _ in range(rng.randint(2, 4)):
            edges = [(r, s, o) for r, s, o in self._edges(nodes[-1]) if (o if s == nodes[-1] else s) not in nodes]
            if not edges:
                break
            rel, s, o = rng.choice(edges)
            nxt = o if s == nodes[-1] else s
            nodes.append(nxt)
            clauses.append(("rel", _LETTERS[nodes.index(s)], rel, _LETTERS[nodes.index(o)]))
        if len(nodes) < 3:
            raise _Retry("chain too short")
        last = world[nodes[-1]]
        if last.kind not in _ANCHORS:
            raise _Retry("no anchor attribute")
        anchor = rng.choice(_ANCHORS[last.kind])
        clauses.append(("attr", _LETTERS[len(nodes) - 1], anchor, last.attrs[anchor]))
        clauses += [("kind", _LETTERS[i], world[n].kind) for i, n in enumerate(nodes)]
        # distractors: sibling entities, i.e. other subjects of the same relation object (other films by the
        # director, other people born in the same city) and other entities of the anchor's kind
        siblings: list[str] = []
        for c in clauses:
            if c[0] == "rel":
                rel, obj = c[2], nodes[_LETTERS.index(c[3])]
                others = [x for x in world.subjects_of(rel, obj) if x not in nodes]
                siblings += rng.sample(others, min(2, len(others)))
        siblings += rng.sample([x for x in world.by_kind[last.kind] if x not in nodes], 2)
        siblings = [x for x in dict.fromkeys(siblings) if x not in nodes]
        evidence_ids = nodes + siblings
        seen: set[str] = set()
        text_clues = []
        for c in clauses:
            if c[0] == "kind":
                text_clues.append(f"{c[1]} is {_KIND_WORD[c[2]]}")
            elif c[0] == "rel":
                text_clues.append(_REL_CLUE[c[2]].format(s=c[1], o=c[3]))
            else:
                text_clues.append(_ATTR_CLUE[c[2]].format(x=c[1], v=c[3]))
        kinds_first = [t for t, c in zip(text_clues, clauses) if c[0] == "kind"]
        rest = [t for t, c in zip(text_clues, clauses) if c[0] != "kind"]
        clue_text = "; ".join(kinds_first + rest)
        ask_word = "Who" if world[target].kind == "person" else "What"
        question = (
            f"Question: The letters stand for different entities described in the pages above. {clue_text}. "
            f"{ask_word} is A?\n{ANSWER_INSTRUCTION}"
        )
        header = "Below are pages retrieved by a web search. Use them to answer the question."
        fitted = self.fit(
            rng, header, world.pages(evidence_ids), question, self.filler(rng, exclude=set(evidence_ids), seen=seen)
        )
        visible = facts_of_pages(world, [*evidence_ids, *seen])
        if resolve(world, visible, clauses, "A") != {target}:
            raise _Retry("the chain is ambiguous in this context")
        meta = {
            "clauses": [list(c) for c in clauses],
            "chain": [world.name(n) for n in nodes],
            "distractor_pages": [world.title(x) for x in siblings],
        }
        return fitted, [world.name(target)], meta


# ------------------------------------------------------------------------------------------------ MultiQuery

_LOOKUPS = {
    "person": (
        ("born_in", "In which city was {} born?"),
        ("birth_year", "In what year was {} born?"),
        ("occupation", "What is the occupation of {}?"),
        ("award", "Which award did {} receive?"),
    ),
    "film": (
        ("director", "Who directed {}?"),
        ("lead_actor", "Who plays the lead role in {}?"),
        ("release_year", "In what year was {} released?"),
    ),
    "company": (
        ("founder", "Who founded {}?"),
        ("headquarters", "Where is {} headquartered?"),
        ("founded_year", "In what year was {} founded?"),
    ),
    "book": (("author", "Who wrote {}?"), ("publication_year", "In what year was {} first published?")),
    "city": (("in_country", "In which country is {}?"), ("founded_year", "In what year was {} founded?")),
}


class MultiQuery(Generator):
    name = "MultiQuery"
    reward_type = "recall"

    def build(self, rng: random.Random, index: int):
        world = self.world
        n = rng.randint(3, 6)
        kinds = sorted(_LOOKUPS)
        entities: list[str] = []
        while len(entities) < n:
            eid = rng.choice(world.by_kind[rng.choice(kinds)])
            if eid not in entities:
                entities.append(eid)
        queries, answers = [], []
        for eid in entities:
            e = world[eid]
            key, template = rng.choice(_LOOKUPS[e.kind])
            queries.append(template.format(e.name))
            answers.append(world.name(e.rels[key]) if key in e.rels else str(e.attrs[key]))
        # pages and queries in a random order; queries are numbered in the order they appear
        units = [None] * n + entities
        rng.shuffle(units)
        evidence, k = [], 0
        for ref in units:
            if ref is None:
                evidence.append(f"[Query {k + 1}] {queries[k]}")
                k += 1
            else:
                evidence.append(world.page(ref))
        header = "The documents below contain several queries, each marked [Query k]."
        question = (
            f"Question: Answer every one of the {n} queries marked [Query 1] to [Query {n}] in the text above, in "
            "order, separated by semicolons."
        )
        fitted = self.fit(rng, header, evidence, question, self.filler(rng, exclude=set(entities)), keep_order=True)
        meta = {"queries": queries, "query_answers": answers}
        return fitted, ["; ".join(answers)], meta


# ------------------------------------------------------------------------------------------------ QA-based


class _QAGenerator(Generator):
    """Shared by KeyChain and LongDocQA: QA items from the user's HotpotQA / MuSiQue / Qasper, else built-in."""

    qa_sources: tuple[str, ...] = ("hotpotqa", "musique", "qasper")

    @property
    def pool(self) -> list[QAItem]:
        if not hasattr(self, "_pool"):
            self._pool = [q for q in self.sources.qa if q.source in self.qa_sources]
        return self._pool

    @property
    def source_name(self) -> str:
        return "+".join(sorted({q.source for q in self.pool})) if self.pool else "builtin"

    def item(self, rng: random.Random, index: int) -> QAItem:
        """The item for ``index`` (a fixed permutation of the pool); a random other one on a retry."""
        if not self.pool:
            return world_question(self.world, rng)
        if not hasattr(self, "_perm"):
            perm_rng = random.Random(f"longforge-rl-{self.seed}-{self.name}-perm")
            self._perm = perm_rng.sample(range(len(self.pool)), len(self.pool))
        if self.attempt == 0:
            return self.pool[self._perm[index % len(self.pool)]]
        return self.pool[rng.randrange(len(self.pool))]

    def other_documents(self, rng: random.Random, exclude: QAItem):
        """Padding: the user's documents, else other QA items' documents, else world pages."""
        if self.sources.documents or not self.pool:
            world_ids = set(exclude.id.removeprefix("world-").split("-")) if exclude.source == "builtin" else set()
            yield from self.filler(rng, exclude=world_ids)
            return
        misses = 0
        while misses < 1000:  # ends when no other item has documents
            other = self.pool[rng.randrange(len(self.pool))]
            if other.id != exclude.id and other.documents:
                misses = 0
                yield from other.documents
            else:
                misses += 1


class LongDocQA(_QAGenerator):
    name = "LongDocQA"
    reward_type = "recall"

    def build(self, rng: random.Random, index: int):
        item = self.item(rng, index)
        docs = list(item.documents)
        header = "Answer the question using the documents below."
        question = f"Question: {item.question}\n{ANSWER_INSTRUCTION}"
        try:
            fitted = self.fit(rng, header, docs, question, self.other_documents(rng, item))
        except TaskTooLong:
            # keep only the supporting documents before giving up on the item
            docs = [item.documents[i] for i in item.supporting] or docs
            fitted = self.fit(rng, header, docs, question, self.other_documents(rng, item))
        meta = {"source": item.source, "source_id": item.id, "question": item.question, "titles": item.titles}
        return fitted, item.answers, meta


class KeyChain(_QAGenerator):
    name = "KeyChain"
    reward_type = "recall"
    qa_sources = ("hotpotqa", "musique")  # LoongRL builds chains over multi-hop QA (HotpotQA, MuSiQue, 2Wiki)

    def build(self, rng: random.Random, index: int):
        item = self.item(rng, index)
        n_chains = rng.randint(3, 6)
        # decoy chains end at other items' questions (built-in questions when the pool is too small)
        distractors: list[str] = []
        for _ in range(20 * n_chains if len(self.pool) > 1 else 0):
            question = self.pool[rng.randrange(len(self.pool))].question
            if question != item.question and question not in distractors:
                distractors.append(question)
                if len(distractors) == n_chains - 1:
                    break
        while len(distractors) < n_chains - 1:
            question = world_question(self.world, rng).question
            if question != item.question and question not in distractors:
                distractors.append(question)
        new_key = lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))  # noqa: E731
        chains = []
        for q in [item.question, *distractors]:
            keys = [new_key() for _ in range(rng.randint(2, 5))]
            chains.append((keys, q))
        lines = []
        for keys, q in chains:
            for a, b in zip(keys, keys[1:]):
                lines.append(json.dumps({a: b}))
            lines.append(json.dumps({keys[-1]: q}, ensure_ascii=False))
        start = chains[0][0][0]
        header = "Below are documents with key-value lines hidden among them."
        question = (
            f'Question: Find the value of the key "{start}" in the text above. When a value is itself a key, look up '
            "its value in turn; follow the chain until the value is a question, then answer that question using the "
            f"documents.\n{ANSWER_INSTRUCTION}"
        )
        evidence = list(item.documents) + lines
        fitted = self.fit(rng, header, evidence, question, self.other_documents(rng, item))
        meta = {
            "source": item.source,
            "source_id": item.id,
            "start_key": start,
            "chain": chains[0][0],
            "question": item.question,
            "distractor_questions": distractors,
        }
        return fitted, item.answers, meta
