"""`longforge rl RECIPE.yaml [key=value ...]`: outcome-based GRPO from a typed recipe (:class:`GRPOConfig`)."""

from __future__ import annotations

import argparse
import sys


def cmd_rl(args) -> int:
    """Train a policy with outcome-based GRPO on long-context RL records (Beyond Reward Engineering): G sampled
    completions per prompt, group-normalised advantages, clipped ratio, token-mean loss, no KL unless beta > 0,
    optional DAPO dynamic sampling and overlong penalty. The recipe is YAML; override any key with key=value
    (e.g. steps=10 data.max_tokens=2048 policy.path=DIR). Under torchrun each rank samples its own prompts.
    Writes TensorBoard logs, grpo_summary.json, rewards.png and the trained policy (model/) into out_dir."""
    from ..recipes import load_recipe
    from .grpo import GRPOConfig, train_grpo

    cfg = load_recipe(GRPOConfig, args.recipe, args.overrides)
    trainer = train_grpo(cfg, progress=not args.no_progress)
    if trainer.dist.is_main:
        last = trainer.history[-1] if trainer.history else {}
        evals = trainer.eval_history
        line = f"done: {trainer.step} steps, last train reward {last.get('reward', float('nan')):.3f}"
        if len(evals) >= 2:
            line += f"; held-out reward {evals[0]['eval_reward']:.3f} → {evals[-1]['eval_reward']:.3f}"
        print(f"{line}; outputs in {cfg.out_dir}")
    return 0


def add_rl_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``rl`` verb."""
    p = subparsers.add_parser("rl", help="outcome-based GRPO from a YAML recipe", description=cmd_rl.__doc__)
    p.add_argument("recipe", help="YAML recipe, e.g. recipes/rl/retrieval-keychain.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys for nested fields)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_rl)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m longforge.train.grpo_cli rl RECIPE ...`` (the same verb as ``longforge rl``)."""
    from ..cli import main as cli_main  # the one entry point: same parsing and error convention

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
