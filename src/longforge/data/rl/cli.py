"""`longforge data synth-rl` and `longforge data filter-rl`: thin verbs over :mod:`longforge.data.rl`.

``add_data_parser(subparsers)`` registers the ``data`` verb and its sub-verbs on the console script's parser; each
sub-verb is ``func(Namespace) -> int`` and raises ValueError for user errors (the console script prints them).
"""

from __future__ import annotations

import argparse
import sys


def cmd_synth_rl(args) -> int:
    """Build the eight long-context RL datasets of "Beyond Reward Engineering" (FuzzyNeedle, MultiNeedle,
    CrossEntity, WebSearch, MultiQuery, KeyChain, LongDocQA, LongMath) in the paper's proportions × --scale, each
    prompt fitted with the policy's tokenizer to at most --max-tokens (FuzzyNeedle: at most 32K, as in the paper).
    --source builtin uses the built-in synthetic world; otherwise give files or directories of HotpotQA / MuSiQue /
    Qasper JSON, {title, text} JSONL documents and math problems (DeepMath / MATH JSONL or Parquet). Writes
    <Dataset>.jsonl|parquet, summary.md, summary.json and lengths.png into --out."""
    from .synth import load_tokenizer, synth_rl

    tokenizer = load_tokenizer(args.tokenizer)
    source = "builtin" if args.source == ["builtin"] else args.source
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None
    summary = synth_rl(
        args.out,
        tokenizer,
        source=source,
        scale=args.scale,
        max_tokens=args.max_tokens,
        min_tokens=args.min_tokens,
        seed=args.seed,
        datasets=datasets,
        fmt=args.format,
        tokenizer_name=args.tokenizer,
        progress=not args.no_progress,
    )
    total = sum(d["items"] for d in summary["datasets"].values())
    print(f"wrote {total:,} items in {len(summary['datasets'])} datasets to {args.out} (summary.md, lengths.png)")
    return 0


def cmd_filter_rl(args) -> int:
    """Keep the RL items a policy solves sometimes but not always: --rollouts sampled answers per item from --policy
    (a local HF model directory or a built-in model name), pass = reward ≥ --threshold, keep 0 < pass rate < 1.
    --total N writes a task-balanced subset (equal share per dataset; short datasets give their slack to the
    others). Writes the kept records per dataset plus filter_summary.md / .json into --out."""
    from .filter import filter_rl

    judge = None
    if args.judge_model or args.judge_url:
        from ...train.rewards import LLMJudge

        judge = LLMJudge(model=args.judge_model, url=args.judge_url, model_name=args.judge_model_name)
    summary = filter_rl(
        args.data,
        args.policy,
        args.out,
        rollouts=args.rollouts,
        threshold=args.threshold,
        total=args.total,
        seed=args.seed,
        fmt=args.format,
        judge=judge,
        device=args.device,
        progress=not args.no_progress,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=args.batch_size,
        prompt_suffix=args.prompt_suffix,
        chat_template=args.chat_template,
    )
    print(f"kept {summary['kept']} of {summary['items']} items, wrote {summary['written']} to {args.out}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``data`` with the sub-verbs ``synth-rl`` and ``filter-rl``."""
    data = subparsers.add_parser("data", help="data tools (long-context RL datasets)", description=__doc__)
    sub = data.add_subparsers(dest="data_verb", required=True)

    p = sub.add_parser("synth-rl", help="build the eight long-context RL datasets", description=cmd_synth_rl.__doc__)
    p.add_argument("--source", nargs="+", default=["builtin"], help="builtin, or source files / directories")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--scale", type=float, default=1.0, help="× the paper's 14,069 items (default 1)")
    p.add_argument("--max-tokens", type=_positive_int, default=65536, help="prompt length cap (default 64K)")
    p.add_argument("--min-tokens", type=int, default=0, help="prompt length floor (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", default="tiny-teacher", help="the policy's tokenizer: model dir or built-in name")
    p.add_argument("--datasets", default=None, help="comma-separated subset, e.g. FuzzyNeedle,KeyChain")
    p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_synth_rl)

    p = sub.add_parser("filter-rl", help="keep items with 0 < pass rate < 1", description=cmd_filter_rl.__doc__)
    p.add_argument("--data", nargs="+", required=True, help="record files or directories (synth-rl output)")
    p.add_argument("--policy", required=True, help="local HF model directory or built-in model name")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--rollouts", type=_positive_int, default=4)
    p.add_argument("--threshold", type=float, default=1.0, help="reward at which a rollout passes (default 1)")
    p.add_argument("--total", type=_positive_int, default=None, help="write a task-balanced subset of N items")
    p.add_argument("--max-new-tokens", type=_positive_int, default=256)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--batch-size", type=_positive_int, default=16, help="sequences per generate call")
    p.add_argument("--prompt-suffix", default="", help='appended to every prompt, e.g. "\\nAnswer:"')
    p.add_argument("--chat-template", action="store_true", help="wrap prompts in the tokenizer's chat template")
    p.add_argument("--judge-model", default=None, help="local judge model for llm_judge rewards")
    p.add_argument("--judge-url", default=None, help="OpenAI-compatible judge endpoint for llm_judge rewards")
    p.add_argument("--judge-model-name", default="judge")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_filter_rl)
    return data


def main(argv: list[str] | None = None) -> int:
    """``python -m longforge.data.rl.cli data synth-rl ...`` (the same verbs as ``longforge data``)."""
    from ...cli import main as cli_main  # the one entry point: same parsing and error convention

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
