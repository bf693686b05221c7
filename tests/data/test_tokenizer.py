import pytest

from longforge.data.tokenizer import EOS_TOKEN, build_tokenizer, load_tokenizer, train_tokenizer


def test_digits_are_single_tokens(tokenizer):
    text = "In 2024 the value was 1234567, or 3.14159 times 42."
    ids = tokenizer(text)["input_ids"]
    pieces = [tokenizer.decode([i]) for i in ids]
    for piece in pieces:
        if any(c.isdigit() for c in piece):
            assert len(piece) == 1, piece
    assert "".join(pieces) == text
    assert sum(p.isdigit() for p in pieces) == sum(c.isdigit() for c in text)


@pytest.mark.parametrize(
    "text",
    [
        "Plain English prose, with punctuation; and (parentheses).",
        "  leading spaces, trailing spaces  \n\n\ttabs\tand\r\nCRLF",
        "Unicode: naïve café — 東京 🙂 ∑x²",
        "VAR ABCDE = 12345  VAR FGHIJ = VAR ABCDE ",
        "",
    ],
)
def test_round_trip(tokenizer, text):
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_special_tokens_and_save_load(tokenizer, tmp_path):
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == EOS_TOKEN
    assert tokenizer.convert_tokens_to_ids(EOS_TOKEN) == tokenizer.eos_token_id
    assert tokenizer("a b c")["input_ids"] == tokenizer("a b c", add_special_tokens=False)["input_ids"]  # no bos
    assert 2000 < len(tokenizer) <= 3000
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    text = "One of the special magic numbers for quiet-lantern is: 7654321."
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.eos_token_id == tokenizer.eos_token_id
    with pytest.raises(ValueError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")


def test_keys_and_template_words_are_few_tokens(tokenizer):
    # The skill samples in the tokenizer's training text make the template words and key words whole tokens.
    for word in (" special", " magic", " numbers", " mentioned", " provided"):
        assert len(tokenizer(word)["input_ids"]) == 1, word


def test_build_tokenizer_is_deterministic(small_docs, tmp_path):
    a = build_tokenizer(tmp_path / "a", seed=1, vocab_size=1000, docs=small_docs[:20], num_skill_samples=50)
    b = build_tokenizer(tmp_path / "b", seed=1, vocab_size=1000, docs=small_docs[:20], num_skill_samples=50)
    assert a.get_vocab() == b.get_vocab()
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["some text"], vocab_size=100)
