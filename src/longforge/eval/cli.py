"""``longforge eval``: the long-context evaluation verb (wired into ``longforge.cli`` by ``add_eval_parser``).

Also runnable alone: ``python -m longforge.eval.cli MODEL --suite ruler-lite --lengths 4k,8k --out DIR``.
"""

from __future__ import annotations

import argparse
import sys

from .report import markdown_table, parse_lengths
from .run import SUITE_DEFAULTS, EvalConfig, run_eval


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _depths(text: str) -> list[float]:
    try:
        return [float(item) for item in _csv(text)]
    except ValueError:
        raise ValueError(f"--depths: expected percentages such as 0,25,50,75,100, got {text!r}") from None


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(
        model=args.model,
        suite=args.suite,
        lengths=parse_lengths(args.lengths) if args.lengths else None,
        samples=args.samples,
        tasks=_csv(args.tasks) if args.tasks else None,
        depths=_depths(args.depths) if args.depths else None,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        chat_template=args.chat_template,
        qa_squad=args.qa_squad,
        qa_hotpotqa=args.qa_hotpotqa,
        out=args.out,
    )


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a causal LM on long context: RULER's 13 tasks (`ruler`), a 7-task quick subset (`ruler-lite`) or a
    needle depth × length sweep (`niah`), with batched greedy decoding. MODEL is a local Hugging Face model
    directory (longforge or any transformers causal LM) or a built-in model name. Writes results.json,
    results.md (task × length table, average, effective length at RULER's 85.6 threshold), predictions.jsonl and
    PNG plots into --out. Nothing is downloaded: the essay haystack is the Python documentation and qa_1/qa_2 use
    a synthetic QA set unless --qa-squad / --qa-hotpotqa give the real files."""
    from rich.console import Console

    config = config_from_args(args).resolved()  # every user error surfaces here, before the model loads
    console = Console(stderr=True)
    what = "depths " + ",".join(f"{d:g}" for d in config.depths) if config.suite == "niah" else ",".join(config.tasks)
    console.print(
        f"[bold]longforge eval[/bold] {config.model}: {config.suite} ({what}) at "
        f"{','.join(str(n) for n in config.lengths)} tokens, {config.samples} sample(s) per cell"
    )
    results = run_eval(config)
    console.print(
        f"average {results['overall_average']:.1f}; effective length {results['effective_length'] or 'none'}; "
        f"report in {config.out}"
    )
    print(markdown_table(results), end="")
    return 0


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``eval`` on a ``longforge`` subparsers object."""
    defaults = "; ".join(
        f"{suite}: {','.join(str(n) for n in lengths)} x {samples}"
        for suite, (lengths, samples) in SUITE_DEFAULTS.items()
    )
    p = subparsers.add_parser(
        "eval",
        help="long-context evaluation: RULER, ruler-lite, NIAH heatmap",
        description=cmd_eval.__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", help="local HF causal-LM directory or built-in model name")
    p.add_argument("--suite", choices=sorted(SUITE_DEFAULTS), default="ruler")
    p.add_argument("--lengths", default=None, help=f"comma-separated, e.g. 4k,8k,16384 (defaults: {defaults})")
    p.add_argument("--samples", type=int, default=None, help="samples per (task, length) cell (suite default)")
    p.add_argument("--tasks", default=None, help="comma-separated RULER tasks instead of the whole suite")
    p.add_argument("--depths", default=None, help="niah: needle depths in percent, e.g. 0,25,50,75,100")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--chat-template", action="store_true", help="wrap prompts in the tokenizer's chat template")
    p.add_argument("--qa-squad", default=None, help="SQuAD v2.0 dev JSON for qa_1 (default: synthetic)")
    p.add_argument("--qa-hotpotqa", default=None, help="HotpotQA dev distractor JSON for qa_2 (default: synthetic)")
    p.add_argument("--out", required=True, help="report folder (created; files are replaced atomically)")
    p.set_defaults(func=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m longforge.eval.cli MODEL ...`` (the same as ``longforge eval MODEL ...``)."""
    from ..cli import main as cli_main  # the one entry point: same parsing and error convention

    return cli_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
