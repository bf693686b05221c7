"""Retrieval family: FuzzyNeedle and MultiNeedle (Beyond Reward Engineering §1.2).

FuzzyNeedle
    The needle states a fact about an *item* ("Alma Brest loves the texture of salmon"); the question names the item's
    *category* ("Who enjoys eating fish?"), so the match is an IS-A paraphrase, not a string match. Distractor
    needles use the same wording with items of sibling categories (trout is fish; figs, leeks, brie are not).
    Length bucket 0–32K.
MultiNeedle
    MRCR-like: a long user/assistant conversation holds several requests for the same thing ("write a poem about
    tapirs") among near-duplicates (a poem about otters, a riddle about tapirs) and other turns; the question asks for
    the K-th response to that request, which must be reproduced.
"""

from __future__ import annotations

import random

from .base import ANSWER_INSTRUCTION, Generator, _Retry, ordinal
from .world import TAXONOMY

__all__ = ["FuzzyNeedle", "MultiNeedle", "NEEDLE_TEMPLATES"]

# domain -> (needle templates with {name}/{item}, question template with {category})
NEEDLE_TEMPLATES = {
    "food": (
        (
            "{name} loves the texture of {item}.",
            "{name} has a weekly craving for {item}.",
            "{name} never leaves the market without buying {item}.",
            "{name} ordered {item} at every dinner last year.",
        ),
        "Who enjoys eating {category}?",
    ),
    "music": (
        (
            "{name} practises the {item} every evening.",
            "{name} has played the {item} since childhood.",
            "{name} took lessons on the {item} for ten years.",
        ),
        "Who plays one of the {category}?",
    ),
    "sport": (
        (
            "{name} is passionate about {item}.",
            "{name} trains for {item} competitions every weekend.",
            "{name} has coached {item} at a local club for years.",
        ),
        "Who practises one of the {category}?",
    ),
    "animal": (
        (
            "{name} spends hours photographing {item}.",
            "{name} keeps a notebook full of sketches of {item}.",
            "{name} volunteers at a shelter that cares for {item}.",
        ),
        "Who is fond of {category}?",
    ),
}


class FuzzyNeedle(Generator):
    name = "FuzzyNeedle"
    reward_type = "recall"
    default_max_tokens = 32768

    def build(self, rng: random.Random, index: int):
        domain = rng.choice(sorted(TAXONOMY))
        categories = TAXONOMY[domain]
        category = rng.choice(sorted(categories))
        siblings = [c for c in sorted(categories) if c != category]
        templates, question_template = NEEDLE_TEMPLATES[domain]
        names: set[str] = set()
        needles = []
        answer_name = self.world.fresh_person_name(rng, names)
        names.add(answer_name)
        item = rng.choice(categories[category])
        needles.append(
            {
                "name": answer_name,
                "item": item,
                "category": category,
                "is_answer": True,
                "sentence": rng.choice(templates).format(name=answer_name, item=item),
            }
        )
        for _ in range(rng.randint(3, 8)):
            name = self.world.fresh_person_name(rng, names)
            names.add(name)
            sibling = rng.choice(siblings)
            item = rng.choice(categories[sibling])
            needles.append(
                {
                    "name": name,
                    "item": item,
                    "category": sibling,
                    "is_answer": False,
                    "sentence": rng.choice(templates).format(name=name, item=item),
                }
            )
        header = "Read the following documents. A few sentences in them describe people's tastes and hobbies."
        question = (
            f"Question: {question_template.format(category=category)} Give the person's full name.\n"
            + ANSWER_INSTRUCTION
        )
        fitted = self.fit(rng, header, [n["sentence"] for n in needles], question, self.filler(rng))
        n_units = max(1, len(fitted.units) - 1)
        for needle, pos in zip(needles, fitted.evidence_positions):
            needle["depth"] = round(pos / n_units, 4)
        meta = {"domain": domain, "category": category, "needles": needles}
        return fitted, [answer_name], meta


_FORMATS = ("poem", "riddle", "short story", "limerick", "haiku", "fable", "toast", "lullaby", "sonnet", "proverb")
_TOPICS = tuple(
    """tapirs lighthouses otters glaciers lanterns foxes harbours teapots comets orchards bicycles owls typewriters
    volcanoes penguins libraries kites deserts ferries hedgehogs clocks tides violins meadows badgers bridges moths
    chess wolves umbrellas""".split()
)
_ADJ = tuple(
    """amber quiet silver restless hollow golden patient narrow gentle bright wandering crooked ancient tender
    distant humble velvet frozen sleepy brave scarlet dusty hidden secret""".split()
)
_NOUN = tuple(
    """river lantern meadow shadow window harbour orchard feather pebble candle compass thimble ribbon sparrow
    cellar chimney kettle ladder marble willow anchor saddle""".split()
)
_VERB = tuple(
    """hums whispers lingers trembles wanders glimmers settles drifts echoes listens waits gathers tumbles
    flickers shivers murmurs""".split()
)
_PREP = ("beneath", "beyond", "across", "beside", "within", "above", "around", "toward")


def _response(rng: random.Random, fmt: str, topic: str) -> str:
    lines = []
    for _ in range(rng.randint(2, 4)):
        lines.append(
            f"The {rng.choice(_ADJ)} {rng.choice(_NOUN)} {rng.choice(_VERB)} {rng.choice(_PREP)} "
            f"the {rng.choice(_ADJ)} {rng.choice(_NOUN)}"
        )
    lines[rng.randrange(len(lines))] += f", and the {topic} {rng.choice(_VERB)}"
    return "\n".join(line + "." for line in lines)


class MultiNeedle(Generator):
    name = "MultiNeedle"
    reward_type = "recall"

    def build(self, rng: random.Random, index: int):
        fmt, topic = rng.choice(_FORMATS), rng.choice(_TOPICS)
        occurrences = rng.randint(2, 4)
        k = rng.randint(1, occurrences)
        responses: set[str] = set()

        def turn(f: str, t: str) -> str:
            for _ in range(100):
                resp = _response(rng, f, t)
                if resp not in responses:
                    responses.add(resp)
                    return f"User: Write a {f} about {t}.\nAssistant: {resp}"
            raise _Retry("could not draw a new response")  # pragma: no cover

        targets = [turn(fmt, topic) for _ in range(occurrences)]
        # near-duplicates: the same format about another topic, another format about the same topic
        near = [turn(fmt, rng.choice([t for t in _TOPICS if t != topic])) for _ in range(rng.randint(2, 5))]
        near += [turn(rng.choice([f for f in _FORMATS if f != fmt]), topic) for _ in range(rng.randint(2, 5))]

        def other():
            f, t = rng.choice(_FORMATS), rng.choice(_TOPICS)
            while (f, t) == (fmt, topic):
                f, t = rng.choice(_FORMATS), rng.choice(_TOPICS)
            return turn(f, t)

        evidence = targets + near
        header = "Below is a long conversation between a user and an assistant."
        question = (
            f"User: Repeat, word for word, the {ordinal(k)} {fmt} about {topic} that the assistant wrote in the "
            f"conversation above. Reply with that {fmt} only."
        )
        fitted = self.fit(rng, header, evidence, question, other)
        # the K-th target in the final order of the conversation
        order = sorted(range(occurrences), key=lambda i: fitted.evidence_positions[i])
        answer = targets[order[k - 1]].split("\nAssistant: ", 1)[1]
        meta = {"format": fmt, "topic": topic, "k": k, "occurrences": occurrences}
        return fitted, [answer], meta
