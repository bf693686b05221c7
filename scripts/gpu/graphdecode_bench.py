"""Decode tokens/s of 4-layer slices of sala-9b-shape and qwen3-8b-shape with and without the CUDA-graph static
decode (issue #5), plus a torch.profiler table of one graphed vs one eager (dynamic) decode step.

    python scripts/gpu/graphdecode_bench.py OUT_DIR [--device cuda] [--lengths 8192,262144] [--tokens 96]

Per (shape, length): one `InferenceEngine.generate` per decode mode on the same random prompt —
``graph`` (the default on CUDA: static step captured in a CUDA graph), ``static-eager`` (the same static step without
the graph) and ``dynamic`` (the model's own cached forward, the path measured in the issue). Writes decode.json and
decode.md after every record (a killed run keeps its numbers) and profile.txt. ``--device cpu`` runs tiny shapes
(plumbing check only; no graphs on CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from longforge.bench.model import build_random_model
from longforge.infer import InferenceEngine
from longforge.models import HybridCache, load_config
from longforge.utils.io import atomic_write_text

MODES = {
    "graph": dict(cuda_graph=True, static_decode=True),
    "static-eager": dict(cuda_graph=False, static_decode=True),
    "dynamic": dict(cuda_graph=False, static_decode=False),
}


def slice_config(name: str, layers: int, tiny: bool):
    c = load_config(name)
    full_layers = c.num_hidden_layers
    c.num_hidden_layers = layers
    c.layer_types = c.layer_types[:layers]
    c.mlp_types = c.mlp_types[:layers] if getattr(c, "mlp_types", None) else c.mlp_types
    if tiny:  # CPU plumbing check
        c.hidden_size, c.intermediate_size, c.vocab_size = 128, 256, 1000
        c.num_attention_heads, c.head_dim = 4, 32
        c.num_key_value_heads = 2 if name.startswith("q") else 1
        c.lightning_num_heads, c.lightning_head_dim = 4, 32
        c.sparse_dense_len, c.sparse_block_size, c.sparse_kernel_size, c.sparse_kernel_stride = 64, 16, 8, 4
        c.sparse_window_size, c.sparse_topk = 32, 2
    return c, full_layers


def write(out: Path, records: list[dict], meta: dict) -> None:
    atomic_write_text(out / "decode.json", json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
    md = [f"# Decode tokens/s, {meta['device']} ({meta['dtype']}, batch 1, random weights, 4-layer slices)", "",
          f"torch {meta['torch']}; {meta['tokens']} decoded tokens per run (the first one is prefill's, not counted); "
          "`graph` includes its eager warm-up step and the capture; \"replays only\" leaves them out.", "",
          "| model | layers | length | mode | decode tok/s | ms/token | replays only tok/s | capture s | graph replays "
          "| note |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        tps = r.get("decode_tokens_per_s")
        md.append(f"| {r['model']} | {','.join(t[:2] for t in r['layer_types'])} | {r['seq_len']} | {r['mode']} | "
                  f"{'—' if tps is None else f'{tps:.1f}'} | {'—' if not tps else f'{1e3 / tps:.2f}'} | "
                  f"{r.get('replay_tokens_per_s') or '—'} | {r.get('capture_s', '—')} | "
                  f"{r.get('graph_replays', '—')} | "
                  f"{r.get('note', '')} |")
    # speed-ups and the sala / qwen3 ratio per length and mode
    by = {(r["model"], r["seq_len"], r["mode"]): r.get("decode_tokens_per_s") for r in records}
    md += ["", "| model | length | graph / dynamic | graph / static-eager |", "|---|---|---|---|"]
    for (m, n, mode), tps in by.items():
        if mode != "graph" or not tps:
            continue
        d, s = by.get((m, n, "dynamic")), by.get((m, n, "static-eager"))
        md.append(f"| {m} | {n} | {tps / d:.2f}× |" if d else f"| {m} | {n} | — |")
        md[-1] += f" {tps / s:.2f}× |" if s else " — |"
    md += ["", "| length | mode | sala / qwen3 decode tok/s |", "|---|---|---|"]
    for (m, n, mode), tps in by.items():
        if m.startswith("sala") and tps:
            q = by.get(("qwen3-8b-shape", n, mode))
            if q:
                md.append(f"| {n} | {mode} | {tps / q:.2f}× |")
    atomic_write_text(out / "decode.md", "\n".join(md) + "\n")


def profile_steps(model, config, dev, n_prompt: int, log) -> str:
    """torch.profiler tables: 3 replays of the graphed step vs 3 dynamic (eager) steps after the same prompt."""
    from torch.profiler import ProfilerActivity, profile

    from longforge.infer import preallocated_cache
    from longforge.infer.static_decode import StaticDecoder, StaticDecodeState

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    prompt = torch.randint(0, config.vocab_size, (1, n_prompt), device=dev)
    dtype = next(model.parameters()).dtype
    text = []
    with torch.inference_mode():
        cache = preallocated_cache(config, 1, n_prompt + 16, dtype, dev)
        logits = model(prompt, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        token = logits.argmax(-1)
        dec = StaticDecoder(model, StaticDecodeState(model, cache, n_prompt + 16), cuda_graph=True)
        for _ in range(4):  # warm-up + capture
            token = dec.step(token).argmax(-1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        with profile(activities=acts) as prof:
            for _ in range(3):
                token = dec.step(token).argmax(-1)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        text.append(f"## graphed static step x3 (graph used: {dec.use_graph}, failed: {dec.graph_failed})")
        text.append(prof.key_averages().table(sort_by="self_cuda_time_total" if dev.type == "cuda"
                                              else "self_cpu_time_total", row_limit=20))
        del dec, cache
        cache = HybridCache(config)
        logits = model(prompt, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        token = logits.argmax(-1)
        for _ in range(2):
            token = model(token[:, None], cache=cache, use_cache=True).logits[:, -1].argmax(-1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        with profile(activities=acts) as prof:
            for _ in range(3):
                token = model(token[:, None], cache=cache, use_cache=True).logits[:, -1].argmax(-1)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        text.append("## dynamic (eager) step x3")
        text.append(prof.key_averages().table(sort_by="self_cuda_time_total" if dev.type == "cuda"
                                              else "self_cpu_time_total", row_limit=20))
        text.append(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return "\n".join(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--lengths", default="262144,8192")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--chunk-size", type=int, default=32768)
    ap.add_argument("--models", default="sala-9b-shape,qwen3-8b-shape")
    ap.add_argument("--time-budget-s", type=float, default=200.0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    tiny = dev.type == "cpu"
    dtype = torch.float32 if tiny else torch.bfloat16
    lengths = [int(x) for x in args.lengths.split(",")]
    meta = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "dtype": str(dtype),
            "torch": torch.__version__, "tokens": args.tokens, "layers": args.layers}
    records: list[dict] = []
    t_start = time.perf_counter()
    profiles = []
    models = {}
    for name in args.models.split(","):  # both resident (a 4-layer slice is a few GB): lengths can go first
        config, full_layers = slice_config(name, args.layers, tiny)
        model = build_random_model(config, dev, dtype)
        # untimed warm-up of every mode (kernel compilation, autotuning, the Triton check)
        warm = torch.randint(0, config.vocab_size, (1, min(2 * args.chunk_size, 4096)), device=dev)
        for kw in MODES.values():
            InferenceEngine(model, chunk_size=args.chunk_size, **kw).generate(warm, 8, eos_token_id=None)
        models[name] = (config, full_layers, model)
    for n in lengths:  # in the order given: the headline length first, so a short budget drops the rest
        for name, (config, full_layers, model) in models.items():
            prompt = torch.randint(0, config.vocab_size, (1, n), device=dev,
                                   generator=torch.Generator(device=dev).manual_seed(n))
            for mode, kw in MODES.items():
                rec = {"model": name, "layers": f"{args.layers} of {full_layers}", "layer_types": config.layer_types,
                       "seq_len": n, "mode": mode}
                if args.time_budget_s and time.perf_counter() - t_start > args.time_budget_s:
                    rec["note"] = "skipped: time budget"
                    records.append(rec)
                    continue
                try:
                    engine = InferenceEngine(model, chunk_size=args.chunk_size, **kw)
                    r = engine.generate(prompt, args.tokens, eos_token_id=None)
                    rec.update(decode_tokens_per_s=round(r.decode_tokens_per_s, 2), ttft_s=round(r.ttft_s, 3),
                               peak_mem_gib=None if r.peak_mem_bytes is None else round(r.peak_mem_bytes / 2**30, 2),
                               **{k: v for k, v in engine.last_decode_info.items() if k != "static"})
                    del r, engine
                except Exception as e:  # noqa: BLE001 — record and go on
                    rec["note"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                records.append(rec)
                print(json.dumps(rec), flush=True)
                write(out, records, meta)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            del prompt
    for name, (config, _, model) in models.items():
        try:
            profiles.append(f"# {name} ({config.layer_types}) at {min(lengths)}\n"
                            + profile_steps(model, config, dev, min(lengths), print))
        except Exception as e:  # noqa: BLE001
            profiles.append(f"# {name}: profile failed: {type(e).__name__}: {e}")
        atomic_write_text(out / "profile.txt", "\n\n".join(profiles) + "\n")
    write(out, records, meta)
    print((out / "decode.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
