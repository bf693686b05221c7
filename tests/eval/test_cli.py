"""`longforge eval` end to end on tiny saved models (scores may be 0: the files and tables must be right), and its
bad-input errors (exit code 2, a message naming the problem, nothing written)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from longforge.eval.cli import main

from .conftest import tiny_model


def test_ruler_lite_run_writes_report(silent_model_dir, tmp_path, capsys):
    out = tmp_path / "report"
    argv = [str(silent_model_dir), "--suite", "ruler-lite", "--tasks", "niah_single_1,fwe", "--lengths", "1k"]
    assert main([*argv, "--samples", "2", "--batch-size", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl", "results.json", "results.md", "scores.png"]
    results = json.loads((out / "results.json").read_text())
    assert results["suite"] == "ruler-lite" and results["tasks"] == ["niah_single_1", "fwe"]
    assert results["scores"] == {"niah_single_1": {"1024": 0.0}, "fwe": {"1024": 0.0}}  # the model only says EOS
    assert results["config"]["samples"] == 2 and results["config"]["lengths"] == [1024]
    assert results["environment"]["model_class"] == "HybridForCausalLM"
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and all(p["pred"] == "" for p in predictions)
    table = (out / "results.md").read_text()
    assert "| niah_single_1 | 0.0 | 0.0 |" in table and "| **average** | **0.0** | **0.0** |" in table
    assert table in capsys.readouterr().out  # the table is printed too


def test_niah_heatmap_run_as_module(model_dir, tmp_path):
    """A real (random) model, decoding its full 128 tokens, through `python -m longforge.eval.cli`."""
    out = tmp_path / "niah"
    cmd = [sys.executable, "-m", "longforge.eval.cli", str(model_dir), "--suite", "niah", "--lengths", "512"]
    cmd += ["--depths", "0,100", "--samples", "1", "--batch-size", "2", "--out", str(out), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert (out / "niah_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "results.json").read_text())
    assert set(results["grid"]["512"]) == {"0", "100"} and results["depths"] == [0.0, 100.0]
    table = (out / "results.md").read_text()
    assert "| needle depth | 512 |" in table and "| 0% |" in table and "| 100% |" in table
    (record, _) = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert record["pred"] and record["length"] <= 512  # a random model says something


@pytest.mark.parametrize(
    "args, message",
    [
        (["--suite", "ruler", "--tasks", "niah_single_1,nope"], "unknown RULER task(s) ['nope']"),
        (["--lengths", "4q"], "--lengths: '4q' is not a length"),
        (["--suite", "ruler", "--depths", "0,50"], "depths applies to the niah suite only"),
        (["--suite", "niah", "--depths", "0,150"], "needle depths are percentages in [0, 100]"),
        (["--tasks", "qa_1", "--qa-squad", "missing.json"], "qa_squad: QA file not found: missing.json"),
        (["--tasks", "vt", "--lengths", "256"], "below the minimum length of task 'vt'"),
        (["--samples", "0"], "samples must be >= 1"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(args, message, silent_model_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main([str(silent_model_dir), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("longforge eval: error: ") and message in err
    assert not out.exists()


def test_unknown_model_and_tokenizer_without_eos(silent_model_dir, tmp_path, capsys, tokenizer):
    out = tmp_path / "report"
    assert main(["no-such-model", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model': not a local directory and not a built-in model name" in err
    no_eos = tmp_path / "no-eos"
    tiny_model(len(tokenizer), silent=True).save_pretrained(no_eos)
    tokenizer.save_pretrained(no_eos)
    config = json.loads((no_eos / "tokenizer_config.json").read_text())
    config.pop("eos_token", None)
    (no_eos / "tokenizer_config.json").write_text(json.dumps(config))
    assert main([str(no_eos), "--suite", "niah", "--lengths", "1k", "--out", str(out)]) == 2
    assert "has no EOS token" in capsys.readouterr().err and not out.exists()


def test_add_eval_parser_registers_the_verb():
    import argparse

    from longforge.eval.cli import add_eval_parser, cmd_eval

    parser = argparse.ArgumentParser(prog="longforge")
    add_eval_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(["eval", "m", "--suite", "niah", "--out", "o"])
    assert args.func is cmd_eval and args.suite == "niah" and args.batch_size == 4 and args.lengths is None
    assert Path(args.out).name == "o"
