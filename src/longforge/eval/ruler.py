"""RULER's 13 tasks, generated the way NVIDIA/RULER generates them (arXiv 2404.06654; ``scripts/data/synthetic``).

Every sample is fitted to its target length with the evaluated model's own tokenizer: the haystack size (words of
prose, noise lines, distractor needles, list words, documents) is the largest one for which
``tokens(input + answer_prefix) + tokens_to_generate <= max_seq_length``, found by binary search, as in RULER.
Templates, answer prefixes (typos included), needle formats, depth sampling, ICL examples and tokens-to-generate
are RULER's. What differs, and why:

- the essay haystack is the Python documentation (`haystack.py`), qa_1 / qa_2 use a synthetic QA set unless real
  SQuAD v2 / HotpotQA files are given (`qa.py`): nothing is downloaded;
- a sample that overflows its budget shrinks its haystack by 1% (RULER: by one "increment", up to 500 words),
  so samples stay within a few percent of the budget at short lengths too;
- FWE is fitted by the same binary search as the others (RULER's FWE loop ignores the tokens to generate, so its
  samples can exceed the length by up to 50 tokens);
- token counts are of the exact ids the model is fed (BOS included where the tokenizer adds one);
- one ``random.Random(seed)`` drives each (task, length); RULER's fixed-seed shuffles stay fixed-seed.
"""

from __future__ import annotations

import math
import random
import string
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from .haystack import (
    NOISE_HAYSTACK,
    common_words,
    extended_words,
    haystack_info,
    prose_words,
    random_key_word,
    split_sentences,
)
from .qa import load_qa_file, read_hotpotqa, read_squad, synthetic_hotpotqa, synthetic_squad
from .scoring import METRICS, effective_length, postprocess_pred


@dataclass(frozen=True)
class TaskTemplate:
    """RULER ``scripts/data/synthetic/constants.py``: the prompt, the answer prefix appended after it (and after
    the model's chat template, if any), how many tokens the model may generate, and the metric."""

    template: str
    answer_prefix: str
    tokens_to_generate: int
    metric: str = "string_match_all"


TEMPLATES = {
    "niah": TaskTemplate(
        "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
        "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?",
        " The special magic {type_needle_v} for {query} mentioned in the provided text are",
        128,
    ),
    "variable_tracking": TaskTemplate(
        "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
        "Question: Find all variables that are assigned the value {query} in the text above.",
        # RULER's spelling ("assgined") is kept: changing the prompt changes the scores.
        " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
        "assgined the value {query}, they are: ",
        30,
    ),
    "common_words_extraction": TaskTemplate(
        "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones "
        "that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?",
        " Answer: The top 10 words that appear most often in the list are:",
        120,
    ),
    "freq_words_extraction": TaskTemplate(
        "Read the following coded text and track the frequency of each coded word. Find the three most frequently "
        "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. "
        "What are the three most frequently appeared words in the above coded text?",
        " Answer: According to the coded text above, the three most frequently appeared words are:",
        50,
    ),
    "qa": TaskTemplate(
        "Answer the question based on the given documents. Only give me the answer and do not output any other "
        "words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given "
        "documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}",
        " Answer:",
        32,
        "string_match_part",
    ),
}

NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
DOCUMENT_PROMPT = "Document {i}:\n{document}"
# RULER niah.py: needles go in at depths sampled without replacement from round(linspace(0, 100, 40)) percent.
DEPTHS = tuple(round(100 * i / 39) for i in range(40))


@dataclass(frozen=True)
class RulerTask:
    """One RULER task: a generator family and its arguments (RULER ``scripts/synthetic.yaml``)."""

    family: str
    args: dict = field(default_factory=dict)

    @property
    def template(self) -> TaskTemplate:
        return TEMPLATES[self.family]


def _niah(haystack: str, k: str, v: str, num_k: int = 1, num_v: int = 1, num_q: int = 1) -> RulerTask:
    return RulerTask(
        "niah",
        dict(type_haystack=haystack, type_needle_k=k, type_needle_v=v, num_needle_k=num_k, num_needle_v=num_v,
             num_needle_q=num_q),
    )  # fmt: skip


TASKS: dict[str, RulerTask] = {
    "niah_single_1": _niah("noise", "words", "numbers"),
    "niah_single_2": _niah("essay", "words", "numbers"),
    "niah_single_3": _niah("essay", "words", "uuids"),
    "niah_multikey_1": _niah("essay", "words", "numbers", num_k=4),
    "niah_multikey_2": _niah("needle", "words", "numbers"),
    "niah_multikey_3": _niah("needle", "uuids", "uuids"),
    "niah_multivalue": _niah("essay", "words", "numbers", num_v=4),
    "niah_multiquery": _niah("essay", "words", "numbers", num_q=4),
    "vt": RulerTask("variable_tracking", dict(num_chains=1, num_hops=4)),
    "cwe": RulerTask("common_words_extraction", dict(freq_cw=30, freq_ucw=3, num_cw=10, num_fewshot=1)),
    "fwe": RulerTask("freq_words_extraction", dict(alpha=2.0, coded_wordlen=6)),
    "qa_1": RulerTask("qa", dict(dataset="squad")),
    "qa_2": RulerTask("qa", dict(dataset="hotpotqa")),
}
RULER_TASKS = tuple(TASKS)
# ruler-lite: one task per behaviour RULER measures, for quick checks: retrieval in repeated noise, in prose, among
# distractor needles, of several values; multi-hop tracing (vt); aggregation (fwe, cheaper than cwe); QA.
# Its average is over these 7 tasks and is not comparable with a 13-task RULER average.
RULER_LITE_TASKS = ("niah_single_1", "niah_single_2", "niah_multikey_2", "niah_multivalue", "vt", "fwe", "qa_1")
SUITES = {"ruler": RULER_TASKS, "ruler-lite": RULER_LITE_TASKS}


def resolve_tasks(tasks: str | Sequence[str]) -> list[str]:
    """A suite name ('ruler', 'ruler-lite'), one task name, or a list of task names → task names (validated)."""
    if isinstance(tasks, str):
        names = list(SUITES[tasks]) if tasks in SUITES else [tasks]
    else:
        names = list(tasks)
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise ValueError(
            f"unknown RULER task(s) {unknown or names}; choose from {', '.join(RULER_TASKS)} "
            f"(or a suite: {', '.join(SUITES)})"
        )
    return names


def check_tokenizer(tokenizer) -> None:
    """RULER generation needs an EOS token: it ends generation and pads batches."""
    if getattr(tokenizer, "eos_token_id", None) is None:
        raise ValueError(
            f"the tokenizer ({type(tokenizer).__name__}) has no EOS token (eos_token is None); set one, e.g. "
            "tokenizer.eos_token = '</s>', or save the tokenizer with an eos_token in tokenizer_config.json"
        )


class _Draft(NamedTuple):
    text: str  # the task text, before any chat template
    answer_prefix: str
    outputs: list[str]
    extra: dict


@dataclass
class _Builder:
    build: Callable[[int, int], _Draft]  # (haystack size, sample index) → draft
    min_size: int
    probe_size: int
    max_size: int | None = None
    info: dict = field(default_factory=dict)


class _Context:
    """What every generator shares for one (task, length): tokenizer, budget, seed, the random stream."""

    def __init__(self, tokenizer, max_seq_length: int, seed: int, chat_template: bool):
        self.tokenizer, self.budget, self.seed, self.chat_template = tokenizer, max_seq_length, seed, chat_template
        self.rng = random.Random(seed)
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat_template=True but the tokenizer has no chat template")

    def wrap(self, text: str) -> str:
        if not self.chat_template:
            return text
        messages = [{"role": "user", "content": text}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def count(self, text: str, special: bool = True) -> int:
        add = special and not self.chat_template  # a rendered chat template already holds its special tokens
        return len(self.tokenizer(text, add_special_tokens=add, verbose=False)["input_ids"])

    def prompt_tokens(self, draft: _Draft, tokens_to_generate: int) -> int:
        return self.count(self.wrap(draft.text) + draft.answer_prefix) + tokens_to_generate


def _fit(tokens: Callable[[int], int], budget: int, min_size: int, probe_size: int, max_size: int | None) -> int:
    """The largest haystack size whose sample fits ``budget``: RULER's binary search, with the upper bound taken
    from the marginal tokens per unit of a probe (then doubled until it overflows), capped at ``max_size``."""
    low_tokens = tokens(min_size)
    if low_tokens > budget:
        raise _TooShort(low_tokens)
    if max_size is not None and tokens(max_size) <= budget:
        return max_size  # the whole source fits (e.g. a small QA file): RULER then uses every document
    probe = max(min_size + 1, probe_size if max_size is None else min(probe_size, max_size))
    per_unit = max((tokens(probe) - low_tokens) / (probe - min_size), 0.1)  # every unit costs some tokens
    high = min_size + int((budget - low_tokens) / per_unit * 1.2) + 1
    while tokens(high) <= budget and (max_size is None or high < max_size):
        high *= 2
    if max_size is not None:
        high = min(high, max_size)
    best, low = min_size, min_size + 1
    while low <= high:
        mid = (low + high) // 2
        if tokens(mid) <= budget:
            best, low = mid, mid + 1
        else:
            high = mid - 1
    return best


class _TooShort(Exception):
    def __init__(self, needed: int):
        self.needed = needed


def _random_value(rng: random.Random, kind: str) -> str:
    if kind == "numbers":  # 7 digits, as RULER's generate_random_number
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":
        return random_key_word(rng)
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _essay_words(size: int) -> str:
    words = prose_words()
    if size > len(words):  # RULER repeats the essays when the haystack needs more words than they have
        words = words * math.ceil(size / len(words))
    return " ".join(words[:size])


def _niah_builder(task: RulerTask, ctx: _Context, needle_depths: Sequence[float] | None) -> _Builder:
    a = task.args
    num_k, num_v, num_q = max(a["num_needle_k"], a["num_needle_q"]), a["num_needle_v"], a["num_needle_q"]
    type_k, type_v, haystack = a["type_needle_k"], a["type_needle_v"], a["type_haystack"]
    if needle_depths is not None and (haystack != "essay" or len(needle_depths) != num_k * num_v):
        raise ValueError("needle_depths needs an essay-haystack NIAH task and one depth per needle")
    rng, tpl = ctx.rng, task.template

    def build(size: int, index: int) -> _Draft:
        keys, values, needles = [], [], []
        for _ in range(num_k):
            keys.append(_random_value(rng, type_k))
            values.append([])
            for _ in range(num_v):
                values[-1].append(_random_value(rng, type_v))
                needles.append(NEEDLE.format(type_needle_v=type_v, key=keys[-1], value=values[-1][-1]))
        random.Random(ctx.seed).shuffle(needles)  # RULER shuffles with a fresh Random(seed) each time
        if haystack == "essay":
            sentences = split_sentences(_essay_words(size))
            depths = list(needle_depths) if needle_depths is not None else rng.sample(DEPTHS, len(needles))
            cuts = [0] + sorted(int(len(sentences) * d / 100) for d in depths) + [len(sentences)]
            parts = []
            for i in range(1, len(cuts)):
                parts.append(" ".join(sentences[cuts[i - 1] : cuts[i]]))
                if i - 1 < len(needles):
                    parts.append(needles[i - 1])
            context, depths = " ".join(parts), sorted(depths)
        else:
            if haystack == "noise":
                lines = [NOISE_HAYSTACK] * size
            else:  # "needle": every filler line is a distractor needle with its own random key and value
                lines = []
                for _ in range(size):
                    key = _random_value(rng, type_k)
                    lines.append(NEEDLE.format(type_needle_v=type_v, key=key, value=_random_value(rng, type_v)))
            positions = sorted(rng.sample(range(size), len(needles)), reverse=True)
            for position, needle in zip(positions, needles):
                lines.insert(position, needle)
            context, depths = "\n".join(lines), sorted(round(100 * p / size) for p in positions)
        picked = rng.sample(range(num_k), num_q)
        queries, answers = [keys[i] for i in picked], [value for i in picked for value in values[i]]
        query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
        template, prefix, noun = tpl.template, tpl.answer_prefix, type_v
        if num_q * num_v == 1:  # RULER singularises the prompt for a single answer
            template, prefix = (_singular(s) for s in (template, prefix))
            noun = type_v[:-1]
        return _Draft(
            template.format(type_needle_v=noun, context=context, query=query),
            prefix.format(type_needle_v=noun, query=query),
            answers,
            {"needle_depths": depths},
        )

    probe = {"essay": 500, "noise": 25, "needle": 25}[haystack]
    return _Builder(build, min_size=1 if haystack == "essay" else num_k * num_v, probe_size=probe)


def _singular(text: str) -> str:
    for plural, singular in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
        text = text.replace(plural, singular)
    return text


def _vt_builder(task: RulerTask, ctx: _Context) -> _Builder:
    num_chains, num_hops = task.args["num_chains"], task.args["num_hops"]
    rng, tpl = ctx.rng, task.template

    def chains(is_icl: bool):
        letters, hops = (3, min(10, num_hops)) if is_icl else (5, num_hops)
        names: list[str] = []
        while len(names) < num_chains * (hops + 1):
            name = "".join(rng.choices(string.ascii_uppercase, k=letters))
            if name not in names:
                names.append(name)
        groups = [names[i : i + hops + 1] for i in range(0, len(names), hops + 1)]
        lines = []
        for group in groups:  # np.random.randint(10000, 99999) excludes 99999
            value = "12345" if is_icl else str(rng.randint(10000, 99998))
            lines.append([f"VAR {group[0]} = {value}"] + [f"VAR {group[j + 1]} = VAR {group[j]} " for j in range(hops)])
        return groups, lines, hops

    def render(size: int, is_icl: bool) -> _Draft:
        groups, lines, hops = chains(is_icl)
        value = lines[0][0].split("=")[-1].strip()
        sentences = [NOISE_HAYSTACK] * size
        for chain in lines:
            positions = sorted(rng.sample(range(len(sentences)), len(chain)))
            for j, position in enumerate(positions):
                sentences.insert(position + j, chain[j])
        context = "\n".join(sentences).replace(". \n", ".\n")
        fields = dict(context=context, query=value, num_v=hops + 1)
        return _Draft(tpl.template.format(**fields), tpl.answer_prefix.format(**fields), groups[0], {})

    # The one ICL example: RULER fits it to 500 tokens (no tokens to generate) with 3-letter names and value 12345,
    # then re-randomises its names and value for every sample.
    def icl_tokens(size: int) -> int:
        draft = render(size, True)
        return ctx.count(draft.text + draft.answer_prefix, special=False)

    try:
        icl_size = _fit(icl_tokens, 500, num_hops + 1, 5, None)
    except _TooShort as e:  # pragma: no cover - needs a tokenizer spending >100 tokens on a noise line
        raise ValueError(f"vt: this tokenizer cannot fit RULER's ICL example in 500 tokens ({e.needed})") from None
    icl_draft = render(icl_size, True)
    icl = icl_draft.text + icl_draft.answer_prefix + " " + " ".join(icl_draft.outputs) + "\n"

    def randomize_icl() -> str:
        example = icl
        for name in icl.strip().split()[-len(icl_draft.outputs) :]:
            example = example.replace(name, "".join(rng.choices(string.ascii_uppercase, k=len(name))))
        return example.replace("12345", str(rng.randint(10000, 99998)))

    def build(size: int, index: int) -> _Draft:
        draft = render(size, False)
        return draft._replace(text=randomize_icl() + "\n" + draft.text)

    return _Builder(build, min_size=num_hops + 1, probe_size=10)


def _cwe_builder(task: RulerTask, ctx: _Context) -> _Builder:
    a = task.args
    num_cw, rng, tpl = a["num_cw"], ctx.rng, task.template
    vocab = list(common_words())
    random.Random(ctx.seed).shuffle(vocab)
    fallback: list[str] = []

    def example(num_words: int, common_repeats: int, uncommon_repeats: int):
        nonlocal fallback
        pool = vocab
        if num_words > len(vocab):  # RULER: sample from the big english_words list instead (see haystack.py)
            if len(fallback) < num_words:
                fallback = extended_words(num_words)
            pool = fallback
        chosen = rng.sample(pool, num_words)
        common, uncommon = chosen[:num_cw], chosen[num_cw:]
        words = common * common_repeats + uncommon * uncommon_repeats
        random.Random(ctx.seed).shuffle(words)
        return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words)), common

    # RULER: below 4096 tokens the example has 20 words (3x/1x) and the list repeats 6x/1x; else 40 words (10x/3x)
    # and the configured 30x/3x.
    short = ctx.budget < 4096
    shot_args = (20, 3, 1) if short else (40, 10, 3)
    repeats = (6, 1) if short else (a["freq_cw"], a["freq_ucw"])

    def build(size: int, index: int) -> _Draft:
        shots = []
        for _ in range(a["num_fewshot"]):
            context, answer = example(*shot_args)
            numbered = " ".join(f"{i + 1}. {w}" for i, w in enumerate(answer))
            shots.append(tpl.template.format(context=context, query="") + tpl.answer_prefix + " " + numbered)
        context, answer = example(size, *repeats)
        text = "\n".join(shots) + "\n" + tpl.template.format(context=context, query="")
        return _Draft(text, tpl.answer_prefix, answer, {})

    return _Builder(build, min_size=num_cw, probe_size=512)


def _zeta(s: float, terms: int = 1000) -> float:
    """Riemann zeta for s > 1 (scipy.special.zeta in RULER): partial sum plus the Euler–Maclaurin tail."""
    return sum(k**-s for k in range(1, terms + 1)) + terms ** (1 - s) / (s - 1) - terms**-s / 2


def _fwe_builder(task: RulerTask, ctx: _Context) -> _Builder:
    alpha, word_len = task.args["alpha"], task.args["coded_wordlen"]
    vocab_size = ctx.budget // 50  # RULER's default vocab size
    if vocab_size < 4:
        raise _TooShort(200)
    rng, tpl, zeta = ctx.rng, task.template, _zeta(alpha)

    def build(size: int, index: int) -> _Draft:
        vocab = {"".join(rng.choices(string.ascii_lowercase, k=word_len)) for _ in range(vocab_size)}
        while len(vocab) < vocab_size:
            vocab.add("".join(rng.choices(string.ascii_lowercase, k=word_len)))
        vocab = sorted(vocab)
        random.Random(ctx.seed).shuffle(vocab)
        vocab[0] = "..."  # the most frequent "word" is noise the prompt says to ignore
        counts = [int(size * k**-alpha / zeta) for k in range(1, vocab_size + 1)]  # Zipf: N k^-a / zeta(a)
        words = [w for w, c in zip(vocab, counts) for _ in range(c)]
        random.Random(ctx.seed).shuffle(words)
        return _Draft(tpl.template.format(context=" ".join(words), query=""), tpl.answer_prefix, vocab[1:4], {})

    # 50 words is the smallest size at which the top three counts are distinct and above the fourth.
    return _Builder(build, min_size=50, probe_size=1000)


def _qa_builder(task: RulerTask, ctx: _Context, num_samples: int, qa_file) -> _Builder:
    dataset = task.args["dataset"]
    if qa_file is not None:
        qas, docs = load_qa_file(qa_file, dataset)
        source = str(qa_file)
    else:  # a pool big enough for the length and the sample count, rounded up so pools are shared across lengths
        if dataset == "squad":
            need = max(num_samples / 7, ctx.budget / 200, 16)
            qas, docs = read_squad(synthetic_squad(2 ** math.ceil(math.log2(need))))
        else:
            need = max(num_samples, ctx.budget / 400, 16)
            qas, docs = read_hotpotqa(synthetic_hotpotqa(2 ** math.ceil(math.log2(need))))
        source = f"synthetic-{dataset}"
    if num_samples > len(qas):
        raise ValueError(f"{source} has {len(qas)} answerable questions; {num_samples} samples were asked for")
    rng, tpl = ctx.rng, task.template

    def build(size: int, index: int) -> _Draft:
        qa = qas[index]  # RULER takes the questions in file order
        gold, more = qa["context"], qa.get("more_context", [])
        if size < len(docs):
            if size - len(gold) > len(more):
                taken = set(gold) | set(more)
                others = [i for i in range(len(docs)) if i not in taken]
                chosen = gold + more + rng.sample(others, size - len(gold) - len(more))
            else:
                chosen = gold + rng.sample(more, max(0, size - len(gold)))
            documents = [docs[i] for i in chosen]
        else:
            documents = list(docs)
        random.Random(ctx.seed).shuffle(documents)
        context = "\n\n".join(DOCUMENT_PROMPT.format(i=i + 1, document=d) for i, d in enumerate(documents))
        return _Draft(tpl.template.format(context=context, query=qa["query"]), tpl.answer_prefix, qa["outputs"], {})

    min_docs = max(len(qa["context"]) for qa in qas[:num_samples])
    return _Builder(build, min_size=min_docs, probe_size=10, max_size=len(docs), info={"qa_source": source})


def _builder(task_name: str, ctx: _Context, num_samples: int, qa_file, needle_depths) -> _Builder:
    task = TASKS[task_name]
    if task.family == "niah":
        return _niah_builder(task, ctx, needle_depths)
    if needle_depths is not None:
        raise ValueError(f"needle_depths applies to NIAH tasks only, not {task_name}")
    if task.family == "variable_tracking":
        return _vt_builder(task, ctx)
    if task.family == "common_words_extraction":
        return _cwe_builder(task, ctx)
    if task.family == "freq_words_extraction":
        return _fwe_builder(task, ctx)
    return _qa_builder(task, ctx, num_samples, qa_file)


def _too_short(task: str, max_seq_length: int, needed: int) -> ValueError:
    return ValueError(
        f"max_seq_length={max_seq_length} is below the minimum length of task {task!r}: its smallest sample needs "
        f"{needed} tokens with this tokenizer (prompt, smallest haystack and "
        f"{TASKS[task].template.tokens_to_generate} tokens to generate)"
    )


# Building samples (haystack fitting by binary search on the tokenizer) costs more than evaluating a tiny model on
# them; callers that evaluate several models on the same samples (HALO's layer sweep, the HyPE sweep, teacher vs
# student reports) reuse them. Samples are read-only for `evaluate`.
_SAMPLE_MEMO: dict = {}
_SAMPLE_MEMO_SIZE = 128


def _memo_samples(name, tokenizer, length, num_samples, seed, chat_template, qa_file) -> list[dict]:
    key = (name, id(tokenizer), getattr(tokenizer, "name_or_path", None), len(tokenizer), length, num_samples, seed,
           chat_template, str(qa_file))  # fmt: skip
    if key not in _SAMPLE_MEMO:
        if len(_SAMPLE_MEMO) >= _SAMPLE_MEMO_SIZE:
            _SAMPLE_MEMO.pop(next(iter(_SAMPLE_MEMO)))
        _SAMPLE_MEMO[key] = generate_samples(
            name, tokenizer, length, num_samples, seed, chat_template=chat_template, qa_file=qa_file
        )
    return _SAMPLE_MEMO[key]


def generate_samples(
    task: str,
    tokenizer,
    max_seq_length: int,
    num_samples: int,
    seed: int = 0,
    *,
    chat_template: bool = False,
    qa_file=None,
    needle_depths: Sequence[float] | None = None,
) -> list[dict]:
    """``num_samples`` RULER samples of ``task``, each fitted to ``max_seq_length`` tokens of ``tokenizer``.

    Each sample is a dict with ``input`` (the prompt, inside the chat template if ``chat_template``),
    ``answer_prefix`` (appended to ``input`` to make the model's prompt), ``outputs`` (the gold strings),
    ``length`` (prompt tokens + tokens to generate, never above ``max_seq_length``), ``tokens_to_generate``,
    ``task``, ``index``, ``max_seq_length``, ``chat_template`` and, for NIAH tasks, ``needle_depths`` (percent).
    ``qa_file``: a SQuAD v2.0 (qa_1) or HotpotQA (qa_2) JSON file; without one a synthetic set is used.
    ``needle_depths``: fixed insertion depths for essay NIAH tasks (used by the NIAH depth × length sweep).
    Deterministic for a given seed (and Python version, which fixes the prose haystack).
    """
    resolve_tasks([task])
    check_tokenizer(tokenizer)
    if not isinstance(max_seq_length, int) or max_seq_length <= 0:
        raise ValueError(f"max_seq_length must be a positive integer, got {max_seq_length!r}")
    if not isinstance(num_samples, int) or num_samples <= 0:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    ttg = TASKS[task].template.tokens_to_generate
    ctx = _Context(tokenizer, max_seq_length, seed, chat_template)
    try:
        builder = _builder(task, ctx, num_samples, qa_file, needle_depths)
        size = _fit(
            lambda n: ctx.prompt_tokens(builder.build(n, 0), ttg),
            max_seq_length,
            builder.min_size,
            builder.probe_size,
            builder.max_size,
        )
    except _TooShort as e:
        raise _too_short(task, max_seq_length, e.needed) from None
    samples = []
    for index in range(num_samples):
        used = size
        while True:
            draft = builder.build(used, index)
            length = ctx.prompt_tokens(draft, ttg)
            if length <= max_seq_length:
                break
            if used <= builder.min_size:
                raise _too_short(task, max_seq_length, length)
            used = max(builder.min_size, used - max(1, used // 100))
        samples.append(
            {
                "index": index,
                "task": task,
                "input": ctx.wrap(draft.text),
                "answer_prefix": draft.answer_prefix,
                "outputs": list(draft.outputs),
                "length": length,
                "max_seq_length": max_seq_length,
                "tokens_to_generate": ttg,
                "chat_template": chat_template,
                **builder.info,
                **draft.extra,
            }
        )
    return samples


def check_length(task: str, tokenizer, max_seq_length: int, *, chat_template: bool = False, qa_file=None) -> None:
    """Raise ValueError now if ``task`` cannot fit ``max_seq_length`` (cheap: one sample at the smallest size)."""
    ctx = _Context(tokenizer, max_seq_length, 0, chat_template)
    try:
        builder = _builder(task, ctx, 1, qa_file, None)
        needed = ctx.prompt_tokens(builder.build(builder.min_size, 0), TASKS[task].template.tokens_to_generate)
    except _TooShort as e:
        needed = e.needed
    if needed > max_seq_length:
        raise _too_short(task, max_seq_length, needed)


def score_task(task: str, predictions: Sequence[str], samples: Sequence[dict]) -> float:
    """RULER's metric for ``task`` on raw model outputs (post-processed as RULER does)."""
    metric = METRICS[TASKS[task].template.metric]
    return metric([postprocess_pred(p) for p in predictions], [s["outputs"] for s in samples])


def evaluate(
    model,
    tokenizer,
    tasks: str | Sequence[str] = "ruler",
    lengths: Sequence[int] = (4096,),
    num_samples: int = 500,
    batch_size: int = 1,
    *,
    seed: int = 0,
    chat_template: bool = False,
    qa_files: dict[str, str] | None = None,
    progress: bool = True,
) -> dict:
    """Run RULER: generate samples per (task, length), greedy-decode them in batches, score with RULER's metrics.

    ``tasks``: 'ruler', 'ruler-lite' or task names; ``qa_files``: {'qa_1': squad.json, 'qa_2': hotpotqa.json}.
    Returns a JSON-ready dict: ``scores`` {task: {length: score}}, ``average`` {length: mean over tasks},
    ``overall_average``, ``effective_length`` (RULER's 85.6 rule), ``predictions`` (one record per sample), and
    the settings that produced them.
    """
    from .generation import evaluation_progress, greedy_generate

    names = resolve_tasks(tasks)
    lengths = sorted({int(n) for n in lengths})
    if not lengths or lengths[0] <= 0:
        raise ValueError(f"lengths must be positive integers, got {lengths}")
    qa_files = dict(qa_files or {})
    for key in qa_files:
        if key not in ("qa_1", "qa_2"):
            raise ValueError(f"qa_files keys are 'qa_1' (SQuAD v2.0) and 'qa_2' (HotpotQA), got {key!r}")
    check_tokenizer(tokenizer)
    for name in names:  # fail before any decoding if a task cannot fit the shortest length
        check_length(name, tokenizer, lengths[0], chat_template=chat_template, qa_file=qa_files.get(name))
    scores: dict[str, dict[str, float]] = {name: {} for name in names}
    records, qa_sources = [], {}
    with evaluation_progress(len(names) * len(lengths) * num_samples, enabled=progress) as bar:
        for length in lengths:
            for name in names:
                bar.describe(f"{name} @ {length}: preparing")
                samples = _memo_samples(name, tokenizer, length, num_samples, seed, chat_template, qa_files.get(name))
                bar.describe(f"{name} @ {length}")
                predictions = greedy_generate(
                    model,
                    tokenizer,
                    [s["input"] + s["answer_prefix"] for s in samples],
                    max_new_tokens=TASKS[name].template.tokens_to_generate,
                    batch_size=batch_size,
                    add_special_tokens=not chat_template,
                    on_batch=bar.advance,
                )
                scores[name][str(length)] = score_task(name, predictions, samples)
                if "qa_source" in samples[0]:
                    qa_sources[name] = samples[0]["qa_source"]
                for sample, prediction in zip(samples, predictions):
                    records.append(
                        {
                            "task": name,
                            "max_seq_length": length,
                            "index": sample["index"],
                            "length": sample["length"],
                            "outputs": sample["outputs"],
                            "pred": postprocess_pred(prediction),
                            **({"needle_depths": sample["needle_depths"]} if "needle_depths" in sample else {}),
                        }
                    )
    average = {str(n): round(sum(scores[t][str(n)] for t in names) / len(names), 2) for n in lengths}
    return {
        "tasks": names,
        "lengths": lengths,
        "num_samples": num_samples,
        "seed": seed,
        "chat_template": chat_template,
        "metrics": {t: TASKS[t].template.metric for t in names},
        "tokens_to_generate": {t: TASKS[t].template.tokens_to_generate for t in names},
        "scores": scores,
        "average": average,
        "overall_average": round(sum(average.values()) / len(average), 2),
        "effective_length": effective_length({int(k): v for k, v in average.items()}),
        "haystack": haystack_info(),
        "qa_sources": qa_sources,
        "predictions": records,
    }
