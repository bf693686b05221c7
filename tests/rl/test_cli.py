"""`longforge data synth-rl` / `filter-rl` run as commands on tiny inputs; the filter's selection and task-balanced
sampling on hand-made pass rates."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from longforge.data.rl import DATASETS, PAPER_COUNTS, RLRecord, read_records, scaled_counts
from longforge.data.rl.cli import main
from longforge.data.rl.filter import select_by_pass_rate, task_balanced_sample


def test_synth_rl_command(tmp_path, tokenizer_dir):
    out = tmp_path / "data"
    cmd = [
        sys.executable,
        "-m",
        "longforge.data.rl.cli",
        "data",
        "synth-rl",
        "--source",
        "builtin",
        "--out",
        str(out),
        "--scale",
        "0.001",
        "--max-tokens",
        "2500",
        "--seed",
        "1",
        "--tokenizer",
        str(tokenizer_dir),
        "--no-progress",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    expected = scaled_counts(0.001)
    assert expected == {d: max(1, round(PAPER_COUNTS[d] / 1000)) for d in DATASETS}
    for name in DATASETS:
        recs = read_records(out / f"{name}.jsonl")
        assert len(recs) == expected[name] == summary["datasets"][name]["items"]
        assert all(r.dataset == name and r.context_tokens <= 2500 for r in recs)
        assert summary["datasets"][name]["tokens_max"] == max(r.context_tokens for r in recs)
    assert summary["datasets"]["CrossEntity"]["reward_type"] == "llm_judge"
    assert summary["datasets"]["FuzzyNeedle"]["reward_type"] == "recall"
    table = (out / "summary.md").read_text()
    assert "| retrieval | FuzzyNeedle | 2 | 1,500 | builtin | recall |" in table
    assert (out / "lengths.png").read_bytes()[:4] == b"\x89PNG"
    # the same seed gives the same files
    again = tmp_path / "again"
    assert (
        main(
            [
                "data",
                "synth-rl",
                "--out",
                str(again),
                "--scale",
                "0.001",
                "--max-tokens",
                "2500",
                "--seed",
                "1",
                "--tokenizer",
                str(tokenizer_dir),
                "--no-progress",
                "--datasets",
                "WebSearch,LongMath",
            ]
        )
        == 0
    )
    for name in ("WebSearch", "LongMath"):
        assert (again / f"{name}.jsonl").read_bytes() == (out / f"{name}.jsonl").read_bytes()


def test_synth_rl_bad_inputs_write_nothing(tmp_path, tokenizer_dir, capsys):
    out = tmp_path / "out"
    base = ["data", "synth-rl", "--out", str(out), "--tokenizer", str(tokenizer_dir), "--no-progress"]
    assert main(base + ["--max-tokens", "80", "--scale", "0.001"]) == 2
    assert "max_tokens=80 is too small for this task" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(base + ["--source", str(empty)]) == 2
    assert "empty.jsonl is empty" in capsys.readouterr().err
    assert main(base + ["--datasets", "Needles"]) == 2
    assert "unknown dataset(s) Needles" in capsys.readouterr().err
    assert main(base + ["--scale", "-1"]) == 2
    assert main(["data", "synth-rl", "--out", str(out), "--tokenizer", str(tmp_path / "nope")]) == 2
    assert "neither a directory" in capsys.readouterr().err
    assert not out.exists()


def _rec(i: int, dataset: str) -> RLRecord:
    return RLRecord(f"{dataset}-{i}", "x", dataset, "p", ["a"], "recall", 1, {"k": i})


def test_select_by_pass_rate():
    recs = [_rec(i, "A") for i in range(3)] + [_rec(0, "B")]
    rewards = [[1, 1, 1, 1], [0, 0, 0.5, 0], [1, 0, 0.99, 1], [0, 1, 0, 0]]
    kept, stats = select_by_pass_rate(recs, rewards, threshold=1.0)
    assert [r.id for r in kept] == ["A-2", "B-0"]
    assert kept[0].metadata == {"k": 2, "pass_rate": 0.5, "rollout_rewards": [1, 0, 0.99, 1]}
    assert stats["A"] == {"items": 3, "all_correct": 1, "all_wrong": 1, "kept": 1, "mean_pass_rate": 0.5}
    kept, _ = select_by_pass_rate(recs, rewards, threshold=0.5)  # a partial-credit threshold
    assert [r.id for r in kept] == ["A-1", "A-2", "B-0"]
    with pytest.raises(ValueError, match="4 records but 3 reward lists"):
        select_by_pass_rate(recs, rewards[:3])


def test_task_balanced_sample():
    recs = [_rec(i, "A") for i in range(10)] + [_rec(i, "B") for i in range(2)] + [_rec(i, "C") for i in range(5)]
    picked = task_balanced_sample(recs, total=9, seed=0)
    counts = {d: sum(r.dataset == d for r in picked) for d in "ABC"}
    assert counts == {"A": 4, "B": 2, "C": 3} or counts == {"A": 3, "B": 2, "C": 4}  # B's slack goes to A and C
    assert len({r.id for r in picked}) == 9
    assert [r.dataset for r in picked[:3]] == ["A", "B", "C"]  # interleaved
    everything = task_balanced_sample(recs, seed=0)
    assert sorted(r.id for r in everything) == sorted(r.id for r in recs)


def test_filter_rl_command(tmp_path, tokenizer, tiny_model, capsys):
    from longforge.data.rl import write_records

    policy = tmp_path / "policy"
    tiny_model("qwen3").save_pretrained(policy)
    tokenizer.save_pretrained(policy)
    data = write_records([_rec(i, "A") for i in range(3)], tmp_path / "in" / "A.jsonl")
    out = tmp_path / "out"
    args = [
        "data",
        "filter-rl",
        "--data",
        str(data),
        "--policy",
        str(policy),
        "--rollouts",
        "2",
        "--out",
        str(out),
        "--max-new-tokens",
        "3",
        "--batch-size",
        "4",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    summary = json.loads((out / "filter_summary.json").read_text())
    a = summary["datasets"]["A"]
    assert a["items"] == 3 and a["all_correct"] + a["all_wrong"] + a["kept"] == 3
    assert "kept" in capsys.readouterr().out
    assert main(args[:3] + [str(tmp_path / "missing.jsonl")] + args[4:]) == 2
    assert "does not exist" in capsys.readouterr().err
