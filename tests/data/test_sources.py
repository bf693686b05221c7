import json

import pytest

from longforge.data.sources import read_jsonl, read_texts


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"text": "first doc"}, {"text": "second"}, {"text": "  "}])
    assert read_texts(path) == ["first doc", "second"]  # blank texts are dropped
    other = _write_jsonl(tmp_path / "o.jsonl", [{"body": "x y"}, {"body": "z"}])
    assert read_texts(other, field="body") == ["x y", "z"]


def test_jsonl_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*nope.jsonl"):
        read_texts(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"no non-empty 'text' texts in .*empty.jsonl"):
        read_texts(empty)
    missing = _write_jsonl(tmp_path / "m.jsonl", [{"body": "x"}])
    with pytest.raises(ValueError, match=r"m.jsonl:1: no field 'text' \(fields: \['body'\]\)"):
        read_texts(missing)
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(ValueError, match=r"b.jsonl:2: not valid JSON"):
        read_jsonl(broken)
    wrong_type = _write_jsonl(tmp_path / "w.jsonl", [{"text": 3}])
    with pytest.raises(ValueError, match="w.jsonl:1: field 'text' is int"):
        read_texts(wrong_type)
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="bin.jsonl"):
        read_texts(binary)
    with pytest.raises(ValueError, match="unknown data format"):
        read_texts(_write_jsonl(tmp_path / "d.txt", [{"text": "x"}]))


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"text": ["a b", None, "c"], "n": [1, 2, 3]}), tmp_path / "x.parquet")
    assert read_texts(tmp_path / "x.parquet") == ["a b", "c"]
    folder = tmp_path / "shards"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["2"]}), folder / "b.parquet")
    pq.write_table(pa.table({"text": ["1"]}), folder / "a.parquet")
    assert read_texts(folder) == ["1", "2"]  # shards in name order
    with pytest.raises(ValueError, match=r"x.parquet: no field 'body'"):
        read_texts(tmp_path / "x.parquet", field="body")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match="no non-empty 'text' texts in .*empty.parquet"):
        read_texts(tmp_path / "empty.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="bad.parquet: cannot be read as Parquet"):
        read_texts(tmp_path / "bad.parquet")


def test_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["one", "two"]}).save_to_disk(str(tmp_path / "ds"))
    assert read_texts(tmp_path / "ds") == ["one", "two"]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"t": ["tr"]}), "test": datasets.Dataset.from_dict({"t": ["te"]})}
    ).save_to_disk(str(tmp_path / "dd"))
    assert read_texts(tmp_path / "dd", field="t") == ["tr"]
    assert read_texts(tmp_path / "dd", field="t", split="test") == ["te"]
    with pytest.raises(ValueError, match=r"choose a split, one of \['test', 'train'\]"):
        read_texts(tmp_path / "dd", field="t", split="validation")
    with pytest.raises(ValueError, match="no field 'text'"):
        read_texts(tmp_path / "dd")
    (tmp_path / "notds").mkdir()
    (tmp_path / "notds" / "state.json").write_text("{}")
    with pytest.raises(ValueError, match="notds: cannot be loaded"):
        read_texts(tmp_path / "notds")
