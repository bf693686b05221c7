"""Issue 8's learning demonstration in one command: does GRPO raise the held-out reward of the tiny teacher?

    python scripts/rl_learning.py [--out runs/rl/learning-demo] [--minutes 8.5] [key=value ...]

1. synth: the recipe's datasets (FuzzyNeedle and KeyChain at ≤ 2K tokens) from the built-in world, with the policy's
   tokenizer — the GRPO set (seed 0; train / held-out split by record id) and a disjoint warm-up set (seed 1), built
   in parallel processes;
2. warm-up: answer-only SFT on the warm-up set (the tiny teacher is a base model that never saw this answer format
   and scores 0; GRPO has no signal without some right answers), stopped as soon as the greedy reward on a dev split
   of the warm-up set reaches `target_reward`, or when its share of the budget is spent;
3. GRPO (`longforge.train.grpo.GRPOTrainer`, the loop of `longforge rl`) for the time left, with the greedy held-out
   reward measured before the first step (on the warmed-up policy), every `eval_every` steps and at the end;
4. outputs in --out: `grpo_summary.json` (GRPO history + held-out evaluations + the warm-up and the before / after
   numbers), `rewards.png` (GRPO reward curve), `warmup.png`, `summary.md`, `recipe.resolved.yaml`,
   `warmup.resolved.yaml`, `data/heldout.jsonl`.

key=value overrides go to the GRPO recipe (e.g. `lr=1e-4 group_size=16`); `warmup.KEY=VALUE` to the warm-up recipe.
"""

from __future__ import annotations

import time

START = time.time()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

_TOKENIZER = None  # set before the worker processes fork


def _synth_chunk(job: tuple) -> list:
    from longforge.data.rl import build_generators

    dataset, max_tokens, seed, lo, hi = job
    gen = build_generators(_TOKENIZER, max_tokens, 0, seed, datasets=[dataset])[dataset]
    return [gen.generate(i) for i in range(lo, hi)]


def synth(tokenizer, datasets: list[str], max_tokens: int, seed: int, per_dataset: int, workers: int) -> list:
    """``per_dataset`` records of each dataset (items 0..n-1 of the generator of ``seed``: deterministic)."""
    global _TOKENIZER
    _TOKENIZER = tokenizer
    chunk = max(1, min(64, per_dataset // max(1, workers) + 1))
    jobs = [
        (d, max_tokens, seed, lo, min(per_dataset, lo + chunk)) for d in datasets for lo in range(0, per_dataset, chunk)
    ]
    if workers <= 1:
        parts = [_synth_chunk(j) for j in jobs]
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_synth_chunk, jobs)
    return [r for part in parts for r in part]


def _elapsed() -> float:
    return time.time() - START


def plot_warmup(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from longforge.utils.io import atomic_write_bytes

    steps = [h for h in history if "loss" in h]
    evals = [h for h in history if "eval_reward" in h]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot([h["step"] for h in steps], [h["loss"] for h in steps], "-", color="#9bbbd9", label="answer loss")
    ax.set_xlabel("warm-up step")
    ax.set_ylabel("answer loss (nats/token)")
    ax2 = ax.twinx()
    ax2.plot([h["step"] for h in evals], [h["eval_reward"] for h in evals], "o-", color="#d1603d", label="dev reward")
    ax2.set_ylabel("greedy dev reward")
    ax2.set_ylim(0, 1)
    ax.set_title("answer-format warm-up (SFT) before GRPO")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def markdown(summary: dict) -> str:
    d = summary["demonstration"]
    w = summary["warmup"]
    lines = [
        "# GRPO learning demonstration (issue 8)",
        "",
        f"Policy: `{d['policy']}` on {d['device']}; datasets {', '.join(d['datasets'])} at ≤ {d['max_tokens']} tokens "
        f"(built-in world); reward: {d['reward']}; greedy decoding on {d['eval_items']} held-out records.",
        "",
        "| stage | held-out mean reward | " + " | ".join(d["datasets"]) + " |",
        "|---|---:|" + "---:|" * len(d["datasets"]),
    ]
    for name, e in (
        ("base policy (no warm-up)", d.get("base")),
        ("after warm-up = before GRPO", d.get("before")),
        ("after GRPO", d.get("after")),
    ):
        if e:
            cells = " | ".join(
                f"{100 * e[f'eval_reward/{k}']:.1f}" if f"eval_reward/{k}" in e else "–" for k in d["datasets"]
            )
            lines.append(f"| {name} | {100 * e['eval_reward']:.1f} | {cells} |")
    if d.get("rise") is None:
        result = "**GRPO did not finish** (this summary was written after the warm-up; the run ended before GRPO's "
        result += "outputs were written)."
    else:
        result = f"**GRPO rise: {100 * d['rise']:+.1f} points** (target ≥ +10) in {d['grpo_steps']} steps / "
        result += f"{d['grpo_seconds']:.0f} s"
        if d.get("stopped_by_signal"):
            result += " (GRPO cut short by a signal)"
        result += f"; total wall time {d['total_seconds']:.0f} s."
    lines += [
        "",
        result,
        "",
        f"Warm-up: {w['steps']} answer-only SFT steps ({w['seconds']:.0f} s, {w['examples']} records of seed "
        f"{w['seed']}, lr {w['lr']}), stopped at dev reward {100 * w['final_dev_reward']:.1f} "
        f"({'target reached' if w['target_reached'] else 'budget spent'}; target {100 * w['target_reward']:.0f}).",
        "",
        "![GRPO reward](rewards.png)" if d.get("rise") is not None else "",
        "",
        "![warm-up](warmup.png)",
        "",
        f"Command: `{d['command']}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/rl/learning-demo", help="output directory")
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "rl" / "learning-demo.yaml"))
    p.add_argument("--warmup-recipe", default=str(ROOT / "recipes" / "rl" / "learning-warmup.yaml"))
    p.add_argument("--minutes", type=float, default=8.5, help="wall-clock budget of the whole run")
    p.add_argument("--warmup-share", type=float, default=0.4, help="at most this share of the time left for warm-up")
    p.add_argument("--warmup-items", type=int, default=2000, help="warm-up records per dataset")
    p.add_argument("--dev-items", type=int, default=16, help="of those, dev records per dataset (not trained on)")
    p.add_argument("--reserve", type=float, default=20.0, help="seconds kept for writing the outputs")
    p.add_argument("--workers", type=int, default=0, help="processes generating records (0: all cores, ≤ 16)")
    p.add_argument("--no-base-eval", action="store_true", help="skip scoring the policy before the warm-up")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value (GRPO recipe) or warmup.key=value (warm-up recipe)")
    args = p.parse_args(argv)
    budget = args.minutes * 60
    if budget <= 0 or not 0 < args.warmup_share < 1 or args.warmup_items <= args.dev_items or args.dev_items <= 0:
        raise ValueError("need --minutes > 0, 0 < --warmup-share < 1 and 0 < --dev-items < --warmup-items")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    import longforge  # noqa: F401  (registers the hybrid)
    from longforge.data.rl import task_balanced_sample, write_records
    from longforge.models.pretrained import pretrained
    from longforge.recipes import dump_json, dump_yaml, load_recipe
    from longforge.train.grpo import GRPOConfig, GRPOTrainer, WarmupConfig, sft_warmup, warmup_examples
    from longforge.utils.io import atomic_write_text

    grpo_over = [o for o in args.overrides if not o.startswith("warmup.")]
    warm_over = [o[len("warmup.") :] for o in args.overrides if o.startswith("warmup.")]
    cfg = load_recipe(GRPOConfig, args.recipe, grpo_over + [f"out_dir={args.out}"])
    wcfg = load_recipe(WarmupConfig, args.warmup_recipe, warm_over)
    if wcfg.seed == cfg.seed:
        raise ValueError(f"the warm-up records need another seed than the GRPO records (both {cfg.seed})")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    datasets = cfg.data.datasets or ["FuzzyNeedle", "MultiNeedle", "KeyChain"]
    progress = not args.no_progress

    # 1. data ---------------------------------------------------------------------------------------------------
    model, tokenizer = pretrained(cfg.policy.path, device="cpu", dtype=torch.float32)
    workers = args.workers or min(16, os.cpu_count() or 1)
    t0 = time.time()
    rl_records = synth(tokenizer, datasets, cfg.data.max_tokens, cfg.seed, cfg.data.items_per_dataset, workers)
    warm_records = synth(tokenizer, datasets, cfg.data.max_tokens, wcfg.seed, args.warmup_items, workers)
    synth_seconds = time.time() - t0
    digest = lambda r: hashlib.sha256(r.prompt.encode()).hexdigest()  # noqa: E731
    shared = {digest(r) for r in rl_records} & {digest(r) for r in warm_records}
    if shared:
        raise RuntimeError(f"{len(shared)} warm-up prompts also occur in the GRPO records: the seeds overlap")
    print(
        f"[rl] synth: {len(rl_records)} GRPO + {len(warm_records)} warm-up records in {synth_seconds:.1f} s "
        f"({workers} processes)",
        flush=True,
    )

    # 2. warm-up ------------------------------------------------------------------------------------------------
    trainer = GRPOTrainer(cfg, model=model, tokenizer=tokenizer, records=rl_records)
    write_records(trainer.eval_subset, out / "data" / "heldout.jsonl")
    dev, warm_train = [], []
    seen: dict[str, int] = {}
    for r in warm_records:  # the first dev_items of each dataset are the dev split
        seen[r.dataset] = seen.get(r.dataset, 0) + 1
        (dev if seen[r.dataset] <= args.dev_items else warm_train).append(r)
    dev = task_balanced_sample(dev, None, wcfg.seed)
    examples = warmup_examples(warm_train, tokenizer, trainer.prompt_ids, cfg.max_new_tokens - 1)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    base = None
    if not args.no_base_eval:
        base = trainer.evaluate()
        print(f"[rl] base policy held-out reward {base['eval_reward']:.3f}", flush=True)
    left = budget - _elapsed()
    wcfg.time_budget_s = max(1.0, args.warmup_share * left)
    dump_yaml(wcfg, out / "warmup.resolved.yaml")
    t0 = time.time()
    warm_history = sft_warmup(
        trainer.model,
        examples,
        wcfg,
        pad_id=int(pad),
        device=trainer.device,
        use_bf16=trainer.use_bf16,
        evaluate=lambda: trainer.evaluate(dev),
        progress=progress,
    )
    warm_seconds = time.time() - t0
    trainer.reset_reference()  # β > 0: KL to the warmed-up policy, not to the base model it started from
    warm_evals = [h for h in warm_history if "eval_reward" in h]
    warm_steps = max((h["step"] for h in warm_history if "loss" in h), default=0)
    reached = bool(wcfg.target_reward and warm_evals and warm_evals[-1]["eval_reward"] >= wcfg.target_reward)
    print(
        f"[rl] warm-up: {warm_steps} steps in {warm_seconds:.0f} s, dev reward {warm_evals[-1]['eval_reward']:.3f}"
        if warm_evals
        else "",
        flush=True,
    )

    warm_summary = {
        "seed": wcfg.seed,
        "examples": len(examples),
        "dev_records": len(dev),
        "steps": warm_steps,
        "seconds": round(warm_seconds, 1),
        "lr": wcfg.lr,
        "target_reward": wcfg.target_reward,
        "target_reached": reached,
        "final_dev_reward": warm_evals[-1]["eval_reward"] if warm_evals else None,
        "history": warm_history,
    }
    device_name = torch.cuda.get_device_name() if trainer.device.type == "cuda" else "cpu"

    def write_summary(before: dict | None, after: dict | None, grpo_seconds: float) -> dict:
        summary = {
            "steps": trainer.step,
            "train_records": len(trainer.train_records),
            "eval_records": len(trainer.eval_subset),
            "history": trainer.history,
            "eval": trainer.eval_history,
            "warmup": warm_summary,
            "demonstration": {
                "policy": cfg.policy.path,
                "device": device_name,
                "datasets": datasets,
                "max_tokens": cfg.data.max_tokens,
                "reward": ", ".join(f"{k}: {v}" for k, v in cfg.reward_overrides.items()) or "the records' reward_type",
                "eval_items": len(trainer.eval_subset),
                "base": base,
                "before": before,
                "after": after,
                "rise": after["eval_reward"] - before["eval_reward"] if before and after else None,
                "grpo_steps": trainer.step,
                "grpo_seconds": round(grpo_seconds, 1),
                "stopped_by_signal": bool(trainer.stop_requested),
                "synth_seconds": round(synth_seconds, 1),
                "total_seconds": round(_elapsed(), 1),
                "command": "python scripts/rl_learning.py " + " ".join(sys.argv[1:] if argv is None else argv),
            },
        }
        dump_json(summary, out / "grpo_summary.json")
        atomic_write_text(out / "summary.md", markdown(summary))
        return summary

    # what survives if the run is killed during GRPO: the warm-up's numbers and plot
    plot_warmup(warm_history, out / "warmup.png")
    write_summary(None, None, 0.0)

    # 3. GRPO ---------------------------------------------------------------------------------------------------
    # a SIGTERM (e.g. `timeout`) ends GRPO after the current step, then the final evaluation and outputs still run
    def _stop(signum, frame):
        trainer.stop_requested = True
        print(f"[rl] signal {signum}: stopping GRPO after the current step", file=sys.stderr, flush=True)

    def _log_step(r: dict) -> None:
        last = trainer.eval_history[-1] if trainer.eval_history else {}
        print(
            f"[rl] grpo step {r['step']}: reward {r['reward']:.3f}, groups {r['groups_kept']} kept / "
            f"{r['groups_dropped']} dropped, length {r['completion_length']:.0f}, truncated "
            f"{r['truncated_fraction']:.2f}, gen {r['gen_seconds']:.1f} s / step {r.get('step_seconds', 0):.1f} s"
            + (f", held-out {last['eval_reward']:.3f} (step {last['step']})" if last else ""),
            flush=True,
        )

    trainer.on_step = _log_step
    previous = signal.signal(signal.SIGTERM, _stop)
    cfg.time_budget_s = max(1.0, budget - _elapsed() - args.reserve)
    t0 = time.time()
    try:
        trainer.fit(progress=progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    grpo_seconds = time.time() - t0

    # 4. outputs ------------------------------------------------------------------------------------------------
    summary = write_summary(trainer.eval_history[0], trainer.eval_history[-1], grpo_seconds)
    before, after = summary["demonstration"]["before"], summary["demonstration"]["after"]
    d = summary["demonstration"]
    print(
        f"[rl] held-out reward: base {base['eval_reward'] if base else float('nan'):.3f} → after warm-up "
        f"{before['eval_reward']:.3f} → after GRPO {after['eval_reward']:.3f} ({100 * d['rise']:+.1f} points, "
        f"{trainer.step} GRPO steps); total {d['total_seconds']:.0f} s; outputs in {out}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
