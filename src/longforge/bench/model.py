"""`longforge bench model`: time to first token, decode tokens/s (batch 1) and peak memory of whole models with
random weights, per prompt length — the hybrid against the full-attention baseline in the same run.

Each (model, length) request goes through `longforge.infer.InferenceEngine`: planned first (weights + cache +
one chunk's activations against free memory), then chunked prefill of a random prompt and ``decode_tokens`` greedy
tokens. A request that does not fit — refused by the plan or a real out-of-memory — is recorded with status
``oom`` and everything is freed before the next one; a request the time budget cannot afford is ``skipped``.
Order: per model, the headline lengths (256K, 1M) first, then the rest ascending, so a tight budget only drops the
least important (longest full-attention) runs. Weights are created directly on the device in the benchmark dtype.

Records: {"model", "seq_len", "ttft_s", "decode_tokens_per_s", "peak_mem_gib", "status", ...}; JSON + markdown
(with the baseline / model ratios at each length) + PNG under ``<out>/model_<device>_<yyyymmdd>.*``.
"""

from __future__ import annotations

import gc
import time

import torch

from ..infer import InferenceEngine, InferenceMemoryError
from ..infer.memory import GiB, free_device_bytes, plan_memory
from ..models.hybrid.memory import format_bytes
from . import _report

DEFAULT_MODELS = ("sala-9b-shape", "qwen3-8b-shape")
DEFAULT_LENGTHS = (8192, 32768, 131072, 262144, 524288, 1048576)
HEADLINE_LENGTHS = (262144, 1048576)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def build_random_model(config, device: torch.device, dtype: torch.dtype):
    """A `HybridForCausalLM` of ``config`` with random weights created on ``device`` in ``dtype`` (no CPU init):
    built on the meta device, materialised empty on the target, then filled (norm weights 1, biases 0, the rest
    N(0, initializer_range))."""
    from ..models import HybridForCausalLM

    with torch.device("meta"):
        model = HybridForCausalLM(config)
    model = model.to(dtype).to_empty(device=device)
    std = config.initializer_range
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, std, generator=g)
    model.tie_weights()
    return model.eval()


def _param_bytes(config, dtype: torch.dtype) -> int:
    from ..models.hybrid.memory import parameter_counts

    return parameter_counts(config)["total"] * torch.empty((), dtype=dtype).element_size()


def _order(models, lengths) -> list[tuple[str, int]]:
    """Model by model (one model resident at a time); within a model the headline lengths first."""
    head = [n for n in lengths if n in HEADLINE_LENGTHS]
    rest = sorted(n for n in lengths if n not in HEADLINE_LENGTHS)
    return [(m, n) for m in models for n in head + rest]


def _estimate_s(records: list[dict], model: str, seq_len: int, full_attention: bool) -> float | None:
    """Seconds the request will take, extrapolated from the longest finished run of the same model (quadratic
    when the model has full-attention layers, linear otherwise)."""
    done = [r for r in records if r["model"] == model and r["status"] == "ok"]
    if not done:
        return None
    ref = max(done, key=lambda r: r["seq_len"])
    ratio = seq_len / ref["seq_len"]
    prefill = ref["ttft_s"] * (ratio**2 if full_attention and ratio > 1 else ratio)
    decode = ref["wall_s"] - ref["ttft_s"]
    return prefill + decode * max(1.0, ratio)


def warm_up(model, config, dev, chunk_size: int, longest: int, budget: int | None, log=print) -> float:
    """Untimed generation that runs every kernel of the timed requests once: a prompt of two prefill chunks (so
    the second chunk takes the ``Tq < Tk`` attention path and sparse layers pass their dense switch at the real
    chunk size), then two decode steps. Compilation, Triton autotuning and cuDNN plans happen here, not in the
    first measured request. Returns the seconds it took."""
    n = max(1, min(2 * chunk_size, longest))
    t0 = time.perf_counter()
    InferenceEngine(model, chunk_size=chunk_size, memory_budget_bytes=budget).generate(
        torch.randint(0, config.vocab_size, (1, n), device=dev), 3, eos_token_id=None
    )
    dt = time.perf_counter() - t0
    log(f"  warm-up ({n} prompt tokens + 3 decoded, untimed): {dt:.1f} s")
    _free()
    return dt


def _free(*objs) -> None:
    del objs
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(
    out_dir="benchmarks/results",
    models=DEFAULT_MODELS,
    lengths=DEFAULT_LENGTHS,
    decode_tokens: int = 64,
    chunk_size: int = 32768,
    device: str = "auto",
    dtype: str = "bf16",
    memory_budget_gib: float | None = None,
    time_budget_s: float | None = 480.0,
    warmup: bool = True,
    log=print,
) -> list[dict]:
    """Run the benchmark and write its files; returns the records. ``memory_budget_gib`` replaces the device's free
    memory in the plan (tests use it to exercise the OOM path); ``time_budget_s`` skips requests predicted to end
    past it."""
    from ..models import load_config

    if decode_tokens < 1:
        raise ValueError(f"decode_tokens must be >= 1, got {decode_tokens}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not models or not lengths:
        raise ValueError("give at least one model and one length")
    dev = _report.resolve_device(device)
    torch_dtype = DTYPES[dtype]
    configs = {m: load_config(m) for m in models}  # fails early on an unknown name
    budget = None if memory_budget_gib is None else int(memory_budget_gib * GiB)
    records: list[dict] = []
    t_start = time.perf_counter()
    current: tuple[str, object] | None = None
    model = engine = None
    plan_order = _order(models, lengths)
    for i, (name, seq_len) in enumerate(plan_order):
        config = configs[name]
        full = "full_attention" in config.layer_types
        rec = {
            "model": name,
            "seq_len": seq_len,
            "ttft_s": None,
            "decode_tokens_per_s": None,
            "peak_mem_gib": None,
            "status": "ok",
            "decode_tokens": decode_tokens,
            "chunk_size": chunk_size,
            "device": _report.device_name(dev),
            "dtype": dtype,
            "note": "",
        }
        tag = f"[{i + 1}/{len(plan_order)}] {name} @ {_report.length_label(seq_len)}"
        # Plan against the device as if no model were resident (the resident one is freed when we switch).
        resident = current[1] if current is not None and current[0] == name else None
        weights = _param_bytes(config, torch_dtype)
        if budget is not None:
            free = budget
        else:
            free = free_device_bytes(dev) + (
                sum(p.numel() * p.element_size() for p in current[1].parameters()) if current is not None else 0
            )
        plan = plan_memory(
            config,
            batch=1,
            total_len=seq_len + decode_tokens,
            chunk_size=chunk_size,
            dtype=torch_dtype,
            weights_bytes=weights,
            free_bytes=free,
            device=dev,
        )
        rec["planned_need_gib"] = round(plan.need_bytes / GiB, 3)
        if not plan.fits:
            rec["status"] = "oom"
            rec["note"] = (
                f"refused by the memory plan: needs {format_bytes(plan.need_bytes)}, {format_bytes(free)} free"
            )
            records.append(rec)
            log(f"{tag}: oom (planned: {plan.describe()}, free {format_bytes(free)})")
            write_results(records, out_dir, dev, plot=dev.type == "cuda")
            continue
        elapsed = time.perf_counter() - t_start
        est = _estimate_s(records, name, seq_len, full)
        if time_budget_s is not None and est is not None and elapsed + est > time_budget_s:
            rec["status"] = "skipped"
            rec["note"] = f"time budget: ~{est:.0f} s predicted, {time_budget_s - elapsed:.0f} s left"
            records.append(rec)
            log(f"{tag}: skipped ({rec['note']})")
            write_results(records, out_dir, dev, plot=dev.type == "cuda")
            continue
        try:
            if resident is None:
                if current is not None:  # drop every reference to the previous model before building the next
                    current = model = engine = None
                    _free()
                log(f"building {name} with random {dtype} weights on {dev} ...")
                model = build_random_model(config, dev, torch_dtype)
                current = (name, model)
                if warmup:  # compile / autotune kernels outside the timed runs
                    warm_up(model, config, dev, chunk_size, max(lengths), budget, log=log)
            model = current[1]
            engine = InferenceEngine(
                model,
                chunk_size=chunk_size,
                memory_budget_bytes=None if budget is None else max(0, budget - weights),
            )
            prompt = torch.randint(
                0,
                config.vocab_size,
                (1, seq_len),
                device=dev,
                generator=torch.Generator(device=dev).manual_seed(seq_len),
            )
            t0 = time.perf_counter()

            def progress(phase, done, total, tag=tag, t0=t0):
                if phase == "prefill" and (done % 8 == 0 or done == total) and total > 1:
                    log(f"{tag}:   prefill chunk {done}/{total} ({time.perf_counter() - t0:.1f} s)")

            result = engine.generate(prompt, decode_tokens, eos_token_id=None, progress=progress)
            rec["wall_s"] = round(time.perf_counter() - t0, 3)
            rec["ttft_s"] = round(result.ttft_s, 4)
            tps = result.decode_tokens_per_s
            rec["decode_tokens_per_s"] = None if tps is None else round(tps, 2)
            rec["peak_mem_gib"] = None if result.peak_mem_bytes is None else round(result.peak_mem_bytes / GiB, 3)
            rec["generated_tokens"] = int(result.tokens.shape[1])
            # how the engine decoded: static step in a CUDA graph (the default on CUDA) or eager, replay-only tok/s
            rec["decode_path"] = dict(engine.last_decode_info or {})
            del prompt, result
            log(
                f"{tag}: TTFT {rec['ttft_s']:.3f} s, decode {rec['decode_tokens_per_s']} tok/s, "
                f"peak {rec['peak_mem_gib']} GiB"
            )
        except Exception as e:  # noqa: BLE001 — an out-of-memory is a result; anything else is re-raised
            if not isinstance(e, InferenceMemoryError) and not (
                isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()
            ):
                raise
            rec["status"] = "oom"
            rec["note"] = str(e).splitlines()[0][:300]
            log(f"{tag}: oom ({rec['note'][:200]})")
            prompt = result = None  # noqa: F841 — drop the references before freeing
            _free()
        records.append(rec)
        gc.collect()
        # after every run (the plot too on a GPU, where it is cheap next to a run): a killed benchmark keeps its numbers
        write_results(records, out_dir, dev, plot=dev.type == "cuda")
    current = None
    _free()
    write_results(records, out_dir, dev)
    return records


def hybrid_1m_check(records: list[dict]) -> dict | None:
    """Did a model without full-attention layers finish a 1M-token prefill and its decode? None when not run."""
    from ..models import load_config

    rows = [
        r for r in records if r["seq_len"] >= 1048576 and "full_attention" not in load_config(r["model"]).layer_types
    ]
    if not rows:
        return None
    ok = [r for r in rows if r["status"] == "ok" and r.get("generated_tokens") == r["decode_tokens"]]
    return {"passed": bool(ok), "records": rows}


def ratio_rows(records: list[dict]) -> list[tuple[int, str, str, float | None, float | None]]:
    """(length, model, baseline, TTFT speedup = baseline TTFT / model TTFT, decode ratio = model tok/s /
    baseline tok/s) for every model against the baseline (the first model with only full attention, else the last)."""
    from ..models import load_config

    names = list(dict.fromkeys(r["model"] for r in records))
    full = [m for m in names if set(load_config(m).layer_types) == {"full_attention"}]
    base = full[0] if full else names[-1]
    out = []
    for n in sorted({r["seq_len"] for r in records}):
        b = next((r for r in records if r["model"] == base and r["seq_len"] == n), None)
        for m in names:
            if m == base:
                continue
            r = next((x for x in records if x["model"] == m and x["seq_len"] == n), None)
            if r is None or b is None:
                continue
            ttft = b["ttft_s"] / r["ttft_s"] if b["ttft_s"] and r["ttft_s"] else None
            dec = (
                r["decode_tokens_per_s"] / b["decode_tokens_per_s"]
                if b["decode_tokens_per_s"] and r["decode_tokens_per_s"]
                else None
            )
            out.append((n, m, base, ttft, dec))
    return out


def run_parallel(models, gpus: list[str], out_dir="benchmarks/results", device: str = "cuda", log=print,
                 **kwargs) -> list[dict]:
    """`run` with each model in its own process on its own GPU of one host, at the same time: one run whose
    records, table and plots are merged as if the models had run one after the other (every model still has a
    whole GPU to itself). ``gpus``: CUDA device indices, one per model (``device="cpu"`` runs the same plumbing on
    the CPU, for tests). ``kwargs`` are `run`'s (lengths,
    decode_tokens, chunk_size, dtype, memory_budget_gib, time_budget_s)."""
    import json
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    models = tuple(models)
    if len(gpus) != len(models):
        raise ValueError(f"--gpus needs one GPU per model: {len(models)} models {models}, {len(gpus)} GPUs {gpus}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--gpus runs the models on several CUDA devices, but CUDA is not available")
    with tempfile.TemporaryDirectory(prefix="bench-model-", dir=out_dir if Path(out_dir).is_dir() else None) as tmp:
        procs = []
        for i, (m, gpu) in enumerate(zip(models, gpus)):
            part = Path(tmp) / f"part{i}"  # a model may be named by a config path
            part.mkdir()
            args = [sys.executable, "-m", "longforge.cli", "bench", "model", "--models", m, "--out", str(part),
                    "--device", device, "--dtype", kwargs.get("dtype", "bf16")]  # fmt: skip
            if kwargs.get("lengths"):
                args += ["--lengths", ",".join(str(n) for n in kwargs["lengths"])]
            for key, flag in (("decode_tokens", "--decode-tokens"), ("chunk_size", "--chunk-size"),
                              ("memory_budget_gib", "--memory-budget-gib"), ("time_budget_s", "--time-budget-s")):
                if kwargs.get(key) is not None:
                    args += [flag, str(kwargs[key])]
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
            log(f"[{m}] on GPU {gpu}: {' '.join(args[1:])}")
            procs.append((m, part, subprocess.Popen(args, env=env)))
        records, failed = [], []
        for m, part, proc in procs:
            proc.wait()
            found = sorted(part.glob("model_*.json"))
            if not found:
                failed.append(f"{m} (exit code {proc.returncode}, no records)")
                continue
            records += json.loads(found[-1].read_text())
            if proc.returncode not in (0, 1):  # 1 = the 1M check failed, still a result
                failed.append(f"{m} (exit code {proc.returncode})")
    if not records:
        raise RuntimeError(f"no model produced records: {', '.join(failed)}")
    order = {m: i for i, m in enumerate(models)}
    records.sort(key=lambda r: (order.get(r["model"], len(order)), r["seq_len"]))
    for r in records:
        r["parallel_gpus"] = len(models)
    write_results(records, out_dir, torch.device(device))
    if failed:
        log(f"warning: {', '.join(failed)}")
    return records


def _fmt(x, spec="{:.3f}"):
    return "—" if x is None else spec.format(x)


def write_results(records: list[dict], out_dir, device: torch.device, plot: bool = True):
    stem = _report.results_stem(out_dir, "model", device)
    _report.write_json(stem, records)
    env = _report.environment()
    lines = [
        f"# Whole-model prefill and decode — {_report.device_name(device)}, random weights, "
        f"{records[0]['dtype']}, batch 1, torch {env['torch']}",
        "",
        f"Chunked prefill ({records[0]['chunk_size']} tokens per chunk) then {records[0]['decode_tokens']} greedy "
        "tokens; TTFT = prefill + first token; decode tokens/s over the tokens after the first; peak = max CUDA "
        "memory allocated (weights included). `oom` = refused by the memory plan or a real out-of-memory.",
        "",
        "| model | length | status | TTFT s | decode tok/s | peak GiB | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: (r["model"], r["seq_len"])):
        lines.append(
            f"| {r['model']} | {_report.length_label(r['seq_len'])} | {r['status']} | {_fmt(r['ttft_s'])} | "
            f"{_fmt(r['decode_tokens_per_s'], '{:.1f}')} | {_fmt(r['peak_mem_gib'], '{:.2f}')} | {r['note'][:120]} |"
        )
    ratios = ratio_rows(records)
    if ratios:
        lines += [
            "",
            "## Speedup over the baseline",
            "",
            "| length | model | baseline | TTFT speedup | decode tok/s ratio |",
            "|---|---|---|---|---|",
        ]
        for n, m, base, ttft, dec in ratios:
            lines.append(
                f"| {_report.length_label(n)} | {m} | {base} | {_fmt(ttft, '{:.2f}×')} | {_fmt(dec, '{:.2f}×')} |"
            )
    check = hybrid_1m_check(records)
    if check is not None:
        lines += [
            "",
            f"**1M-token check** (hybrid prefill + {records[0]['decode_tokens']} decoded tokens): "
            + ("passed" if check["passed"] else "FAILED")
            + " — "
            + "; ".join(f"{r['model']}: {r['status']}" for r in check["records"]),
        ]
    _report.write_markdown(stem, lines)
    if not plot:
        return stem
    plt = _report.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for m in dict.fromkeys(r["model"] for r in records):
        rows = sorted((r for r in records if r["model"] == m), key=lambda r: r["seq_len"])
        ok = [r for r in rows if r["status"] == "ok"]
        for ax, key in zip(axes, ("ttft_s", "decode_tokens_per_s", "peak_mem_gib")):
            pts = [(r["seq_len"], r[key]) for r in ok if r[key]]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=m)
        for r in rows:
            if r["status"] == "oom":
                axes[0].axvline(r["seq_len"], color="red", ls=":", lw=0.8)
                axes[0].annotate(
                    f"{m} oom",
                    (r["seq_len"], 0.5),
                    xycoords=("data", "axes fraction"),
                    rotation=90,
                    fontsize=7,
                    color="red",
                )
    titles = ("time to first token (s)", "decode tokens/s (batch 1)", "peak memory (GiB)")
    _report.style_log_axes(axes, titles, "prompt tokens")
    fig.suptitle(f"longforge bench model — {_report.device_name(device)}")
    fig.tight_layout()
    _report.save_figure(fig, stem)
    return stem


__all__ = [
    "DEFAULT_LENGTHS",
    "DEFAULT_MODELS",
    "build_random_model",
    "warm_up",
    "hybrid_1m_check",
    "ratio_rows",
    "run",
    "write_results",
]
