"""Ship a converted hybrid as the embedded `tiny-hybrid`: copy its HF directory into src/longforge/assets/tiny-hybrid
(bf16 shards ≤ 15 MB) and write its model card from the conversion report and a demo report.

    python scripts/hybrid_card.py --run runs/tiny-hybrid-cpu --demo runs/demo/demo.json \
        [--sweep benchmarks/results/convert_h200_20261128.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ASSET = ROOT / "src" / "longforge" / "assets" / "tiny-hybrid"


def _label(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def ship(run: Path) -> None:
    from longforge.models import HybridForCausalLM

    model = HybridForCausalLM.from_pretrained(run / "model", dtype=torch.bfloat16)
    tmp = ASSET.with_name(".tiny-hybrid.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, max_shard_size="15MB")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (run / "model" / name).is_file():
            shutil.copy(run / "model" / name, tmp / name)
    for name in ("report.json", "report.md", "report_losses.png", "report_ruler.png", "report_selection.png"):
        if (run / name).is_file():
            shutil.copy(run / name, tmp / f"conversion_{name}")
    shutil.rmtree(ASSET, ignore_errors=True)
    tmp.rename(ASSET)


def card(run: Path, demo: dict | None, sweep: dict | None) -> str:
    report = json.loads((run / "report.json").read_text())
    cfg = report["config"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    types = report["layer_types"]
    params = sum(p.numel() for p in __import__("longforge").pretrained("tiny-hybrid")[0].parameters())
    lines = [
        "# tiny-hybrid",
        "",
        "The embedded hybrid of longforge: the tiny teacher converted by HALO (`longforge convert`) with the "
        "`sala` recipe — InfLLM-V2 sparse NoPE attention on the kept layers, Lightning attention with RoPE on the "
        'others (HyPE), output gates on every mixer. Load it with `longforge.pretrained("tiny-hybrid")` or the '
        "name `tiny-hybrid` in any CLI verb.",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {params:,} |",
        f"| layers | `{''.join('S' if t == 'sparse_attention' else 'L' for t in types)}` (S sparse attention, "
        f"L Lightning); kept attention layers {report['kept_attention_layers']} |",
        f"| attention-logit scaling | `{report['attn_logit_scaling']}` |",
        f"| conversion tokens | {report['conversion_tokens']:,}"
        + (
            f" ({100 * report['conversion_token_fraction']:.2f} % of the teacher's "
            f"{report['teacher_training_tokens']:,})"
            if report.get("conversion_token_fraction")
            else ""
        )
        + " |",
        f"| held-out loss (nats/token, {report['heldout_loss']['seq_len']} tokens) | hybrid "
        f"{report['heldout_loss']['hybrid']:.4f}, teacher {report['heldout_loss']['teacher']:.4f} |",
        f"| commit | {commit.strip()} |",
        "",
        "| stage | tokens | steps | seq len | seconds | loss first → last |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in sorted(report["stages"].items()):
        h = s["history"]
        lines.append(f"| {name} | {s['tokens']:,} | {s['steps']} | {s['seq_len']} | {s['seconds']} | "
                     f"{h[0][1]:.3f} → {h[-1][1]:.3f} |")  # fmt: skip
    layers = cfg["select"]["layers"]
    chosen = f"`select.layers = {layers}`" if layers else f"`attn_ratio {cfg['attn_ratio']}`"
    lines += ["", f"Recipe: `recipes/convert/tiny-sala.yaml` with {chosen} and the other overrides recorded in "
              "`conversion_report.json` (`config`)."]  # fmt: skip
    ruler = report.get("ruler") or {}
    if ruler.get("lengths"):
        lengths = ruler["lengths"]
        lines += ["", f"Conversion report, RULER ({', '.join(ruler['tasks'])}; {ruler['samples']} samples per task and "
                  f"length, greedy), average — the teacher was trained at 4K:", "",
                  "| model | " + " | ".join(_label(n) for n in lengths) + " |",
                  "|---|" + "---|" * len(lengths)]  # fmt: skip
        for who in ("teacher", "hybrid"):
            avg = ruler[who]["average"]
            lines.append(f"| {who} | " + " | ".join(f"{avg[str(n)]:.1f}" for n in lengths) + " |")
    sel = report.get("selection") or {}
    if sel.get("retrieval"):
        nope = sel.get("nope_retrieval")
        lines += ["", f"Layer selection of this run (`{sel.get('mode', 'halo')}` mode: RULER {', '.join(sel['tasks'])} "
                  f"at {sel['length']} tokens, {sel['samples']} samples per task; R_i with only layer i converted to "
                  "Lightning"
                  + (", N_i with only layer i's attention made NoPE, score min(50, (N_i − R_i) / ΔC_i)" if nope else "")
                  + f"; C = −held-out loss; teacher R {sel['teacher_retrieval']:.1f}):", "",
                  "| layer | " + " | ".join(str(i) for i in range(len(sel["scores"]))) + " |",
                  "|---|" + "---|" * len(sel["scores"]),
                  "| R_i | " + " | ".join(f"{r:.1f}" for r in sel["retrieval"]) + " |"]  # fmt: skip
        if nope:
            lines.append("| N_i | " + " | ".join(f"{r:.1f}" for r in nope) + " |")
        lines.append("| score | " + " | ".join(f"{s:.3g}" for s in sel["scores"]) + " |")
    hype = report.get("hype") or {}
    if hype.get("sweep"):
        lines += ["", f"HyPE sweep at {hype['length']} tokens ({', '.join(hype['tasks'])}): "
                  + ", ".join(f"`{r['attn_logit_scaling']}` {r['score']:.1f}" for r in hype["sweep"])
                  + f" → `{hype['chosen']}`."]  # fmt: skip
    if sweep is not None:
        sel = sweep["runs"]["tiny-sala"]["selection"]
        lines += ["", "An earlier layer-selection sweep (HALO score, measured on an H200: RULER niah_single_2 / "
                  "niah_multikey_1 / niah_multivalue / vt at 2K with only layer i converted, C = −held-out loss):", "",
                  "| layer | " + " | ".join(str(i) for i in range(len(sel["scores"]))) + " |",
                  "|---|" + "---|" * len(sel["scores"]),
                  "| R_i | " + " | ".join(f"{r:.1f}" for r in sel["retrieval"]) + " |",
                  "| score | " + " | ".join(f"{s:.3g}" for s in sel["scores"]) + " |"]  # fmt: skip
    if demo is not None:
        names = list(demo["models"])
        lines += [
            "",
            f"`longforge demo` (RULER-lite, {demo['samples']} sample(s) per task and length, greedy, "
            f"{demo['device']}):",
            "",
            "| length | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for n in demo["lengths"]:
            lines.append(f"| {_label(n)} | " + " | ".join(f"{demo['models'][m]['ruler']['average'][str(n)]:.1f}"
                                                         for m in names) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--demo", type=Path, default=None)
    parser.add_argument("--sweep", type=Path, default=None)
    parser.add_argument("--card-only", action="store_true")
    parser.add_argument("--notes", type=Path, default=None, help="markdown appended to the card")
    args = parser.parse_args()
    if not args.card_only:
        ship(args.run)
    demo = json.loads(args.demo.read_text()) if args.demo else None
    sweep = json.loads(args.sweep.read_text()) if args.sweep else None
    text = card(args.run, demo, sweep)
    if args.notes:
        text += "\n" + args.notes.read_text()
    (ASSET / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
