"""Outcome rewards for long-context RL, one registry keyed by a record's ``reward_type``.

Following Beyond Reward Engineering §1.3 (and QwenLong-L1's ``docqa.py`` for answer extraction):

- the answer is the text after the last ``</think>``, then after the last "the answer is" when present;
- ``recall`` (the default): word-level recall of the gold answer in the answer;
- ``f1``: SQuAD word-level F1 (recall that pays for precision: extra words cost; not gameable by listing candidates);
- ``two_way_substring``: gold ⊂ answer or answer ⊂ gold after normalisation (LoongRL's KeyChain verifier);
- ``exact_match``: normalised equality;
- ``llm_judge``: binary; 1 when the answer matches exactly or numerically, otherwise the judge's verdict (a local
  HF model or an OpenAI-compatible endpoint, used only when one is configured). CrossEntity and LongMath use it
  because recall can be gamed by listing candidates and misses equivalent numeric forms.

Normalisation (SQuAD / docqa style): lowercase, punctuation and the articles a / an / the removed, whitespace collapsed.
No format or process reward: the paper measured −1.29 points for an LLM-judge process reward on the thinking.
"""

from __future__ import annotations

import json
import os
import re
import string
import urllib.error
import urllib.request
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from fractions import Fraction

__all__ = [
    "REWARDS",
    "LLMJudge",
    "exact_match",
    "extract_answer",
    "normalize_answer",
    "numbers_equal",
    "reward_fn",
    "score",
    "two_way_substring",
    "word_f1",
    "word_recall",
]

_ANSWER_IS = re.compile(r"the\s+(?:final\s+)?answer\s+is", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def extract_answer(completion: str) -> str:
    """The final answer in a completion: the text after the last ``</think>`` (empty while a ``<think>`` block is
    still open: an unfinished thought has no answer), then after the last "the answer is" if there is one."""
    text = completion
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:
        return ""
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        text = text[matches[-1].end() :]
        text = text.lstrip(" \t:：*")
    return text.strip()


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and articles, collapse whitespace."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def word_recall(prediction: str, gold: str) -> float:
    """Fraction of the gold answer's (normalised) words found in the prediction, counted with multiplicity."""
    gold_words = normalize_answer(gold).split()
    if not gold_words:
        return float(normalize_answer(prediction) == "")
    common = Counter(normalize_answer(prediction).split()) & Counter(gold_words)
    return sum(common.values()) / len(gold_words)


def word_f1(prediction: str, gold: str) -> float:
    """SQuAD's word-level F1 of the (normalised) prediction against the gold answer: recall that also pays for
    precision, so padding an answer with extra words (e.g. listing every candidate) lowers the score."""
    pred_words, gold_words = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_words or not gold_words:
        return float(pred_words == gold_words)
    common = sum((Counter(pred_words) & Counter(gold_words)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_words), common / len(gold_words)
    return 2 * precision * recall / (precision + recall)


def two_way_substring(prediction: str, gold: str) -> float:
    """1.0 when the normalised gold is inside the normalised prediction or the other way round (both non-empty)."""
    p, g = normalize_answer(prediction), normalize_answer(gold)
    if not p or not g:
        return 0.0
    return float(g in p or p in g)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)(/\d+)?$")


def _as_number(text: str) -> Fraction | None:
    t = text.strip().strip("$").replace(",", "").replace(" ", "")
    t = re.sub(r"^\\boxed\{(.*)\}$", r"\1", t)
    t = re.sub(r"\\[dt]?frac\{(-?\d+)\}\{(\d+)\}", r"\1/\2", t)
    t = t.rstrip(".").removesuffix("%")
    if not _NUMBER.match(t):
        return None
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def numbers_equal(prediction: str, gold: str, rel_tol: float = 1e-6) -> bool:
    """Whether the prediction states the gold number (1,000 = 1000 = 1000.0; 1/2 = 0.5 = \\frac{1}{2}).

    The prediction may carry words around one number ("about 1,200 dollars")."""
    g = _as_number(gold)
    if g is None:
        return False
    p = _as_number(prediction)
    if p is None:
        found = re.findall(r"[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?", prediction)
        if len(found) != 1:
            return False
        p = _as_number(found[0])
        if p is None:
            return False
    return abs(float(p) - float(g)) <= rel_tol * max(1.0, abs(float(g)))


# ------------------------------------------------------------------------------------------------ judge

JUDGE_PROMPT = (
    "You are grading an answer to a question against the reference answer. Say YES if the answer means the same "
    "as the reference (equivalent numbers, names or phrasings count), otherwise NO. Reply with one word.\n\n"
    "Question: {question}\nReference answer: {gold}\nAnswer to grade: {prediction}\n\nVerdict (YES or NO):"
)


def _verdict(text: str) -> float:
    t = text.strip().lower()
    m = re.search(r"\b(yes|no|correct|incorrect)\b", t)
    return float(bool(m) and m.group(1) in ("yes", "correct"))


class LLMJudge:
    """A binary judge: a local HF causal LM (``model`` = directory, built-in name, or a (model, tokenizer) pair) or an
    OpenAI-compatible ``/chat/completions`` endpoint (``url``, ``model_name``; the bearer key is read from the
    environment variable ``api_key_env`` when it is set). Greedy / temperature 0, a few tokens, YES → 1."""

    def __init__(
        self,
        model=None,
        url: str | None = None,
        model_name: str = "judge",
        api_key_env: str = "LONGFORGE_JUDGE_API_KEY",
        timeout: float = 60.0,
        max_new_tokens: int = 4,
    ):
        if (model is None) == (url is None):
            raise ValueError("LLMJudge: give exactly one of model (local HF model) or url (OpenAI-compatible endpoint)")
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"LLMJudge: url must start with http:// or https://, got {url!r}")
        self.url, self.model_name, self.api_key_env, self.timeout = url, model_name, api_key_env, timeout
        self.max_new_tokens = max_new_tokens
        self._model = self._tokenizer = None
        if model is not None:
            if isinstance(model, tuple):
                self._model, self._tokenizer = model
            else:
                from ..models.pretrained import pretrained

                self._model, self._tokenizer = pretrained(str(model))
        self.calls = 0

    def prompt(self, question: str, prediction: str, gold: str) -> str:
        return JUDGE_PROMPT.format(question=question or "(not given)", gold=gold, prediction=prediction)

    def __call__(self, question: str, prediction: str, gold: str) -> float:
        self.calls += 1
        text = self.prompt(question, prediction, gold)
        return _verdict(self._ask_endpoint(text) if self.url else self._ask_local(text))

    def _ask_endpoint(self, text: str) -> str:
        body = json.dumps(
            {
                "model": self.model_name,
                "messages": [{"role": "user", "content": text}],
                "temperature": 0,
                "max_tokens": max(self.max_new_tokens, 8),
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.url.rstrip("/")
        if not url.endswith("/chat/completions"):
            url += "/chat/completions"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = json.loads(response.read().decode())
            return str(data["choices"][0]["message"]["content"])
        except (urllib.error.URLError, TimeoutError, KeyError, IndexError, json.JSONDecodeError) as e:
            raise RuntimeError(f"LLM judge at {url} failed: {e}") from e

    def _ask_local(self, text: str) -> str:
        import torch

        tok, model = self._tokenizer, self._model
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        ids = tok(text, return_tensors="pt", add_special_tokens=not getattr(tok, "chat_template", None))
        device = next(model.parameters()).device
        with torch.no_grad():
            out = model.generate(
                input_ids=ids["input_ids"].to(device),
                attention_mask=ids["attention_mask"].to(device),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )
        return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


# ------------------------------------------------------------------------------------------------ registry

_warned_no_judge = False


def _best(metric: Callable[[str, str], float]):
    def reward(completion: str, answers: Sequence[str], question: str = "", judge: LLMJudge | None = None) -> float:
        prediction = extract_answer(completion)
        return max((metric(prediction, g) for g in answers), default=0.0)

    reward.__name__ = metric.__name__
    reward.__doc__ = f"max over gold answers of {metric.__name__}(extract_answer(completion), gold)"
    return reward


def judge_reward(completion: str, answers: Sequence[str], question: str = "", judge: LLMJudge | None = None) -> float:
    """1.0 when the extracted answer equals a gold answer (normalised) or states the same number; otherwise the judge's
    binary verdict when a judge is configured, else 0.0 (warned once)."""
    global _warned_no_judge
    prediction = extract_answer(completion)
    if not prediction:
        return 0.0
    if any(exact_match(prediction, g) or numbers_equal(prediction, g) for g in answers):
        return 1.0
    if judge is None:
        if not _warned_no_judge:
            warnings.warn(
                "reward_type llm_judge without a configured judge: only exact and numeric matches score "
                "(configure judge.model or judge.url)",
                stacklevel=2,
            )
            _warned_no_judge = True
        return 0.0
    return max((judge(question, prediction, g) for g in answers), default=0.0)


REWARDS: dict[str, Callable[..., float]] = {
    "recall": _best(word_recall),
    "f1": _best(word_f1),
    "two_way_substring": _best(two_way_substring),
    "exact_match": _best(exact_match),
    "llm_judge": judge_reward,
}


def reward_fn(reward_type: str) -> Callable[..., float]:
    """The reward function for ``reward_type``: ``f(completion, answers, question="", judge=None) -> float``."""
    try:
        return REWARDS[reward_type]
    except KeyError:
        raise ValueError(f"unknown reward_type {reward_type!r}; known: {', '.join(REWARDS)}") from None


def score(record, completion: str, judge: LLMJudge | None = None, reward_type: str | None = None) -> float:
    """The reward of ``completion`` for an RL record (an :class:`~longforge.data.rl.RLRecord` or its dict)."""
    get = record.get if isinstance(record, dict) else lambda k, d=None: getattr(record, k, d)
    meta = get("metadata") or {}
    question = meta.get("question", "") if isinstance(meta, dict) else ""
    prompt = get("prompt") or ""
    if not question and "Question:" in prompt:  # the generators end their prompts with "Question: ..."
        question = prompt.rsplit("Question:", 1)[1].strip()[:2000]
    return reward_fn(reward_type or get("reward_type"))(completion, get("answers"), question=question, judge=judge)
