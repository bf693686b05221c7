import json
import re

import pytest
import torch

from longforge.data.stream import TrainStream, answer_accuracy


@pytest.fixture(scope="module")
def make_stream(tokenizer, small_docs):
    def make(**kwargs):
        kwargs.setdefault("seed", 0)
        return TrainStream(tokenizer, prose_docs=small_docs, **kwargs)

    return make


CALLS = [(4, 256), (2, 1024), (3, 512), (1, 2048), (5, 200)]  # seq_len changes between calls (curriculum)


def _equal(a, b):
    return all(torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)


def test_batches_have_the_right_shape_and_weights(make_stream):
    stream = make_stream(answer_weight=6.0)
    for batch_size, seq_len in CALLS:
        batch = stream.next_batch(batch_size, seq_len)
        assert batch["input_ids"].shape == batch["loss_weight"].shape == (batch_size, seq_len)
        assert batch["input_ids"].dtype == torch.long and batch["loss_weight"].dtype == torch.float32
        assert (batch["loss_weight"][:, 0] == 0).all()
        assert set(batch["loss_weight"][:, 1:].unique().tolist()) <= {1.0, 6.0}
        assert 0 <= batch["input_ids"].min() and batch["input_ids"].max() < len(stream.tokenizer)
    assert stream.tokens_served == sum(b * t for b, t in CALLS)


def test_deterministic_by_seed(make_stream):
    a = [make_stream(seed=3).next_batch(b, t) for b, t in CALLS]
    b = [make_stream(seed=3).next_batch(b, t) for b, t in CALLS]
    c = [make_stream(seed=4).next_batch(b, t) for b, t in CALLS]
    assert _equal(a, b)
    assert not torch.equal(a[1]["input_ids"], c[1]["input_ids"])


def test_resume_reproduces_the_uninterrupted_stream(make_stream):
    stream = make_stream(seed=1)
    for batch_size, seq_len in CALLS:
        stream.next_batch(batch_size, seq_len)
    state = json.loads(json.dumps(stream.state_dict()))  # plain types: survives JSON (and torch.save)
    expected = [stream.next_batch(b, t) for b, t in CALLS * 2]
    resumed = make_stream(seed=1)
    resumed.load_state_dict(state)
    assert _equal(expected, [resumed.next_batch(b, t) for b, t in CALLS * 2])
    with pytest.raises(ValueError, match="seed"):
        make_stream(seed=2).load_state_dict(state)


def test_answer_weights_sit_on_the_answer_tokens(make_stream, tokenizer):
    stream = make_stream(mix={"niah": 1.0}, answer_weight=7.0, context_weight=0.5)
    batch = stream.next_batch(8, 1024)
    found = 0
    for ids, weights in zip(batch["input_ids"], batch["loss_weight"]):
        answer = weights == 7.0
        assert set(weights[1:].unique().tolist()) <= {0.5, 1.0, 7.0}
        # Runs of answer tokens: each is the value(s) asked for, and each value sits in a needle before it.
        starts = [t for t in range(len(ids)) if answer[t] and not answer[t - 1]]
        for start in starts:
            end = start
            while end < len(ids) and answer[end]:
                end += 1
            text = tokenizer.decode(ids[start:end]).strip()
            before = tokenizer.decode(ids[:start]).rstrip()  # the space before a number is its own token
            assert before.endswith("mentioned in the provided text is") or before.endswith(
                "mentioned in the provided text are"
            ), before[-80:]
            for value in re.findall(r"\d{7}", text):
                assert f"is: {value}." in before
            assert re.fullmatch(r"\d{7}(, (and )?\d{7})*", text), text
            found += 1
    assert found >= 8


def test_prose_rows_are_packed_documents(make_stream, tokenizer, small_docs):
    stream = make_stream(mix={"prose": 1.0})
    train_texts = [d.text for d in small_docs if d.name not in {h.name for h in stream.heldout_documents}]
    batch = stream.next_batch(4, 512)
    assert (batch["loss_weight"][:, 1:] == 1).all()
    eos = tokenizer.eos_token_id
    chunks = 0
    for row in batch["input_ids"].tolist():
        pieces, current = [], []
        for token in row:
            if token == eos:
                pieces.append(current)
                current = []
            else:
                current.append(token)
        pieces.append(current)
        for piece in pieces:
            if len(piece) > 3:
                text = tokenizer.decode(piece[1:-1])  # drop the edge tokens, which may be cut mid-word
                assert any(text in doc for doc in train_texts)
                chunks += 1
    assert chunks >= 4


def test_user_text_source(make_stream, tokenizer):
    texts = [f"user document number {i} says hello" for i in range(7)]
    stream = make_stream(text_source=texts)  # default mix: the prose share goes to the user's text
    assert "text" in stream.mix and "prose" not in stream.mix
    only_text = make_stream(text_source=texts, mix={"text": 1.0})
    row = only_text.next_batch(1, 200)["input_ids"][0]
    decoded = tokenizer.decode(row).split(tokenizer.eos_token)
    assert all(part in texts for part in decoded[1:-1]) and len(decoded) > 5


def test_mix_errors(make_stream):
    with pytest.raises(ValueError, match="unknown source 'needles'"):
        make_stream(mix={"needles": 1.0})
    with pytest.raises(ValueError, match="no text_source"):
        make_stream(mix={"text": 1.0})
    with pytest.raises(ValueError, match="positive weight"):
        make_stream(mix={"prose": 0.0})


def test_eval_batches_are_fixed_and_leave_training_alone(make_stream, tokenizer):
    stream, twin = make_stream(seed=7), make_stream(seed=7)
    stream.next_batch(2, 256)
    twin.next_batch(2, 256)
    prose = stream.eval_batches(2, 256)
    assert prose and all((b["loss_weight"][:, 0] == 0).all() and (b["loss_weight"][:, 1:] == 1).all() for b in prose)
    assert _equal(prose, stream.eval_batches(2, 256))
    heldout_text = "".join(d.text for d in stream.heldout_documents)
    first = tokenizer.decode(prose[0]["input_ids"][0][:50]).split(tokenizer.eos_token)[0]
    assert first[:100] in heldout_text
    probe = stream.eval_batches(3, 1024, kind="niah_single_2")
    assert _equal(probe, stream.eval_batches(3, 1024, kind="niah_single_2"))
    assert _equal([stream.next_batch(2, 512)], [twin.next_batch(2, 512)])  # evaluation did not move the stream
    with pytest.raises(ValueError, match="eval kind"):
        stream.eval_batches(1, 256, kind="nope")


def test_answer_accuracy_on_probe_batches(make_stream):
    stream = make_stream()
    (batch,) = stream.eval_batches(4, 1024, kind="vt")
    weights, answer_ids = batch["loss_weight"], batch["answer_ids"]
    assert ((weights > 0) == (answer_ids >= 0)).all() and (answer_ids.max(1).values >= 0).all()
    vocab = len(stream.tokenizer)
    perfect = torch.nn.functional.one_hot(torch.roll(batch["input_ids"], -1, 1), vocab).float()
    assert answer_accuracy(perfect, batch) == {"token_acc": 1.0, "exact_match": 1.0}
    spoiled = perfect.clone()
    t = int((answer_ids[0] >= 0).nonzero()[0])  # the first answer token of row 0
    spoiled[0, t - 1] = torch.roll(spoiled[0, t - 1], 1)  # predict the wrong token there
    result = answer_accuracy(spoiled, batch)
    num_answers = sum(len(set(r[r >= 0].tolist())) for r in answer_ids)
    assert result["exact_match"] == pytest.approx(1 - 1 / num_answers)
    assert result["token_acc"] == pytest.approx(1 - 1 / int((answer_ids[:, 1:] >= 0).sum()))


def test_a_tokenizer_that_merges_across_segments_still_gets_exact_rows(small_docs):
    # A byte-level BPE *without* single-digit splitting: "1234567" may become one token, so samples cannot be
    # encoded segment by segment. The stream notices, encodes whole samples and still fits every row.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    numbers = [" ".join(f"is: {n}." for n in range(1000000, 1000000 + 7919 * 300, 7919))] * 3
    raw.train_from_iterator(
        [d.text for d in small_docs[:40]] + numbers,
        trainers.BpeTrainer(
            vocab_size=1500,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    foreign = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")
    stream = TrainStream(foreign, seed=0, prose_docs=small_docs, mix={"niah": 1.0, "vt": 1.0}, answer_weight=3.0)
    assert not stream._counter.segmentable
    batch = stream.next_batch(6, 700)
    assert batch["input_ids"].shape == (6, 700)
    for ids, weights in zip(batch["input_ids"], batch["loss_weight"]):
        answer = (weights == 3.0).tolist()
        runs = [t for t in range(1, len(ids)) if answer[t] and not answer[t - 1]]
        assert runs
        for start in runs:
            end = next((t for t in range(start, len(ids)) if not answer[t]), len(ids))
            text = foreign.decode(ids[start:end]).strip()
            assert re.fullmatch(r"[\d, and]+|[A-Z]{5}( [A-Z]{5})*", text), text
