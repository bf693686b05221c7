"""The built-in synthetic world: invented entities with typed attributes and relations, a small category taxonomy,
and prose pages about each entity. Everything is a pure function of the seed.

Why invented
    A long-context RL item must be answerable only from its context. With invented names and facts a model cannot
    answer from memory, and every label is known exactly because the generator placed it.

What a page states
    Each fact is stated on exactly one page: the page of its *subject* (a film's page names its director; the
    director's page does not list their films). So the facts visible in a context are exactly the facts of the pages
    in it, which is what lets :func:`resolve` check that a relation-chain question has one answer in its context.

Kinds, attributes (int or str) and relations (functional: one object per subject)::

    country  founded_year, continent
    city     founded_year, population, river              in_country -> country
    person   birth_year, occupation, award, award_year    born_in -> city
    company  founded_year, employees, industry            founder -> person, headquarters -> city
    film     release_year, runtime_minutes, genre         director -> person, lead_actor -> person
    book     publication_year, pages, genre               author -> person
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "ATTRIBUTE_KINDS",
    "RELATIONS",
    "TAXONOMY",
    "Entity",
    "Fact",
    "World",
    "facts_of_pages",
    "resolve",
]

# ------------------------------------------------------------------------------------------------ vocabulary

_ONSETS = "b br c ch cl d dr f fl g gr h j k l m n p pr r s st sh t tr v w z".split()
_VOWELS = "a e i o u ai ea io ou".split()
_CODAS = "n r l s th m nd rk st x".split()
_PLACE_ENDINGS = "ford holm wick dale mere by stead ora ova grad haven port field mouth".split()
_COUNTRY_ENDINGS = "ia land mark stan ora avia".split()
_FIRST_NAMES = tuple(
    """Ada Alma Anselm Aurel Bea Bram Cato Cleo Dara Dorian Edda Elio Emrys Esme Fenna Florin Greer Hale Ines Ivo
    Jora Kasimir Lene Lior Mira Nadia Nils Odile Orin Petra Quill Rhea Rosalind Soren Tamsin Thea Ulric Vera Wendel
    Xenia Yara Ysolde Zeno Ottilie Leopold Maren Casimir Iona Benedikt Saskia Tobiah Liesel Amaury Brigid Corvin
    Delphine Evander Gisela Halvard Isaura Joost Katell Lorcan Melisande Nerys Oswin Perrine Radko Selma
    Tiberius""".split()
)
_OCCUPATIONS = tuple(
    """architect botanist cartographer chemist composer economist engineer geologist historian journalist linguist
    mathematician painter pharmacist photographer physician physicist sculptor surveyor translator""".split()
)
_AWARDS = ("Halvorsen Prize", "Corbel Medal", "Iverna Award", "Ostrander Prize", "Lumen Medal", "Tessaly Award")
_CONTINENTS = ("the northern continent", "the southern continent", "the eastern archipelago", "the western plains")
_RIVERS = tuple(f"the {n} River" for n in "Aster Bly Corra Dunmere Esk Fenn Gallow Hesper Isel Juno Kell".split())
_INDUSTRIES = ("shipbuilding", "textiles", "printing", "glassmaking", "optics", "brewing", "rail freight", "ceramics")
_FILM_GENRES = ("drama", "comedy", "thriller", "documentary", "western", "musical", "mystery")
_BOOK_GENRES = ("novel", "memoir", "travel book", "history", "poetry collection", "field guide")
_TITLE_ADJ = tuple(
    """Silent Crimson Hollow Distant Broken Golden Quiet Northern Last Hidden Bitter Pale Wandering Burning Glass
    Iron Paper Winter Summer Lonely Secret Narrow Endless Salt""".split()
)
_TITLE_NOUN = tuple(
    """River Harbour Garden Orchard Lantern Mirror Bridge Tower Meadow Letter Compass Archive Orchestra Island Station
    Theatre Forest Lighthouse Quarry Citadel Valley Kingdom Ferry Almanac""".split()
)
_COMPANY_WORDS = ("Works", "Holdings", "Company", "Foundry", "Guild", "Industries", "Mills", "Trading House")
# Sentences that carry no fact: they make pages read like encyclopedia prose without adding anything checkable.
_PAGE_FILLER = (
    "Contemporary accounts describe this period in some detail.",
    "Several archives hold letters and records from these years.",
    "Later commentators have offered differing interpretations.",
    "The subject is discussed in a number of regional histories.",
    "Local newspapers reported on it at the time.",
    "A short biography appeared in a yearbook some decades later.",
    "Much of the surviving material is held in private collections.",
    "The details given here follow the most widely cited sources.",
)

# A small IS-A taxonomy: domain -> category -> items. FuzzyNeedle's needle names an *item*, its question names the
# item's *category*, and its distractors name items of sibling categories of the same domain.
TAXONOMY: dict[str, dict[str, tuple[str, ...]]] = {
    "food": {
        "fish": ("salmon", "trout", "mackerel", "cod", "sardines", "halibut"),
        "fruit": ("mangoes", "apricots", "plums", "figs", "pears", "cherries"),
        "vegetables": ("leeks", "parsnips", "artichokes", "spinach", "beetroot", "cabbage"),
        "cheese": ("brie", "gouda", "cheddar", "camembert", "feta", "gruyere"),
        "nuts": ("walnuts", "almonds", "hazelnuts", "pecans", "cashews", "pistachios"),
    },
    "music": {
        "string instruments": ("violin", "cello", "harp", "viola", "double bass", "mandolin"),
        "wind instruments": ("flute", "clarinet", "oboe", "bassoon", "recorder", "piccolo"),
        "brass instruments": ("trumpet", "trombone", "tuba", "french horn", "cornet", "euphonium"),
        "percussion instruments": ("timpani", "marimba", "xylophone", "snare drum", "glockenspiel", "tambourine"),
    },
    "sport": {
        "water sports": ("rowing", "sailing", "canoeing", "water polo", "diving", "kayaking"),
        "racket sports": ("tennis", "badminton", "squash", "table tennis", "padel", "racquetball"),
        "winter sports": ("skiing", "curling", "ice skating", "bobsleigh", "snowboarding", "biathlon"),
        "combat sports": ("fencing", "judo", "boxing", "wrestling", "karate", "taekwondo"),
    },
    "animal": {
        "birds": ("parrots", "owls", "herons", "finches", "falcons", "swallows"),
        "reptiles": ("tortoises", "iguanas", "geckos", "chameleons", "pythons", "skinks"),
        "insects": ("beetles", "butterflies", "dragonflies", "crickets", "moths", "bees"),
        "rodents": ("hamsters", "gerbils", "chinchillas", "squirrels", "guinea pigs", "dormice"),
    },
}

ATTRIBUTE_KINDS = {
    "country": {"founded_year": int, "continent": str},
    "city": {"founded_year": int, "population": int, "river": str},
    "person": {"birth_year": int, "occupation": str, "award": str, "award_year": int},
    "company": {"founded_year": int, "employees": int, "industry": str},
    "film": {"release_year": int, "runtime_minutes": int, "genre": str},
    "book": {"publication_year": int, "pages": int, "genre": str},
}
# relation -> (subject kind, object kind)
RELATIONS = {
    "in_country": ("city", "country"),
    "born_in": ("person", "city"),
    "founder": ("company", "person"),
    "headquarters": ("company", "city"),
    "director": ("film", "person"),
    "lead_actor": ("film", "person"),
    "author": ("book", "person"),
}


@dataclass
class Entity:
    id: str  # "<kind>:<index>"
    kind: str
    name: str
    attrs: dict[str, int | str] = field(default_factory=dict)
    rels: dict[str, str] = field(default_factory=dict)  # relation -> object entity id


@dataclass(frozen=True)
class Fact:
    """One stated fact: ``(subject id, attribute or relation, value or object id, is_relation)``."""

    subject: str
    key: str
    value: int | str
    is_relation: bool


def _after(rng: random.Random, person: Entity, lo: int, hi: int) -> int:
    """A year ``lo``..``hi`` years after the person's birth, no later than 2024."""
    birth = int(person.attrs["birth_year"])
    return birth + rng.randint(lo, max(lo, min(hi, 2024 - birth)))


def _syllable_name(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


class World:
    """Invented countries, cities, people, companies, films and books, fixed by ``seed``.

    ``size`` scales every kind (size 1 ≈ 700 pages ≈ 100K tokens of prose). Pages are rendered lazily and cached.
    """

    def __init__(self, seed: int = 0, size: float = 1.0):
        if size <= 0:
            raise ValueError(f"world size must be > 0, got {size}")
        self.seed = seed
        rng = random.Random(f"longforge-rl-world-{seed}")
        n = lambda k: max(4, int(round(k * size)))  # noqa: E731
        self.entities: dict[str, Entity] = {}
        self.by_kind: dict[str, list[str]] = {k: [] for k in ATTRIBUTE_KINDS}
        used: set[str] = set()

        def unique(make) -> str:
            for _ in range(1000):
                name = make()
                if name not in used:
                    used.add(name)
                    return name
            raise AssertionError("name space exhausted")  # pragma: no cover

        def add(kind: str, name: str, attrs: dict, rels: dict | None = None) -> Entity:
            ent = Entity(f"{kind}:{len(self.by_kind[kind])}", kind, name, attrs, rels or {})
            self.entities[ent.id] = ent
            self.by_kind[kind].append(ent.id)
            return ent

        for _ in range(n(12)):
            add(
                "country",
                unique(lambda: _syllable_name(rng, 1)[:-1] + rng.choice(_COUNTRY_ENDINGS)),
                {"founded_year": rng.randint(900, 1900), "continent": rng.choice(_CONTINENTS)},
            )
        for _ in range(n(80)):
            add(
                "city",
                unique(lambda: _syllable_name(rng, rng.randint(1, 2))[:-1] + rng.choice(_PLACE_ENDINGS)),
                {
                    "founded_year": rng.randint(1100, 1900),
                    "population": rng.randint(2, 900) * 1000 + rng.randint(0, 999),
                    "river": rng.choice(_RIVERS),
                },
                {"in_country": rng.choice(self.by_kind["country"])},
            )
        for _ in range(n(260)):
            birth = rng.randint(1900, 1975)
            add(
                "person",
                unique(lambda: f"{rng.choice(_FIRST_NAMES)} {_syllable_name(rng, rng.randint(1, 2))}"),
                {
                    "birth_year": birth,
                    "occupation": rng.choice(_OCCUPATIONS),
                    "award": rng.choice(_AWARDS),
                    "award_year": birth + rng.randint(24, min(70, 2024 - birth)),
                },
                {"born_in": rng.choice(self.by_kind["city"])},
            )
        people = self.by_kind["person"]
        for _ in range(n(90)):
            founder = self.entities[rng.choice(people)]
            add(
                "company",
                unique(lambda: f"{_syllable_name(rng, rng.randint(1, 2))} {rng.choice(_COMPANY_WORDS)}"),
                {
                    "founded_year": _after(rng, founder, 22, 60),
                    "employees": rng.randint(5, 4000),
                    "industry": rng.choice(_INDUSTRIES),
                },
                {"founder": founder.id, "headquarters": rng.choice(self.by_kind["city"])},
            )
        for _ in range(n(150)):
            director = self.entities[rng.choice(people)]
            lead = rng.choice([p for p in rng.sample(people, 3) if p != director.id])
            add(
                "film",
                unique(lambda: f"The {rng.choice(_TITLE_ADJ)} {rng.choice(_TITLE_NOUN)}"),
                {
                    "release_year": _after(rng, director, 22, 65),
                    "runtime_minutes": rng.randint(75, 190),
                    "genre": rng.choice(_FILM_GENRES),
                },
                {"director": director.id, "lead_actor": lead},
            )
        for _ in range(n(110)):
            author = self.entities[rng.choice(people)]
            add(
                "book",
                unique(lambda: f"{rng.choice(_TITLE_NOUN)} of {_syllable_name(rng, 2)}"),
                {
                    "publication_year": _after(rng, author, 20, 70),
                    "pages": rng.randint(90, 900),
                    "genre": rng.choice(_BOOK_GENRES),
                },
                {"author": author.id},
            )
        self._pages: dict[str, str] = {}
        self._names = used
        self._reverse: dict[tuple[str, str], list[str]] | None = None

    # -------------------------------------------------------------------------------------------- access
    def __getitem__(self, entity_id: str) -> Entity:
        return self.entities[entity_id]

    def name(self, entity_id: str) -> str:
        return self.entities[entity_id].name

    def is_name_used(self, name: str) -> bool:
        return name in self._names

    def fresh_person_name(self, rng: random.Random, avoid: set[str] | None = None) -> str:
        """A person name that no entity of the world has (needle characters that cannot collide with pages)."""
        avoid = avoid or set()
        for _ in range(1000):
            name = f"{rng.choice(_FIRST_NAMES)} {_syllable_name(rng, 2)}"
            if name not in self._names and name not in avoid:
                return name
        raise AssertionError("name space exhausted")  # pragma: no cover

    def facts(self, entity_id: str) -> list[Fact]:
        """The facts stated on this entity's page."""
        ent = self.entities[entity_id]
        out = [Fact(ent.id, k, v, False) for k, v in ent.attrs.items()]
        out += [Fact(ent.id, k, v, True) for k, v in ent.rels.items()]
        return out

    def subjects_of(self, relation: str, object_id: str) -> list[str]:
        """Entities whose ``relation`` points at ``object_id`` (e.g. the films a person directed)."""
        if self._reverse is None:
            self._reverse = {}
            for e in self.entities.values():
                for rel, obj in e.rels.items():
                    self._reverse.setdefault((rel, obj), []).append(e.id)
        return self._reverse.get((relation, object_id), [])

    # -------------------------------------------------------------------------------------------- pages
    def title(self, entity_id: str) -> str:
        return self.entities[entity_id].name

    def page(self, entity_id: str) -> str:
        """The prose page of an entity: its title line, then sentences stating each of its facts once."""
        if entity_id not in self._pages:
            self._pages[entity_id] = self._render(entity_id)
        return self._pages[entity_id]

    def pages(self, entity_ids: Iterable[str]) -> list[str]:
        return [self.page(e) for e in entity_ids]

    def _render(self, entity_id: str) -> str:
        e = self.entities[entity_id]
        a, r = e.attrs, e.rels
        rng = random.Random(f"{self.seed}-page-{entity_id}")  # page wording depends on the entity only
        nm = lambda eid: self.entities[eid].name  # noqa: E731
        if e.kind == "country":
            facts = [
                f"{e.name} is a country on {a['continent']}.",
                f"{e.name} was established as a state in {a['founded_year']}.",
            ]
        elif e.kind == "city":
            facts = [
                f"{e.name} is a city in {nm(r['in_country'])}, on the banks of {a['river']}.",
                rng.choice(
                    [f"{e.name} was founded in {a['founded_year']}.", f"The town was founded in {a['founded_year']}."]
                ),
                f"Its population is {a['population']:,}.",
            ]
        elif e.kind == "person":
            facts = [
                f"{e.name} (born {a['birth_year']}) is a {a['occupation']}.",
                rng.choice([f"{e.name} was born in {nm(r['born_in'])}.", f"{e.name} grew up in {nm(r['born_in'])}."]),
                f"In {a['award_year']}, {e.name} received the {a['award']}.",
            ]
        elif e.kind == "company":
            facts = [
                f"{e.name} is a {a['industry']} company headquartered in {nm(r['headquarters'])}.",
                f"It was founded in {a['founded_year']} by {nm(r['founder'])}.",
                f"The company employs {a['employees']:,} people.",
            ]
        elif e.kind == "film":
            facts = [
                f"{e.name} is a {a['genre']} film released in {a['release_year']}.",
                f"It was directed by {nm(r['director'])}.",
                f"The lead role is played by {nm(r['lead_actor'])}.",
                f"The film runs for {a['runtime_minutes']} minutes.",
            ]
        else:  # book
            facts = [
                f"{e.name} is a {a['genre']} by {nm(r['author'])}.",
                f"It was first published in {a['publication_year']}.",
                f"The first edition has {a['pages']} pages.",
            ]
        body = facts[:1] + rng.sample(_PAGE_FILLER, 2) + facts[1:] + rng.sample(_PAGE_FILLER, 1)
        return f"{e.name}\n" + " ".join(body)


# ------------------------------------------------------------------------------------------------ resolution


def facts_of_pages(world: World, entity_ids: Iterable[str]) -> list[Fact]:
    """All facts stated by the pages of ``entity_ids`` (what a reader of those pages can know)."""
    out: list[Fact] = []
    for eid in entity_ids:
        out += world.facts(eid)
    return out


def resolve(world: World, facts: list[Fact], clauses: list[tuple], ask: str) -> set[str]:
    """Every entity that the letter ``ask`` can stand for, given only ``facts``.

    ``clauses``: ``("kind", X, kind)``, ``("attr", X, attribute, value)`` or ``("rel", X, relation, Y)`` (X's
    ``relation`` is Y) with letters X, Y standing for distinct entities. A backtracking search that starts from the
    most constrained letter and reaches the others through relations; the questions are small (≤ 6 letters)."""
    forward: dict[tuple[str, str], set[str]] = {}  # (relation, subject) -> objects
    backward: dict[tuple[str, str], set[str]] = {}  # (relation, object) -> subjects
    by_attr: dict[tuple[str, int | str], set[str]] = {}
    mentioned: set[str] = set()
    for f in facts:
        mentioned.add(f.subject)
        if f.is_relation:
            forward.setdefault((f.key, f.subject), set()).add(str(f.value))
            backward.setdefault((f.key, str(f.value)), set()).add(f.subject)
            mentioned.add(str(f.value))
        else:
            by_attr.setdefault((f.key, f.value), set()).add(f.subject)
    letters: list[str] = []
    for c in clauses:
        for x in [c[1]] if c[0] != "rel" else [c[1], c[3]]:
            if x not in letters:
                letters.append(x)
    if ask not in letters:
        raise ValueError(f"letter {ask!r} appears in no clause")
    domain = {x: set(mentioned) for x in letters}
    for c in clauses:
        if c[0] == "kind":
            domain[c[1]] = {e for e in domain[c[1]] if world[e].kind == c[2]}
        elif c[0] == "attr":
            domain[c[1]] &= by_attr.get((c[2], c[3]), set())
    rels = [c for c in clauses if c[0] == "rel"]
    order = [min(letters, key=lambda x: len(domain[x]))]
    while len(order) < len(letters):
        linked = [
            x
            for x in letters
            if x not in order and any((c[1] == x and c[3] in order) or (c[3] == x and c[1] in order) for c in rels)
        ]
        rest = linked or [x for x in letters if x not in order]
        order.append(min(rest, key=lambda x: len(domain[x])))
    answers: set[str] = set()

    def candidates(x: str, assignment: dict[str, str]) -> set[str]:
        cands = domain[x]
        for c in rels:
            if c[1] == x and c[3] in assignment:
                cands = cands & backward.get((c[2], assignment[c[3]]), set())
            elif c[3] == x and c[1] in assignment:
                cands = cands & forward.get((c[2], assignment[c[1]]), set())
        return cands

    def search(i: int, assignment: dict[str, str]) -> None:
        if i == len(order):
            answers.add(assignment[ask])
            return
        x = order[i]
        for value in candidates(x, assignment):
            if value not in assignment.values():
                assignment[x] = value
                search(i + 1, assignment)
                del assignment[x]

    search(0, {})
    return answers
