"""Evaluation reports: ``results.json`` (machine-readable), ``results.md`` (task × length table with the average and
RULER's effective length), ``predictions.jsonl`` (one line per sample) and PNG plots (score vs length per task;
the depth × length heatmap for NIAH). Every file is written atomically (temp file + ``os.replace``), and nothing is
written until all of it has been rendered, so a failure leaves no half-written report.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from ..utils.io import atomic_write_bytes
from .scoring import EFFECTIVE_LENGTH_THRESHOLD


def length_label(n: int) -> str:
    """4096 → '4K', 131072 → '128K', 1048576 → '1M', 3000 → '3000'."""
    n = int(n)
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10}K"
    return str(n)


def parse_lengths(text: str) -> list[int]:
    """'4k,8K,16384,1m' → [4096, 8192, 16384, 1048576] (K = 1024, M = 1024²), sorted and de-duplicated."""
    lengths = []
    for item in str(text).split(","):
        token = item.strip().lower()
        scale = {"k": 1 << 10, "m": 1 << 20}.get(token[-1:], 1) if token else 1
        digits = token[:-1] if scale > 1 else token
        if not digits.isdigit() or int(digits) == 0:
            raise ValueError(f"--lengths: {item.strip()!r} is not a length such as 4096, 4k or 1M")
        lengths.append(int(digits) * scale)
    return sorted(set(lengths))


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` atomically (``longforge.utils.io.atomic_write_bytes``) and return the path."""
    atomic_write_bytes(path, data.encode() if isinstance(data, str) else data)
    return Path(path)


def _fmt(score: float) -> str:
    return f"{score:.1f}"


def effective_length_text(results: dict) -> str:
    effective, lengths = results.get("effective_length"), results["lengths"]
    if effective is None:
        return f"none: no length reaches {EFFECTIVE_LENGTH_THRESHOLD} (shortest tested {length_label(lengths[0])})"
    if effective == max(lengths):
        return f"**≥ {length_label(effective)}** (the longest length tested passes)"
    return f"**{length_label(effective)}**"


def markdown_table(results: dict) -> str:
    """The human-readable report: a task × length table (a depth × length one for NIAH), averages, the effective
    length, and the provenance notes that make the numbers interpretable."""
    lengths = results["lengths"]
    heads = [length_label(n) for n in lengths]
    lines = [f"# longforge eval: {results.get('suite', 'ruler')}", ""]
    if results.get("model"):
        lines.append(f"Model: `{results['model']}`  ")
    lines.append(
        f"{len(results['tasks'])} task(s), {results['num_samples']} sample(s) per cell, seed {results['seed']}, "
        f"greedy decoding{', chat template' if results.get('chat_template') else ''}. Scores are RULER's (0–100)."
    )
    lines.append("")
    if "grid" in results:  # NIAH: depth × length
        lines.append("| needle depth | " + " | ".join(heads) + " |")
        lines.append("|---:|" + "---:|" * len(lengths))
        for depth in [f"{d:g}" for d in results["depths"]]:
            row = [_fmt(results["grid"][str(n)][depth]) for n in lengths]
            lines.append(f"| {depth}% | " + " | ".join(row) + " |")
    else:
        lines.append("| task | " + " | ".join(heads) + " | avg |")
        lines.append("|:--|" + "---:|" * (len(lengths) + 1))
        for task in results["tasks"]:
            row = [results["scores"][task][str(n)] for n in lengths]
            lines.append(f"| {task} | " + " | ".join(_fmt(s) for s in row) + f" | {_fmt(sum(row) / len(row))} |")
    average = [results["average"][str(n)] for n in lengths]
    avg_cell = "" if "grid" in results else f" | **{_fmt(results['overall_average'])}**"
    lines.append("| **average** | " + " | ".join(f"**{_fmt(s)}**" for s in average) + avg_cell + " |")
    lines += [
        "",
        f"Effective length (average > {EFFECTIVE_LENGTH_THRESHOLD}, RULER's threshold: Llama-2-7B at 4K): "
        + effective_length_text(results),
        "",
    ]
    haystack = results.get("haystack", {})
    notes = []
    if haystack:
        notes.append(
            f"Essay haystack: Python documentation (Python {haystack.get('python')}, sha256 "
            f"{haystack.get('sha256', '')[:12]}), not RULER's Paul Graham essays: essay-task scores are not "
            "comparable with published RULER numbers."
        )
    for task, source in sorted(results.get("qa_sources", {}).items()):
        if source.startswith("synthetic"):
            notes.append(f"{task}: synthetic QA set ({source}), not the real dataset: not comparable either.")
        else:
            notes.append(f"{task}: {source}.")
    if results.get("suite") == "ruler-lite":
        notes.append("ruler-lite averages 7 of RULER's 13 tasks: compare it only with other ruler-lite runs.")
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"


def _figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def plot_scores(results: dict) -> bytes:
    """Score vs length, one line per task, the average in bold and the 85.6 threshold dashed (PNG bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = results["lengths"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for task in results["tasks"]:
        ax.plot(lengths, [results["scores"][task][str(n)] for n in lengths], marker="o", lw=1, alpha=0.7, label=task)
    ax.plot(lengths, [results["average"][str(n)] for n in lengths], color="black", lw=3, marker="s", label="average")
    ax.axhline(EFFECTIVE_LENGTH_THRESHOLD, color="gray", ls="--", lw=1, label=f"threshold {EFFECTIVE_LENGTH_THRESHOLD}")
    if len(lengths) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [length_label(n) for n in lengths])
    ax.set_ylim(-2, 102)
    ax.set_xlabel("sequence length (tokens, input + generation)")
    ax.set_ylabel("score (0-100)")
    ax.set_title(f"{results.get('suite', 'ruler')}: score vs length")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: scores often sit at 0
    ax.grid(alpha=0.3)
    return _figure_png(fig)


def plot_niah_heatmap(results: dict) -> bytes:
    """Needle depth (rows) × length (columns) heatmap of the NIAH scores (PNG bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths, depths = results["lengths"], [f"{d:g}" for d in results["depths"]]
    grid = [[results["grid"][str(n)][d] for n in lengths] for d in depths]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(lengths), 1.2 + 0.45 * len(depths)))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    for row, values in enumerate(grid):
        for col, value in enumerate(values):
            ax.text(col, row, f"{value:.0f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(lengths)), [length_label(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d}%" for d in depths])
    ax.set_xlabel("sequence length")
    ax.set_ylabel("needle depth")
    ax.set_title("needle in a haystack")
    fig.colorbar(image, ax=ax, label="score")
    return _figure_png(fig)


def write_report(out_dir: str | Path, results: dict) -> list[Path]:
    """Render everything first, then write ``results.json``, ``results.md``, ``predictions.jsonl`` and the PNGs
    into ``out_dir`` (created if needed), each atomically. Returns the written paths."""
    out_dir = Path(out_dir)
    summary = {k: v for k, v in results.items() if k != "predictions"}
    files = {
        "results.json": json.dumps(summary, indent=2) + "\n",
        "results.md": markdown_table(results),
        "predictions.jsonl": "".join(json.dumps(r) + "\n" for r in results.get("predictions", [])),
        "scores.png": plot_scores(results),
    }
    if "grid" in results:
        files["niah_heatmap.png"] = plot_niah_heatmap(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [atomic_write(out_dir / name, data) for name, data in files.items()]
