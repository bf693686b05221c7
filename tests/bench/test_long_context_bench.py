"""`bench model` and `bench kernels` on CPU with tiny shapes: valid JSON / markdown / PNG, OOM and too-slow
recorded as statuses rather than crashes."""

import json

import pytest
import torch

from longforge.bench import kernels as bench_kernels
from longforge.bench import model as bench_model
from longforge.bench._report import parse_length
from longforge.cli import main
from longforge.infer.memory import plan_memory
from longforge.models.hybrid.memory import parameter_counts
from longforge.models.shapes import tiny_hybrid_shape

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _files(out, what):
    (json_path,) = out.glob(f"{what}_cpu_*.json")
    return json_path, json_path.with_suffix(".md"), json_path.with_suffix(".png")


@pytest.fixture(scope="module")
def full_config_path(tmp_path_factory):
    cfg = tiny_hybrid_shape()
    cfg.layer_types = ["full_attention"] * cfg.num_hidden_layers
    cfg.intermediate_size = 2048  # heavier than the hybrid, so one budget can fit the hybrid and not the baseline
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(cfg.to_json_string())
    return str(path), cfg


def test_bench_model_records_ok_and_oom(tmp_path, full_config_path):
    full_path, full_cfg = full_config_path
    lengths, decode, chunk = (32, 96), 3, 32

    def need(cfg, n):
        weights = parameter_counts(cfg)["total"] * 4
        return plan_memory(
            cfg,
            batch=1,
            total_len=n + decode,
            chunk_size=chunk,
            dtype=torch.float32,
            weights_bytes=weights,
            free_bytes=0,
        ).need_bytes

    # a budget between the full model's needs at 32 and 96 tokens: its 96-token run must be refused
    budget = (need(full_cfg, 32) + need(full_cfg, 96)) / 2
    assert need(tiny_hybrid_shape(), 96) < budget
    records = bench_model.run(
        out_dir=tmp_path,
        models=("tiny-hybrid-shape", full_path),
        lengths=lengths,
        decode_tokens=decode,
        chunk_size=chunk,
        dtype="fp32",
        memory_budget_gib=budget / 2**30,
        warmup=False,
        log=lambda *_: None,
    )
    json_path, md_path, png_path = _files(tmp_path, "model")
    assert json.loads(json_path.read_text()) == records
    by = {(r["model"], r["seq_len"]): r for r in records}
    assert set(by) == {(m, n) for m in ("tiny-hybrid-shape", full_path) for n in lengths}
    for r in records:
        assert {"model", "seq_len", "ttft_s", "decode_tokens_per_s", "peak_mem_gib", "status"} <= set(r)
    assert by[(full_path, 96)]["status"] == "oom" and by[(full_path, 96)]["ttft_s"] is None
    for key in [("tiny-hybrid-shape", 32), ("tiny-hybrid-shape", 96), (full_path, 32)]:
        r = by[key]
        assert r["status"] == "ok" and r["ttft_s"] > 0 and r["decode_tokens_per_s"] > 0
        assert r["generated_tokens"] == decode
    md = md_path.read_text()
    assert "| tiny-hybrid-shape | 96 | ok |" in md and "oom" in md and "TTFT speedup" in md
    assert png_path.read_bytes().startswith(PNG_MAGIC)
    (row,) = [x for x in bench_model.ratio_rows(records) if x[0] == 32]
    assert row[1] == "tiny-hybrid-shape" and row[2] == full_path
    assert row[3] == pytest.approx(by[(full_path, 32)]["ttft_s"] / by[("tiny-hybrid-shape", 32)]["ttft_s"])


def test_bench_kernels_cli_records_and_too_slow(tmp_path, capsys):
    assert (
        main(
            [
                "bench",
                "kernels",
                "--out",
                str(tmp_path),
                "--lengths",
                "16",
                "--dtype",
                "fp32",
                "--window",
                "8",
                "--repeats",
                "1",
            ]
        )
        == 0
    )
    json_path, md_path, png_path = _files(tmp_path, "kernels")
    records = json.loads(json_path.read_text())
    assert [(r["mixer"], r["seq_len"]) for r in records] == [
        (m, 16) for m in ("dense", "full", "sliding", "sparse", "lightning")
    ]
    for r in records:
        assert r["status"] == "ok" and r["ms"] > 0 and r["tflops"] > 0 and r["gbps"] > 0
        assert r["speedup_vs_dense"] > 0 and r["q_heads"] == 32 and r["head_dim"] == 128
    assert {r["mixer"]: r["kv_heads"] for r in records} == {
        "dense": 8,
        "full": 8,
        "sliding": 8,
        "sparse": 2,
        "lightning": 32,
    }
    assert "| lightning | 16 |" in md_path.read_text()
    assert png_path.read_bytes().startswith(PNG_MAGIC)
    # a limit no call can meet: the longer length is predicted too slow and recorded, not run
    recs = bench_kernels.run(
        out_dir=tmp_path,
        lengths=(16, 64),
        mixers=("dense",),
        dtype="fp32",
        repeats=1,
        max_call_s=1e-9,
        log=lambda *_: None,
    )
    assert [r["status"] for r in recs] == ["ok", "too_slow"]


def test_flop_counts_and_lengths():
    T = 8192
    assert bench_kernels.flops("dense", T, 0) == 4 * 32 * 128 * T * (T + 1) // 2
    assert bench_kernels.flops("sliding", T, T) == bench_kernels.flops("dense", T, 0)
    assert bench_kernels.flops("sliding", T, 1) == 4 * 32 * 128 * T
    assert parse_length("8K") == 8192 and parse_length("1M") == 1048576 and parse_length("100") == 100
    with pytest.raises(ValueError, match="positive integer"):
        parse_length("12Q")


def test_kernel_timing_excludes_the_cold_call():
    """Compilation / autotuning in the first call never enters the result (the first call is untimed)."""
    import time as _time

    calls = []

    def call():
        calls.append(1)
        _time.sleep(0.3 if len(calls) == 1 else 0.001)

    sec = bench_kernels.time_call(call, torch.device("cpu"), repeats=3)
    assert sec < 0.05 and len(calls) >= 3


def test_model_bench_warm_up_runs_untimed(tmp_path):
    """The warm-up generation (two prefill chunks, then decode) runs once per model before the timed requests."""
    logs = []
    records = bench_model.run(out_dir=tmp_path, models=("tiny-hybrid-shape",), lengths=(24,), decode_tokens=2,
                              chunk_size=8, dtype="fp32", device="cpu", warmup=True, log=logs.append)
    warm = [line for line in logs if "warm-up" in line]
    assert len(warm) == 1 and "16 prompt tokens" in warm[0]
    assert records[0]["status"] == "ok"


def test_bench_model_parallel_gpus_bad_input():
    from longforge.bench.model import run_parallel

    with pytest.raises(ValueError, match="one GPU per model"):
        run_parallel(("sala-9b-shape", "qwen3-8b-shape"), ["0"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            run_parallel(("sala-9b-shape",), ["0"])


def test_bench_model_parallel_merges_one_process_per_model(tmp_path, full_config_path):
    # the --gpus plumbing (one process per model, records merged into one table) on the CPU
    full_path = full_config_path[0]
    records = bench_model.run_parallel(("tiny-hybrid-shape", full_path), ["0", "1"], out_dir=tmp_path, device="cpu",
                                       lengths=(32,), decode_tokens=2, dtype="fp32", log=lambda *_: None)
    assert [(r["model"], r["seq_len"], r["status"]) for r in records] == [
        ("tiny-hybrid-shape", 32, "ok"), (full_path, 32, "ok")]
    json_path, md_path, _ = _files(tmp_path, "model")
    assert json.loads(json_path.read_text()) == records
    assert "TTFT speedup" in md_path.read_text() and not list(tmp_path.glob("bench-model-*"))
