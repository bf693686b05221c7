"""The training stream: packed rows of prose and synthetic skills, with per-token loss weights.

Each row of a batch is drawn from one *source* with probability given by ``mix`` (a fraction of rows, not of
tokens):

* ``"prose"``: the built-in documentation prose (:mod:`longforge.data.corpus`), documents joined by eos in a
  shuffled order per epoch, cut into rows; every token has weight 1.
* ``"text"``: a user's texts (:mod:`longforge.data.sources`), packed the same way.
* a skill name (``niah``, ``multikey``, ``kv``, ``vt``, ``facts``; :mod:`longforge.data.skills`): one or more
  samples joined by eos, the last few tokens filled with prose. Answer tokens have weight ``answer_weight``, all
  other tokens ``context_weight``.

``loss_weight[b, t]`` weighs the loss of *predicting* token ``t`` (from the tokens before it), so column 0 is
always 0. The trainer's loss is ``sum(w[:, 1:] * ce(logits[:, :-1], ids[:, 1:])) / sum(w[:, 1:])``.

Determinism and resume: all randomness comes from one ``random.Random`` (which source, every skill sample) and
from permutations seeded by ``(seed, epoch)``; :meth:`TrainStream.state_dict` holds that RNG's state and each
source's cursor, so a restored stream yields exactly the batches the uninterrupted one would, for any sequence of
``(batch_size, seq_len)`` calls.

Speed: prose is tokenized once when the stream is built; skills are assembled from cached segment encodings
(:class:`~longforge.data.skills.TokenCounter`), so only keys, values and new haystack sentences are encoded.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from .corpus import DEFAULT_PROSE_SOURCES, Document, essay_sentences, prose_documents, split_documents
from .skills import PROBES, SKILLS, Sample, SkillContext, TokenCounter

__all__ = ["DEFAULT_MIX", "TrainStream", "answer_accuracy"]

# Rows per source. Retrieval needs dense supervision (teacher_notes): about half the rows are skills.
DEFAULT_MIX = {"prose": 0.45, "niah": 0.18, "multikey": 0.12, "kv": 0.05, "vt": 0.12, "facts": 0.08}
MIN_SKILL_TOKENS = 192  # the shortest sample every skill fits (a uuid needle and its question)
_STATE_VERSION = 1


class _DocCursor:
    """Reads documents in a per-epoch shuffled order as one endless token stream with eos after each document."""

    def __init__(self, num_docs: int, get_ids: Callable[[int], np.ndarray], eos_id: int, seed: int, salt: int):
        if num_docs == 0:
            raise ValueError("a text source of the stream has no documents")
        self._num_docs, self._get_ids, self._eos = num_docs, get_ids, eos_id
        self._seed, self._salt = seed, salt
        self.epoch, self.index, self.offset = 0, 0, 0
        self._order = self._permutation(0)
        self._current: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self._seed, self._salt, epoch]).permutation(self._num_docs)

    def _doc(self) -> np.ndarray:
        doc = int(self._order[self.index])
        if self._current is None or self._current[0] != doc:
            ids = self._get_ids(doc)
            self._current = (doc, np.concatenate([ids, np.array([self._eos], dtype=np.int32)]))
        return self._current[1]

    def take(self, n: int) -> np.ndarray:
        parts = []
        while n > 0:
            doc = self._doc()
            chunk = doc[self.offset : self.offset + n]
            parts.append(chunk)
            self.offset += len(chunk)
            n -= len(chunk)
            if self.offset == len(doc):
                self.index, self.offset = self.index + 1, 0
                if self.index == self._num_docs:
                    self.epoch, self.index = self.epoch + 1, 0
                    self._order = self._permutation(self.epoch)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "offset": self.offset}

    def load_state_dict(self, state: Mapping) -> None:
        self.epoch, self.index, self.offset = int(state["epoch"]), int(state["index"]), int(state["offset"])
        self._order = self._permutation(self.epoch)


class TrainStream:
    """Batches of packed training rows: ``{"input_ids": LongTensor[B, T], "loss_weight": FloatTensor[B, T]}``.

    Args:
        tokenizer: a fast tokenizer (e.g. from :func:`longforge.data.tokenizer.build_tokenizer`).
        seed: fixes everything: the order of documents, which source each row uses, every skill sample.
        mix: fraction of rows per source, ``{"prose": p, "text": p, <skill>: p, ...}`` (normalised). Default
            :data:`DEFAULT_MIX`. When ``text_source`` is given and ``mix`` has no ``"text"`` key, the prose share
            goes to the user's text (name both keys to use both).
        answer_weight: loss weight of answer tokens in skill rows (teacher_notes: dense, up-weighted answers).
        context_weight: loss weight of the other tokens of skill rows (0 trains on answers only).
        prose_docs: documents to use instead of reading ``prose_sources`` (tests, custom corpora).
        prose_sources: what the built-in prose is read from (see :func:`~longforge.data.corpus.prose_documents`).
        heldout_fraction: share of prose documents kept out of training for :meth:`eval_batches`.
        text_source: a user's texts, e.g. ``longforge.data.sources.read_texts("data.jsonl")``.
        cache_dir: where the parsed prose is cached between runs (parsing torch's sources takes a while).
    """

    def __init__(
        self,
        tokenizer,
        seed: int = 0,
        mix: Mapping[str, float] | None = None,
        answer_weight: float = 5.0,
        context_weight: float = 1.0,
        *,
        prose_docs: Sequence[Document] | None = None,
        prose_sources: Sequence[str] = DEFAULT_PROSE_SOURCES,
        heldout_fraction: float = 0.03,
        text_source: Sequence[str] | None = None,
        cache_dir: str | None = None,
    ):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("TrainStream needs a fast (tokenizers-backed) tokenizer, e.g. from build_tokenizer()")
        if tokenizer.eos_token_id is None:
            raise ValueError("tokenizer has no eos token: the stream separates documents with it")
        if answer_weight < 0 or context_weight < 0:
            raise ValueError(f"answer_weight and context_weight must be >= 0, got {answer_weight}, {context_weight}")
        self.tokenizer = tokenizer
        self.seed = int(seed)
        self.answer_weight, self.context_weight = float(answer_weight), float(context_weight)
        self.mix = self._resolve_mix(mix, text_source is not None)
        self._eos = int(tokenizer.eos_token_id)
        self._backend = tokenizer.backend_tokenizer
        self._counter = TokenCounter(tokenizer)

        if prose_docs is None:
            prose_docs = prose_documents(prose_sources, cache_dir=cache_dir)
        train_docs, self._heldout_docs = split_documents(prose_docs, heldout_fraction)
        if not train_docs:
            raise ValueError("no prose documents for training (all held out, or none given)")
        # Tokenize the training prose once (batched, in parallel threads); rows then only slice arrays.
        encoded = self._backend.encode_batch([d.text for d in train_docs], add_special_tokens=False)
        self._prose_ids = [np.asarray(e.ids, dtype=np.int32) for e in encoded]
        self._prose = _DocCursor(len(self._prose_ids), self._prose_ids.__getitem__, self._eos, self.seed, 1)
        self._text = None
        if text_source is not None:
            texts = text_source
            self._text = _DocCursor(len(texts), lambda i: self._encode(texts[i]), self._eos, self.seed, 2)
        self._ctx = SkillContext.from_sentences(essay_sentences(train_docs), world_seed=self.seed)
        self._rng = random.Random(self.seed)
        self._names = sorted(self.mix)
        self._weights = [self.mix[n] for n in self._names]
        self.batches_served = 0
        self.tokens_served = 0

    @staticmethod
    def _resolve_mix(mix: Mapping[str, float] | None, has_text: bool) -> dict[str, float]:
        mix = dict(DEFAULT_MIX if mix is None else mix)
        if has_text and "text" not in mix:
            mix["text"] = mix.pop("prose", 0.0)
        allowed = {"prose", "text", *SKILLS}
        for name, weight in mix.items():
            if name not in allowed:
                raise ValueError(f"mix: unknown source {name!r}; allowed: {sorted(allowed)}")
            if not weight >= 0:
                raise ValueError(f"mix[{name!r}] must be >= 0, got {weight}")
        if "text" in mix and mix["text"] > 0 and not has_text:
            raise ValueError("mix has a 'text' share but no text_source was given")
        mix = {k: float(v) for k, v in mix.items() if v > 0}
        if not mix:
            raise ValueError("mix: at least one source needs a positive weight")
        total = sum(mix.values())
        return {k: v / total for k, v in mix.items()}

    def _encode(self, text: str) -> np.ndarray:
        return np.asarray(self._backend.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    # ---------------------------------------------------------------------------------------------------- rows

    def encode_sample(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of a skill sample and a boolean mask of its answer tokens.

        Segment by segment from the cache for the corpus tokenizer; in one piece (with offsets) for a tokenizer
        whose tokens may cross segment boundaries.
        """
        if not self._counter.segmentable:
            encoding = self._backend.encode(sample.text, add_special_tokens=False)
            offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
            mask = np.zeros(len(offsets), dtype=bool)
            for start, end in sample.answer_spans:
                mask |= (offsets[:, 0] < end) & (offsets[:, 1] > start)
            return np.asarray(encoding.ids, dtype=np.int32), mask
        ids_parts, masks = [], []
        for text, span in sample.segments:
            ids = self._counter.ids(text)
            ids_parts.append(ids)
            masks.append(self._counter.answer_mask(text, span) if span is not None else np.zeros(len(ids), bool))
        return np.concatenate(ids_parts), np.concatenate(masks)

    def _sample(self, skill: Callable[..., Sample], budget: int, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
        """A sample of at most ``budget`` tokens. Counts are exact for the corpus tokenizer; for another one the
        target shrinks until the sample fits (deterministically: the retries draw from the same RNG)."""
        target = budget
        while True:
            ids, answers = self.encode_sample(skill(rng, self._counter, target, self._ctx))
            if len(ids) <= budget:
                return ids, answers
            assert not self._counter.segmentable, (len(ids), budget)
            target -= len(ids) - budget + 4

    def _filler(self) -> _DocCursor:
        return self._text if self._text is not None and "prose" not in self.mix else self._prose

    def _skill_row(self, skill: Callable[..., Sample], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        ids_parts, weight_parts, used = [], [], 0
        while seq_len - used >= MIN_SKILL_TOKENS + (used > 0):
            separator = 1 if used > 0 else 0  # eos between samples
            budget = seq_len - used - separator
            # The first sample fills the row half the time (the evaluation's shape); otherwise it is shorter and
            # the next one takes what is left, so answer positions and lengths vary.
            if used == 0 and self._rng.random() < 0.5:
                budget = self._rng.randint(max(MIN_SKILL_TOKENS, seq_len // 4), budget)
            ids, answers = self._sample(skill, budget, self._rng)
            weights = np.where(answers, self.answer_weight, self.context_weight).astype(np.float32)
            if separator:
                ids_parts.append(np.array([self._eos], dtype=np.int32))
                weight_parts.append(np.array([self.context_weight], dtype=np.float32))
            ids_parts.append(ids)
            weight_parts.append(weights)
            used += separator + len(ids)
        if used < seq_len:  # the few tokens left: eos + prose, ordinary language-model loss
            rest = seq_len - used
            ids_parts.append(np.concatenate([np.array([self._eos], np.int32), self._filler().take(rest - 1)]))
            weight_parts.append(np.ones(rest, dtype=np.float32))
        return np.concatenate(ids_parts), np.concatenate(weight_parts)

    def next_batch(self, batch_size: int, seq_len: int) -> dict[str, torch.Tensor]:
        """The next ``batch_size`` rows of ``seq_len`` tokens; ``seq_len`` may change from call to call."""
        if batch_size < 1 or seq_len < 2:
            raise ValueError(f"batch_size must be >= 1 and seq_len >= 2, got {batch_size}, {seq_len}")
        input_ids = np.empty((batch_size, seq_len), dtype=np.int64)
        loss_weight = np.empty((batch_size, seq_len), dtype=np.float32)
        for b in range(batch_size):
            name = self._rng.choices(self._names, self._weights)[0]
            if name in SKILLS and seq_len >= MIN_SKILL_TOKENS:
                ids, weights = self._skill_row(SKILLS[name], seq_len)
            else:  # prose, text, or a row too short for any skill
                source = self._text if name == "text" else self._prose
                ids, weights = source.take(seq_len), np.ones(seq_len, dtype=np.float32)
            input_ids[b], loss_weight[b] = ids, weights
        loss_weight[:, 0] = 0.0  # nothing predicts the first token
        self.batches_served += 1
        self.tokens_served += batch_size * seq_len
        return {"input_ids": torch.from_numpy(input_ids), "loss_weight": torch.from_numpy(loss_weight)}

    # --------------------------------------------------------------------------------------------------- state

    def state_dict(self) -> dict:
        """Everything needed to continue exactly here (plain Python types: JSON- and torch.save-friendly)."""
        version, internal, gauss = self._rng.getstate()
        return {
            "version": _STATE_VERSION,
            "seed": self.seed,
            "mix": dict(self.mix),
            "rng": [version, list(internal), gauss],
            "prose": self._prose.state_dict(),
            "text": None if self._text is None else self._text.state_dict(),
            "batches_served": self.batches_served,
            "tokens_served": self.tokens_served,
        }

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"stream state version {state.get('version')!r}, expected {_STATE_VERSION}")
        if int(state["seed"]) != self.seed or dict(state["mix"]) != self.mix:
            raise ValueError(
                f"stream state was saved with seed={state['seed']} mix={dict(state['mix'])}, "
                f"this stream has seed={self.seed} mix={self.mix}"
            )
        if (state["text"] is None) != (self._text is None):
            raise ValueError("stream state and this stream disagree on whether a text_source is used")
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._prose.load_state_dict(state["prose"])
        if self._text is not None:
            self._text.load_state_dict(state["text"])
        self.batches_served = int(state["batches_served"])
        self.tokens_served = int(state["tokens_served"])

    # ---------------------------------------------------------------------------------------------- evaluation

    @property
    def heldout_documents(self) -> list[Document]:
        return list(self._heldout_docs)

    def eval_batches(
        self, batch_size: int, seq_len: int, kind: str = "prose", num_batches: int | None = None, seed: int = 0
    ) -> list[dict[str, torch.Tensor]]:
        """Fixed evaluation batches; never touches the training state.

        ``kind="prose"``: the held-out prose documents (name order, joined by eos) cut into rows; weight 1 on every
        token but the first; the last partial row is dropped. ``num_batches=None`` takes them all.

        ``kind`` = a probe (``niah_single_1``, ``niah_single_2``, ``niah_single_3``, ``niah_multikey_1``, ``vt``)
        or a skill name: one sample of up to ``seq_len`` tokens per row, eos-padded; weight 1 on answer tokens
        only, and ``answer_ids`` (LongTensor [B, T]: the index of the answer each token belongs to, -1 elsewhere)
        for :func:`answer_accuracy`. ``num_batches`` defaults to 1.
        """
        if kind == "prose":
            return self._prose_eval(batch_size, seq_len, num_batches)
        generator = PROBES.get(kind) or SKILLS.get(kind)
        if generator is None:
            raise ValueError(f"eval kind must be 'prose', a probe {sorted(PROBES)} or a skill {sorted(SKILLS)}")
        rng = random.Random(f"longforge-eval-{kind}-{seed}-{seq_len}")
        batches = []
        for _ in range(num_batches or 1):
            input_ids = torch.full((batch_size, seq_len), self._eos, dtype=torch.long)
            loss_weight = torch.zeros(batch_size, seq_len)
            answer_ids = torch.full((batch_size, seq_len), -1, dtype=torch.long)
            for b in range(batch_size):
                ids, answers = self._sample(generator, seq_len, rng)
                input_ids[b, : len(ids)] = torch.from_numpy(ids.astype(np.int64))
                answers = torch.from_numpy(answers)
                loss_weight[b, : len(ids)] = answers.float()
                # Number the answers: a new one starts wherever an answer token follows a non-answer token.
                starts = answers & ~torch.cat([torch.zeros(1, dtype=torch.bool), answers[:-1]])
                index = torch.cumsum(starts.long(), 0) - 1
                answer_ids[b, : len(ids)] = torch.where(answers, index, torch.full_like(index, -1))
            loss_weight[:, 0] = 0.0
            batches.append({"input_ids": input_ids, "loss_weight": loss_weight, "answer_ids": answer_ids})
        return batches

    def _prose_eval(self, batch_size: int, seq_len: int, num_batches: int | None) -> list[dict]:
        docs = sorted(self._heldout_docs, key=lambda d: d.name)
        if not docs:
            raise ValueError("no held-out prose documents (heldout_fraction=0?)")
        encoded = self._backend.encode_batch([d.text for d in docs], add_special_tokens=False)
        flat = np.concatenate([np.append(np.asarray(e.ids, np.int64), self._eos) for e in encoded])
        rows = len(flat) // seq_len
        if rows == 0:
            raise ValueError(f"held-out prose has {len(flat)} tokens, fewer than one row of seq_len={seq_len}")
        rows = rows if num_batches is None else min(rows, num_batches * batch_size)
        ids = torch.from_numpy(flat[: rows * seq_len].reshape(rows, seq_len))
        weight = torch.ones(rows, seq_len)
        weight[:, 0] = 0.0
        return [
            {"input_ids": ids[i : i + batch_size], "loss_weight": weight[i : i + batch_size]}
            for i in range(0, rows, batch_size)
        ]


def answer_accuracy(logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Retrieval accuracy of a model on a skill/probe batch from :meth:`TrainStream.eval_batches`.

    ``logits``: [B, T, V] from the model on ``batch["input_ids"]``. Returns ``token_acc`` (answer tokens whose
    argmax prediction is right) and ``exact_match`` (answers whose every token is right: with teacher forcing this
    equals greedy decoding reproducing the answer, RULER's hit).
    """
    targets = batch["input_ids"][:, 1:].to(logits.device)
    answer_ids = batch["answer_ids"][:, 1:].to(logits.device)
    correct = logits[:, :-1].argmax(-1) == targets
    is_answer = answer_ids >= 0
    if not is_answer.any():
        raise ValueError("the batch has no answer tokens (use a skill/probe batch from eval_batches)")
    # One slot per (row, answer): count its wrong tokens.
    num_answers = int(answer_ids.max()) + 1
    slot = (torch.arange(len(answer_ids), device=logits.device)[:, None] * num_answers + answer_ids)[is_answer]
    wrong = torch.zeros(len(answer_ids) * num_answers, device=logits.device)
    wrong.index_add_(0, slot, (~correct[is_answer]).float())
    present = torch.zeros_like(wrong).index_add_(0, slot, torch.ones_like(slot, dtype=wrong.dtype)) > 0
    return {
        "token_acc": correct[is_answer].float().mean().item(),
        "exact_match": (wrong[present] == 0).float().mean().item(),
    }
