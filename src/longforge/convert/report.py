"""The conversion report: ``report.json`` (everything), ``report.md`` (tables) and three PNGs — RULER by length
(teacher vs hybrid), the stage loss curves, and the layer-selection scores."""

from __future__ import annotations

import json
from pathlib import Path

from ..eval.report import _figure_png as _png
from ..eval.report import length_label as _label
from ..utils.io import atomic_write_bytes


def plot_ruler(report: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = report["ruler"]
    lengths = r["lengths"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for who, style in (("teacher", "o--"), ("hybrid", "s-")):
        ax.plot(lengths, [r[who]["average"][str(n)] for n in lengths], style, lw=2, label=who)
    ax.axvline(report["train_length"], color="gray", ls=":", lw=1, label="training length")
    if len(lengths) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [_label(n) for n in lengths])
    ax.set_ylim(-2, 102)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(f"RULER average over {len(r['tasks'])} tasks")
    ax.set_title(f"{report['recipe']} hybrid vs its teacher")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def plot_losses(report: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = report["stages"]
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(4.2 * max(1, len(stages)), 3.6), squeeze=False)
    titles = {"1": "stage 1: alignment MSE", "2": "stage 2: KL(teacher ‖ hybrid)", "3": "stage 3: CE"}
    for ax, (name, info) in zip(axes[0], sorted(stages.items())):
        steps = [h[0] for h in info["history"]]
        ax.plot(steps, [h[1] for h in info["history"]], lw=1.2)
        ax.set_title(f"{titles.get(name, name)}\n{info['tokens']:,} tokens at {info['seq_len']}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    return _png(fig)


def plot_selection(report: dict) -> bytes | None:
    sel = report.get("selection") or {}
    if "scores" not in sel:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(sel["scores"])
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * n + 2), 3.4))
    colors = ["tab:red" if i in sel["keep"] else "tab:blue" for i in range(n)]
    ax.bar(range(n), sel["scores"], color=colors)
    ax.set_xticks(range(n))
    ax.set_xlabel("layer (red: kept as attention)")
    ax.set_ylabel("score = min(50, (N − R) / ΔC)" if sel.get("nope_retrieval") else "score = min(50, ΔR / ΔC)")
    ax.set_title(f"layer selection ({sel.get('mode', 'halo')} mode)")
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def markdown(report: dict) -> str:
    r = report["ruler"]
    lines = [
        f"# Conversion report: {report['teacher']} → {report['recipe']} hybrid",
        "",
        f"- layers: `{''.join('A' if t != 'lightning_attention' else 'L' for t in report['layer_types'])}` "
        f"(A = {'InfLLM-V2 sparse' if report['recipe'] == 'sala' else 'full'} NoPE attention, L = Lightning); "
        f"kept attention layers {report['kept_attention_layers']}",
        f"- attention-logit scaling: `{report['attn_logit_scaling']}`",
        f"- conversion tokens: {report['conversion_tokens']:,}"
        + (
            f" = {100 * report['conversion_token_fraction']:.2f} % of the teacher's "
            f"{report['teacher_training_tokens']:,}"
            if report.get("conversion_token_fraction") is not None
            else ""
        ),
        "",
        "| stage | tokens | steps | seq len | seconds | final loss |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in sorted(report["stages"].items()):
        lines.append(
            f"| {name} | {s['tokens']:,} | {s['steps']} | {s['seq_len']} | {s['seconds']} | {s['final_loss']} |"
        )
    hl = report["heldout_loss"]
    lines += [
        "",
        f"Held-out loss at {hl['seq_len']} tokens (nats/token): teacher {hl['teacher']:.4f}, hybrid {hl['hybrid']:.4f} "
        f"({100 * (hl['hybrid'] / hl['teacher'] - 1):+.2f} %).",
    ]
    if r["lengths"]:
        lines += [
            "",
            f"RULER ({', '.join(r['tasks'])}; {r['samples']} samples per task and length), average:",
            "",
            "| model | " + " | ".join(_label(n) for n in r["lengths"]) + " |",
            "|---|" + "---|" * len(r["lengths"]),
        ]
        for who in ("teacher", "hybrid"):
            lines.append(f"| {who} | " + " | ".join(f"{r[who]['average'][str(n)]:.1f}" for n in r["lengths"]) + " |")
    else:
        lines += ["", "RULER: not run in this report (report.samples = 0); `longforge eval` measures it."]
    sel = report.get("selection") or {}
    if "scores" in sel:
        nope = sel.get("nope_retrieval")
        lines += [
            "",
            f"Layer selection, `{sel.get('mode', 'halo')}` mode (R = RULER {', '.join(sel['tasks'])} at {sel['length']}"
            " with only that layer converted"
            + ("; N = the same with only that layer's attention made NoPE; score = min(50, (N − R) / ΔC)" if nope else "")
            + f"; C = −held-out loss; teacher R {sel['teacher_retrieval']:.1f}, C {sel['teacher_general']:.4f}):",
            "",
            "| layer | R_i | " + ("N_i | " if nope else "") + "C_i | score | kept |",
            "|---|---|" + ("---|" if nope else "") + "---|---|---|",
        ]
        for i, (rr, cc, sc) in enumerate(zip(sel["retrieval"], sel["general"], sel["scores"])):
            n_col = f"{nope[i]:.1f} | " if nope else ""
            lines.append(f"| {i} | {rr:.1f} | {n_col}{cc:.4f} | {sc:.3g} | {'yes' if i in sel['keep'] else ''} |")
    hype = report.get("hype")
    if hype:
        lines += ["", f"HyPE sweep at {hype['length']} tokens ({', '.join(hype['tasks'])}):", "",
                  "| attn_logit_scaling | score |", "|---|---|"]  # fmt: skip
        lines += [f"| {h['attn_logit_scaling']} | {h['score']:.1f} |" for h in hype["sweep"]]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, report: dict) -> list[Path]:
    out = Path(out_dir)
    files = {
        "report.json": json.dumps(report, indent=2, default=str).encode(),
        "report.md": markdown(report).encode(),
        "report_losses.png": plot_losses(report),
    }
    if report["ruler"]["lengths"]:
        files["report_ruler.png"] = plot_ruler(report)
    selection = plot_selection(report)
    if selection is not None:
        files["report_selection.png"] = selection
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
    return [out / n for n in files]


__all__ = ["markdown", "write_report"]
