"""`longforge convert`: HALO conversion of a Transformer into a HypeNet / MiniCPM-SALA hybrid."""

from __future__ import annotations

import argparse

from .config import ConvertConfig, parse_tokens


def config_from_args(args: argparse.Namespace) -> ConvertConfig:
    from ..recipes import load_recipe

    overrides = list(args.overrides)
    flags = {
        "teacher": args.teacher, "recipe": args.recipe, "out_dir": args.out, "attn_ratio": args.attn_ratio,
        "device": args.device, "seed": args.seed,
    }  # fmt: skip
    for key, value in flags.items():
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_recipe(ConvertConfig, args.config, overrides)
    if args.data:
        cfg.data = [p.strip() for p in args.data.split(",") if p.strip()]
        if not cfg.data:
            raise ValueError("--data: no paths given")
    if args.stages:
        cfg.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if args.tokens_per_stage:
        parts = [p for p in args.tokens_per_stage.split(",")]
        if len(parts) != 3:
            raise ValueError(f"--tokens-per-stage takes three counts (stage 1, 2, 3), e.g. 600K,1M,500K; got {parts}")
        for spec, text in zip((cfg.stage1, cfg.stage2, cfg.stage3), parts):
            spec.tokens = parse_tokens(text)
    if args.keep_layers:
        try:
            cfg.select.layers = [int(x) for x in args.keep_layers.split(",")]
        except ValueError:
            raise ValueError(f"--keep-layers takes layer indices, e.g. 0,7; got {args.keep_layers!r}") from None
    cfg.validate()
    return cfg


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a Transformer (a local Qwen3 / Llama directory, or a built-in name such as tiny-teacher) into a
    hybrid with HALO: stage 1 (align a Lightning student per layer), layer selection, stage 2 (distillation),
    stage 3 (long-context fine-tuning) and the HyPE logit-scaling sweep. Every stage is checkpointed in --out and a
    rerun resumes. Options override the recipe file; any field can be set as key=value (e.g. stage3.seq_len=4096,
    hybrid.sparse_topk=16)."""
    from rich.console import Console

    from .pipeline import convert

    cfg = config_from_args(args)
    report = convert(cfg, progress=not args.no_progress)
    console = Console()
    if report is None:
        console.print(f"stages {', '.join(cfg.stages)} done; state in {cfg.out_dir}")
        return 0
    from .report import markdown

    console.print(markdown(report))
    console.print(f"hybrid saved to {cfg.out_dir}/model; report in {cfg.out_dir}/report.md")
    return 0


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert", help="HALO: Transformer → HypeNet / MiniCPM-SALA hybrid", description=cmd_convert.__doc__
    )
    p.add_argument("--config", default=None, help="YAML recipe (recipes/convert/*.yaml); flags override it")
    p.add_argument("--teacher", default=None, help="transformers Qwen3/Llama directory or built-in name")
    p.add_argument("--recipe", choices=["hypenet", "sala"], default=None)
    p.add_argument("--out", default=None, help="output directory (resumable)")
    p.add_argument("--data", default=None, help="comma-separated JSONL / Parquet / saved-dataset paths")
    p.add_argument("--attn-ratio", type=float, default=None, help="share of layers kept as attention (0, 1)")
    p.add_argument("--tokens-per-stage", default=None, help="stage 1,2,3 token budgets, e.g. 600K,1M,500K")
    p.add_argument("--stages", default=None, help="subset of 1,select,2,3,hype (default: all)")
    p.add_argument("--keep-layers", default=None, help="skip the selection sweep: keep these layers as attention")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stage3.seq_len=4096")
    p.set_defaults(func=cmd_convert)
    return p
