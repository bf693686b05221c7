from longforge.data.corpus import (
    Document,
    clean_docstring,
    essay_sentences,
    is_heldout,
    prose_documents,
    split_documents,
)


def test_stdlib_prose_is_real_english_and_skips_gui_and_tests(stdlib_docs):
    names = [d.name for d in stdlib_docs]
    assert len(names) == len(set(names)) > 300
    assert sum(len(d.text) for d in stdlib_docs) > 1_000_000
    assert "stdlib:json" in names and "stdlib:math" in names  # parsed source and an extension module
    assert any(n.startswith("stdlib-topics:") for n in names)  # the Language Reference topics
    for bad in ("tkinter", "turtle", "idlelib", "antigravity", "this", "test."):
        assert not any(n.split(":", 1)[1].startswith(bad) for n in names), bad
    json_doc = next(d for d in stdlib_docs if d.name == "stdlib:json").text
    assert "JSON" in json_doc and ">>>" not in json_doc


def test_prose_is_deterministic_and_cacheable(tmp_path):
    first = prose_documents(("json", "email"))
    assert first == prose_documents(("json", "email"))
    cached = prose_documents(("json", "email"), cache_dir=tmp_path)
    assert cached == first and len(list(tmp_path.glob("prose-*.jsonl"))) == 1
    assert prose_documents(("json", "email"), cache_dir=tmp_path) == first  # read back from the cache


def test_heldout_split_depends_only_on_names(stdlib_docs):
    train, heldout = split_documents(stdlib_docs, 0.05)
    assert heldout and train and len(train) + len(heldout) == len(stdlib_docs)
    assert not {d.name for d in train} & {d.name for d in heldout}
    # Same split for a shuffled subset: membership is a function of the name only.
    subset = list(reversed(stdlib_docs[::3]))
    _, heldout_subset = split_documents(subset, 0.05)
    assert {d.name for d in heldout_subset} == {d.name for d in heldout} & {d.name for d in subset}
    assert 0.02 < len(heldout) / len(stdlib_docs) < 0.1
    assert not any(is_heldout(d.name, 0.0) for d in stdlib_docs)


def test_clean_docstring_removes_doctests_roles_and_directives():
    doc = """Return the :func:`~os.path.join` of ``a`` and :class:`b <pkg.B>` for every path given.

    >>> join('a', 'b')
    'a/b'

    .. versionadded:: 3.2

    Parameters
    ----------
    a : str
        The first part of the path that is joined."""
    import inspect

    text = clean_docstring(inspect.cleandoc(doc))
    assert "Return the join of a and b for every path given." in text
    assert ">>>" not in text and "'a/b'" not in text and "versionadded" not in text and "-----" not in text
    assert clean_docstring("x = 1") == ""  # too short to be prose
    assert clean_docstring("0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22") == ""  # not letters


def test_essay_sentences_are_flat_sentences():
    doc = Document(
        "x", "First sentence is here now. Second one\nspans two lines for sure!\n\nf(a, b)\n\nThird is ok too."
    )
    sentences = essay_sentences([doc])
    assert sentences == ["First sentence is here now.", "Second one spans two lines for sure!", "Third is ok too."]
