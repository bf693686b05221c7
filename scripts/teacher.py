"""Package a trained run as the embedded tiny teacher, and write its model card.

    python scripts/teacher.py export RUN_DIR OUT_DIR      # bf16 safetensors shards ≤ 16 MB + tokenizer + meta
    python scripts/teacher.py card ASSET_DIR [--eval results.json] [--commit SHA]

`export` takes the run's latest checkpoint (written by `longforge train`), casts it to bf16, saves it sharded, and
copies the run's resolved recipe, training summary and a loss-curve PNG beside it. `card` writes README.md: recipe,
parameters, tokens seen, commit, held-out loss, RULER scores when an eval result is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch


def export(run_dir: Path, out_dir: Path, max_shard_size: str = "15MB") -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longforge.train.trainer import latest_checkpoint

    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise SystemExit(f"no checkpoint in {run_dir}")
    model = AutoModelForCausalLM.from_pretrained(ckpt / "model", local_files_only=True, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(ckpt / "model", local_files_only=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out_dir)
    for name in ("recipe.resolved.yaml", "train_summary.json"):
        if (run_dir / name).is_file():
            shutil.copy(run_dir / name, out_dir / name)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    try:
        plot_curve(summary["history"], out_dir / "loss_curve.png")
    except ImportError:  # matplotlib missing on this machine: `card` can draw it later
        print("matplotlib not installed: no loss_curve.png", file=sys.stderr)


def plot_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in history], [r["loss"] for r in history], lw=0.8, label="train (weighted)")
    ev = [r for r in history if "eval_loss" in r]
    if ev:
        ax.plot([r["step"] for r in ev], [r["eval_loss"] for r in ev], marker="o", label="held-out prose")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def card(asset_dir: Path, eval_path: Path | None, commit: str) -> None:
    import yaml

    summary = json.loads((asset_dir / "train_summary.json").read_text())
    recipe = yaml.safe_load((asset_dir / "recipe.resolved.yaml").read_text())
    config = json.loads((asset_dir / "config.json").read_text())
    history = summary["history"]
    n_params = _count_params(asset_dir)
    ev = [r for r in history if "eval_loss" in r]
    lines = [
        "# tiny-teacher",
        "",
        "The embedded default teacher of longforge: a transformers `Qwen3ForCausalLM` trained from scratch, offline, "
        "on longforge's built-in corpus (standard-library prose + RULER-style retrieval skills; see docs/corpus.md) "
        'by `recipes/train/tiny-teacher.yaml`. Load it with `longforge.pretrained("tiny-teacher")` or the name '
        "`tiny-teacher` in any CLI verb that takes a model.",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {n_params:,} |",
        f"| layers / hidden / heads (KV) / head dim | {config['num_hidden_layers']} / {config['hidden_size']} / "
        f"{config['num_attention_heads']} ({config['num_key_value_heads']}) / {config.get('head_dim')} |",
        f"| vocabulary | {config['vocab_size']} (byte-level BPE, digits split) |",
        f"| context trained | {max(s for _, s in recipe.get('seq_len_schedule') or [[0, recipe['seq_len']]])} tokens |",
        f"| steps / tokens seen | {summary['steps']:,} / {summary['tokens_seen']:,} |",
        f"| final held-out prose loss | {ev[-1]['eval_loss']:.4f} nats/token |" if ev else "| held-out loss | n/a |",
        "| weights | bf16 safetensors, shards ≤ 16 MB |",
        f"| commit | {commit} |",
        "",
        "![loss curve](loss_curve.png)",
        "",
    ]
    if eval_path is not None:
        results = json.loads(eval_path.read_text())
        scores = results["scores"]
        lines += [
            "## RULER (greedy, longforge's offline RULER suite, "
            f"{results.get('num_samples')} samples per task and length)",
            "",
            _ruler_table(results),
            "",
            "Essay haystack = Python documentation and synthetic QA sets (offline), so cwe / fwe / qa scores are not "
            "comparable with published RULER numbers; this teacher was trained for retrieval (NIAH, VT), not for "
            "word counting or reading comprehension, and scores ~0 there.",
            "",
            "Targets of the teacher (issue: `longforge train` and the embedded teacher):",
            "",
            "| target | required | measured |",
            "|---|---|---|",
        ]
        lengths = sorted({int(n) for t in scores for n in scores[t]})
        for task, need in (("niah_single_1", 95), ("niah_single_2", 85), ("niah_multikey_1", 70), ("vt", 60)):
            worst = min(scores[task][str(n)] for n in lengths)
            lines.append(f"| {task} at {', '.join(str(n) for n in lengths)} | ≥ {need} | {worst:.1f} (worst length) |")
        niah = [t for t in scores if t.startswith("niah_")]
        at4k = sum(scores[t]["4096"] for t in niah) / len(niah)
        lines += [f"| NIAH-task average at 4K ({len(niah)} tasks) | ≥ 75 | {at4k:.1f} |", ""]
    lines += ["## Recipe", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).strip(), "```", ""]
    (asset_dir / "README.md").write_text("\n".join(lines))


def _count_params(asset_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in asset_dir.glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():
                n = 1
                for s in h.get_slice(k).get_shape():
                    n *= s
                total += n
    return total


def _ruler_table(results: dict) -> str:
    scores = results.get("scores", results)
    tasks = sorted(scores)
    lengths = sorted({int(k) for t in tasks for k in scores[t]})
    out = ["| task | " + " | ".join(str(n) for n in lengths) + " |", "|---" * (len(lengths) + 1) + "|"]
    for t in tasks:
        out.append(f"| {t} | " + " | ".join(f"{scores[t].get(str(n), float('nan')):.1f}" for n in lengths) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("run_dir", type=Path)
    e.add_argument("out_dir", type=Path)
    c = sub.add_parser("card")
    c.add_argument("asset_dir", type=Path)
    c.add_argument("--eval", type=Path, default=None)
    c.add_argument("--commit", default="unknown")
    args = p.parse_args(argv)
    if args.cmd == "export":
        export(args.run_dir, args.out_dir)
    else:
        card(args.asset_dir, args.eval, args.commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
