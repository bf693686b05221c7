"""The `longforge` console script: one subcommand per verb, each a thin call into the package.

longforge info MODEL_OR_CONFIG     layer map, parameters by kind, cache memory per sequence
longforge demo                     the main job on the embedded default
longforge import SRC --out DIR     a transformers Qwen3 / Llama directory → a longforge hybrid directory
longforge convert --teacher M --recipe hypenet|sala --out DIR   HALO conversion into a hybrid
longforge train RECIPE [k=v ...]   pre-training / SFT from a YAML recipe
longforge bench moe                DECO FFN decode latency vs dense
longforge bench model | kernels    long-context TTFT / decode / memory; attention ops vs cuDNN
longforge generate MODEL --prompt-file F --max-new-tokens N   chunked-prefill generation
longforge eval MODEL --suite S     RULER / RULER-lite / NIAH heatmap
longforge data synth-rl | filter-rl  the long-context RL data recipe
longforge rl RECIPE [k=v ...]      outcome-based GRPO
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

INFO_LENGTHS = (4096, 32768, 131072, 1048576)


def _length_label(n: int) -> str:
    return f"{n // 1048576}M" if n % 1048576 == 0 else f"{n // 1024}K"


def _console():
    from rich.console import Console

    return Console()


def info_report(config) -> dict:
    """The numbers `longforge info` prints, as a dict (also what `--json` writes)."""
    import torch

    from .models.hybrid.memory import cache_bytes, parameter_counts

    return {
        "layer_types": list(config.layer_types),
        "position_encoding": config.position_encoding,
        "attn_logit_scaling": config.attn_logit_scaling,
        "rope_layers": [i for i in range(config.num_hidden_layers) if config.layer_uses_rope(i)],
        "parameters": parameter_counts(config),
        "cache_bytes_bf16": {str(n): cache_bytes(config, n, torch.bfloat16) for n in INFO_LENGTHS},
    }


def cmd_info(args) -> int:
    """Show a model's layer map, parameter counts by kind, and its cache memory per sequence at
    4K / 32K / 128K / 1M tokens in bf16 — from the config alone (a built-in shape name such as
    qwen3-8b-shape or sala-9b-shape, a config.json, or a model directory)."""
    from rich.table import Table

    from .models import load_config
    from .models.hybrid.memory import format_bytes, format_count

    config = load_config(args.model)
    report = info_report(config)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    console = _console()
    letters = {"full_attention": "F", "sliding_attention": "W", "sparse_attention": "S", "lightning_attention": "L"}
    layer_map = "".join(letters[t] for t in config.layer_types)
    console.print(f"[bold]{args.model}[/bold]  ({config.num_hidden_layers} layers, hidden {config.hidden_size})")
    console.print(f"layer map  {layer_map}   (F full, W sliding window, S InfLLM-V2 sparse, L lightning)")
    nope = [i for i in range(config.num_hidden_layers) if not config.layer_uses_rope(i)]
    console.print(
        f"positions  {config.position_encoding}; NoPE layers: {nope or 'none'}; "
        f"logit scaling: {config.attn_logit_scaling}"
    )
    params = Table(title="parameters")
    params.add_column("kind")
    params.add_column("count", justify="right")
    for kind, n in report["parameters"].items():
        params.add_row(kind, f"{format_count(n)} ({n:,})")
    console.print(params)
    mem = Table(title="cache per sequence (bf16 KV; fp32 lightning state)")
    mem.add_column("tokens", justify="right")
    kinds = [k for k in next(iter(report["cache_bytes_bf16"].values())) if k != "total"]
    for k in kinds:
        mem.add_column(k, justify="right")
    mem.add_column("total", justify="right")
    for n, by_kind in report["cache_bytes_bf16"].items():
        mem.add_row(_length_label(int(n)), *[format_bytes(by_kind[k]) for k in kinds], format_bytes(by_kind["total"]))
    console.print(mem)
    return 0


def cmd_demo(args) -> int:
    """The main job on the embedded default: the tiny teacher against the tiny hybrid that HALO made of it —
    RULER-lite from 1K up to 4× the teacher's training length, prefill / decode speed and cache memory by length,
    side by side, with a report (JSON, markdown, PNG) in --out. --convert reruns the conversion first (a GPU is
    recommended) and adds the fresh hybrid as a third column."""
    from .demo import run_demo

    console = _console()
    console.rule("[bold]longforge demo: tiny teacher vs its HALO hybrid (InfLLM-V2 sparse + Lightning, HyPE)")
    cmd_info(argparse.Namespace(model="tiny-hybrid", json=False))
    report = run_demo(
        out=args.out,
        lengths=[int(x) for x in args.lengths.split(",")] if args.lengths else None,
        samples=args.samples,
        speed_lengths=[int(x) for x in args.speed_lengths.split(",")] if args.speed_lengths else None,
        convert=args.convert,
        device=args.device,
        seed=args.seed,
        progress=not args.no_progress,
        console=console,
    )
    console.print(report["markdown"])
    console.print(f"report: {args.out}/demo.md, demo_ruler.png, demo_speed.png")
    return 0


def cmd_import(args) -> int:
    """Import a local transformers Qwen3 / Llama directory into a longforge hybrid and save it (safetensors).
    With no --layer-types the result computes the same function as the source."""
    from .models import from_transformers

    overrides = {}
    if args.position_encoding:
        overrides["position_encoding"] = args.position_encoding
    if args.attn_logit_scaling:
        overrides["attn_logit_scaling"] = args.attn_logit_scaling
    model = from_transformers(args.src, layer_types=args.layer_types, **overrides)
    out = Path(args.out)
    model.save_pretrained(out)
    src = Path(args.src)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
        if (src / name).is_file():
            (out / name).write_bytes((src / name).read_bytes())
    _console().print(
        f"saved {type(model).__name__} ({''.join(t[0].upper() for t in model.config.layer_types)}) to {out}"
    )
    return 0


def cmd_train(args) -> int:
    """Train a model from a YAML recipe (pre-training / SFT on packed sequences), with key=value overrides such
    as `steps=100 optim.lr=1e-3 model.config.hidden_size=256`. Resumes from the run's latest checkpoint; under
    torchrun (WORLD_SIZE > 1) the model is sharded with FSDP2."""
    from .recipes import load_recipe
    from .train import TrainConfig, train

    cfg = load_recipe(TrainConfig, args.recipe, args.overrides)
    trainer = train(cfg, progress=not args.no_progress)
    if trainer.dist.is_main:
        last = trainer.history[-1] if trainer.history else {}
        _console().print(
            f"done: step {trainer.step}, {trainer.tokens_seen:,} tokens, loss {last.get('loss', float('nan')):.4f}; "
            f"checkpoints in {cfg.out_dir}/checkpoints"
        )
    return 0


def cmd_bench(args) -> int:
    """Benchmarks that write JSON + markdown + PNG under --out (default benchmarks/results/).
    `moe`: DECO FFN decode latency against a dense SwiGLU FFN with the same total parameters, at DECO's
    0.1B / 0.5B / 1.2B layer shapes, activation ratios and chunk sizes."""
    if args.what == "moe":
        from .bench.moe import run

        records = run(
            out_dir=args.out,
            device=args.device,
            shapes=tuple(args.shapes.split(",")),
            ratios=tuple(float(r) for r in args.ratios.split(",")),
            tokens=tuple(int(t) for t in args.tokens.split(",")),
            dtype=args.dtype,
            repeats=args.repeats,
        )
        best = max(records, key=lambda r: r["speedup"])
        _console().print(f"{len(records)} records written to {args.out}; best speedup {best['speedup']}× ({best})")
        return 0
    if args.what in ("model", "kernels"):
        return _cmd_bench_long_context(args)
    raise ValueError(f"unknown benchmark {args.what!r}")


def _cmd_bench_long_context(args) -> int:
    """`bench model` (TTFT / decode tokens/s / peak memory per prompt length, hybrid vs full attention) and `bench
    kernels` (each mixer's attention op vs dense cuDNN attention)."""
    from .bench._report import parse_length

    lengths = tuple(parse_length(x) for x in args.lengths.split(",")) if args.lengths else None
    dtype = args.dtype
    if args.what == "kernels":
        from .bench.kernels import DEFAULT_LENGTHS, MIXERS, run

        records = run(out_dir=args.out, lengths=lengths or DEFAULT_LENGTHS,
                      mixers=tuple(args.mixers.split(",")) if args.mixers else MIXERS, device=args.device,
                      dtype=dtype, window=args.window, repeats=min(args.repeats, 10))
        print(f"{len(records)} records written to {args.out}")
        return 0
    from .bench.model import DEFAULT_LENGTHS, DEFAULT_MODELS, hybrid_1m_check, ratio_rows, run

    models = tuple(args.models.split(",")) if args.models else DEFAULT_MODELS
    common = dict(lengths=lengths or DEFAULT_LENGTHS, decode_tokens=args.decode_tokens, chunk_size=args.chunk_size,
                  dtype=dtype, memory_budget_gib=args.memory_budget_gib, time_budget_s=args.time_budget_s or None)
    if args.gpus:
        from .bench.model import run_parallel

        records = run_parallel(models, [g.strip() for g in args.gpus.split(",") if g.strip()], args.out, **common)
    else:
        records = run(out_dir=args.out, models=models, device=args.device, **common)
    for n, m, base, ttft, dec in ratio_rows(records):
        print(f"{n:>8} tokens  {m} vs {base}: TTFT speedup {ttft and round(ttft, 2)}×, decode ratio "
              f"{dec and round(dec, 2)}×")
    check = hybrid_1m_check(records)
    if check is not None:
        print(f"1M-token hybrid check (prefill + {args.decode_tokens} tokens): "
              + ("passed" if check["passed"] else "FAILED"))
    print(f"{len(records)} records written to {args.out}")
    return 0 if check is None or check["passed"] else 1


def cmd_generate(args) -> int:
    """Generate text after a (long) prompt with chunked prefill and a planned cache: MODEL is a local model
    directory or a built-in name (tiny-teacher). Prints the new text, then prompt tokens, prefill time (TTFT),
    decode tokens/s and peak memory. A request that cannot fit in memory ends with a clear error."""
    from .eval.loading import load_model_and_tokenizer
    from .infer import InferenceEngine

    prompt_path = Path(args.prompt_file)
    if not prompt_path.is_file():
        raise ValueError(f"--prompt-file {args.prompt_file!r} is not a file")
    text = prompt_path.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"--prompt-file {args.prompt_file!r} is empty")
    model, tokenizer = load_model_and_tokenizer(args.model, device=args.device, dtype=args.dtype)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    if ids.shape[1] == 0:
        raise ValueError(f"the prompt in {args.prompt_file!r} tokenizes to nothing")
    budget = None if args.memory_budget_gib is None else int(args.memory_budget_gib * 1024**3)
    engine = InferenceEngine(model, chunk_size=args.chunk_size, memory_budget_bytes=budget)
    result = engine.generate(ids, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                             top_p=args.top_p, seed=args.seed)
    print(tokenizer.decode(result.tokens[0], skip_special_tokens=True))
    print(result.summary(), file=sys.stderr if args.quiet_stats else sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longforge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("info", help="layer map, parameters and cache memory of a model", description=cmd_info.__doc__)
    p.add_argument("model", help="built-in shape name, config.json, or model directory")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="the main job on the embedded default", description=cmd_demo.__doc__)
    p.add_argument("--out", default="runs/demo")
    p.add_argument(
        "--lengths", default=None, help="RULER-lite lengths (default 1024,4096; 16384 = 4x, slow on CPU)"
    )
    p.add_argument("--samples", type=int, default=1, help="samples per task and length")
    p.add_argument("--speed-lengths", default=None, help="prompt lengths of the speed table (default 1024,4096)")
    p.add_argument("--convert", action="store_true", help="rerun the conversion first (GPU recommended)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="benchmarks (JSON + markdown + PNG)", description=cmd_bench.__doc__)
    p.add_argument("what", choices=["moe", "model", "kernels"])
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--device", default="auto")
    p.add_argument("--shapes", default="0.1B,0.5B,1.2B")
    p.add_argument("--ratios", default="0.1,0.2,0.3,0.5")
    p.add_argument("--tokens", default="1,8,32,64")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--repeats", type=int, default=20)
    # bench model / kernels (lengths accept K / M suffixes: 8K,32K,1M)
    p.add_argument("--models", default=None, help="model: comma-separated shapes (default: sala-9b, qwen3-8b)")
    p.add_argument("--lengths", default=None, help="model / kernels: e.g. 8K,32K,128K,256K,512K,1M")
    p.add_argument("--decode-tokens", type=int, default=64, help="model: tokens decoded after each prefill")
    p.add_argument("--chunk-size", type=int, default=32768, help="model: prefill chunk (tokens)")
    p.add_argument("--memory-budget-gib", type=float, default=None, help="model: plan against this, not free memory")
    p.add_argument("--time-budget-s", type=float, default=480.0, help="model: skip runs predicted past it (0 = none)")
    p.add_argument("--gpus", default=None, help="model: one CUDA device per model, run side by side (e.g. 0,1)")
    p.add_argument("--mixers", default=None, help="kernels: dense,full,sliding,sparse,lightning")
    p.add_argument("--window", type=int, default=4096, help="kernels: sliding window")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "generate", help="generate after a long prompt (chunked prefill)", description=cmd_generate.__doc__
    )
    p.add_argument("model", help="local model directory or built-in name (tiny-teacher)")
    p.add_argument("--prompt-file", required=True)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--chunk-size", type=int, default=32768, help="prompt tokens per prefill step")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--memory-budget-gib", type=float, default=None, help="plan against this instead of free memory")
    p.add_argument("--quiet-stats", action="store_true", help="print the statistics line to stderr")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", help="train from a YAML recipe", description=cmd_train.__doc__)
    p.add_argument("recipe", help="YAML recipe, e.g. recipes/train/tiny-teacher.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys for nested fields)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "import", help="transformers Qwen3/Llama dir → longforge hybrid dir", description=cmd_import.__doc__
    )
    p.add_argument("src", help="local transformers model directory (safetensors)")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--layer-types", default=None, help="pattern such as LLLF (F full, W sliding, S sparse, L lightning)"
    )
    p.add_argument("--position-encoding", choices=["rope", "hype"], default=None)
    p.add_argument("--attn-logit-scaling", default=None, help="e.g. 'hype 500'")
    p.set_defaults(func=cmd_import)

    from .convert.cli import add_convert_parser
    from .data.rl.cli import add_data_parser
    from .eval.cli import add_eval_parser
    from .train.grpo_cli import add_rl_parser

    add_convert_parser(sub)  # longforge convert --teacher MODEL --recipe hypenet|sala --out DIR
    add_eval_parser(sub)  # longforge eval MODEL --suite ruler|ruler-lite|niah
    add_data_parser(sub)  # longforge data synth-rl | filter-rl
    add_rl_parser(sub)  # longforge rl RECIPE [k=v ...]
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come before or after flags (`train R.yaml --no-progress steps=10`)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except ValueError as e:
        print(f"longforge {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
