"""Report files: markdown table, JSON, predictions, PNGs, atomic writes; length parsing."""

import json

import pytest

from longforge.eval.report import atomic_write, length_label, markdown_table, parse_lengths, write_report


def _results(**overrides):
    results = {
        "suite": "ruler",
        "model": "my-model",
        "tasks": ["niah_single_1", "qa_1"],
        "lengths": [4096, 8192],
        "num_samples": 2,
        "seed": 0,
        "scores": {"niah_single_1": {"4096": 100.0, "8192": 90.0}, "qa_1": {"4096": 80.0, "8192": 20.0}},
        "average": {"4096": 90.0, "8192": 55.0},
        "overall_average": 72.5,
        "effective_length": 4096,
        "qa_sources": {"qa_1": "synthetic-squad"},
        "haystack": {"python": "3.x", "sha256": "ab" * 32},
        "predictions": [{"task": "qa_1", "pred": "x"}, {"task": "qa_1", "pred": "y"}],
    }
    results.update(overrides)
    return results


def test_markdown_table_rows_average_and_effective_length():
    text = markdown_table(_results())
    assert "| task | 4K | 8K | avg |" in text
    assert "| niah_single_1 | 100.0 | 90.0 | 95.0 |" in text
    assert "| qa_1 | 80.0 | 20.0 | 50.0 |" in text
    assert "| **average** | **90.0** | **55.0** | **72.5** |" in text
    assert "Effective length (average > 85.6" in text and ": **4K**" in text
    assert "synthetic QA set" in text and "not comparable" in text
    assert "≥ 8K" in markdown_table(_results(effective_length=8192))
    assert "none: no length reaches 85.6" in markdown_table(_results(effective_length=None))


def test_niah_markdown_is_depth_by_length():
    results = _results(
        tasks=["niah_single_2"],
        depths=[0.0, 50.0],
        grid={"4096": {"0": 100.0, "50": 0.0}, "8192": {"0": 50.0, "50": 50.0}},
        scores={"niah_single_2": {"4096": 50.0, "8192": 50.0}},
        average={"4096": 50.0, "8192": 50.0},
        effective_length=None,
    )
    text = markdown_table(results)
    assert "| needle depth | 4K | 8K |" in text
    assert "| 0% | 100.0 | 50.0 |" in text and "| 50% | 0.0 | 50.0 |" in text


def test_write_report_files(tmp_path):
    out = tmp_path / "run"
    written = write_report(out, _results())
    names = sorted(p.name for p in written)
    assert names == ["predictions.jsonl", "results.json", "results.md", "scores.png"]
    assert sorted(p.name for p in out.iterdir()) == names  # no temp files left behind
    summary = json.loads((out / "results.json").read_text())
    assert summary["scores"]["qa_1"]["8192"] == 20.0 and "predictions" not in summary
    assert [json.loads(line)["pred"] for line in (out / "predictions.jsonl").read_text().splitlines()] == ["x", "y"]
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    niah = _results(depths=[0.0], grid={"4096": {"0": 1.0}, "8192": {"0": 2.0}})
    assert "niah_heatmap.png" in [p.name for p in write_report(tmp_path / "niah", niah)]
    assert (tmp_path / "niah" / "niah_heatmap.png").read_bytes()[:4] == b"\x89PNG"


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "results.json"
    atomic_write(path, "old")
    with pytest.raises(TypeError):
        atomic_write(path, object())  # fails while writing the temp file
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_lengths():
    assert parse_lengths("8k, 4K,16384,1m,4096") == [4096, 8192, 16384, 1048576]
    assert [length_label(n) for n in (4096, 131072, 1048576, 3000)] == ["4K", "128K", "1M", "3000"]
    for bad in ("4q", "", "0", "k", "-4k"):
        with pytest.raises(ValueError, match="--lengths"):
            parse_lengths(bad)
