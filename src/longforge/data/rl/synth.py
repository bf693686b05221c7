"""``synth_rl``: the eight datasets in the paper's proportions, fitted to the policy's tokenizer, with a summary
table (markdown + JSON) and token-length histograms (PNG)."""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

from ...utils.io import atomic_write_text
from ...utils.progress import progress_bar
from .base import Generator
from .evidence import CrossEntity, KeyChain, LongDocQA, MultiQuery, WebSearch
from .fitting import LengthRange, TokenCounter
from .reasoning import LongMath
from .records import FAMILIES, RLRecord, write_records
from .retrieval import FuzzyNeedle, MultiNeedle
from .sources import SourceBundle, load_sources
from .world import World

__all__ = [
    "DATASETS",
    "GENERATORS",
    "PAPER_COUNTS",
    "build_generators",
    "load_tokenizer",
    "scaled_counts",
    "synth_rl",
    "world_for",
]

# Beyond Reward Engineering §1.2: 14,069 items
PAPER_COUNTS = {
    "FuzzyNeedle": 1500,
    "MultiNeedle": 1500,
    "CrossEntity": 3521,
    "WebSearch": 684,
    "MultiQuery": 226,
    "KeyChain": 654,
    "LongDocQA": 3422,
    "LongMath": 2562,
}
GENERATORS: dict[str, type[Generator]] = {
    g.name: g for g in (FuzzyNeedle, MultiNeedle, CrossEntity, WebSearch, MultiQuery, KeyChain, LongDocQA, LongMath)
}
DATASETS = tuple(PAPER_COUNTS)
assert set(DATASETS) == set(GENERATORS) == set(FAMILIES)


def load_tokenizer(name_or_path: str):
    """The policy's tokenizer: a built-in model name, a model / tokenizer directory, or a ``tokenizer.json``."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(name_or_path)
    if path.is_file() and path.suffix == ".json":
        return PreTrainedTokenizerFast(tokenizer_file=str(path))
    if not path.is_dir():
        from ...assets import BUILTIN_MODELS, asset_path

        if name_or_path not in BUILTIN_MODELS:
            raise ValueError(
                f"tokenizer {name_or_path!r} is neither a directory, a tokenizer.json nor a built-in model "
                f"({', '.join(BUILTIN_MODELS)})"
            )
        path = asset_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load a tokenizer from {path}: {e}") from e


def scaled_counts(scale: float, datasets: Sequence[str] | None = None) -> dict[str, int]:
    """The paper's item counts × ``scale`` (at least 1 item per dataset)."""
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    names = _check_datasets(datasets)
    return {d: max(1, round(PAPER_COUNTS[d] * scale)) for d in names}


def _check_datasets(datasets: Sequence[str] | None) -> list[str]:
    if not datasets:
        return list(DATASETS)
    unknown = [d for d in datasets if d not in GENERATORS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    return list(datasets)


def world_for(counter: TokenCounter, max_tokens: int, seed: int) -> World:
    """A world with enough pages to fill ``max_tokens`` about 1.5 times without repeating a page."""
    world = World(seed)
    ids = list(world.entities)
    sample = ids[:: max(1, len(ids) // 60)]
    per_page = statistics.mean(counter.count(world.page(e)) + 1 for e in sample)
    size = 1.5 * max_tokens / (per_page * len(ids))
    return world if size <= 1 else World(seed, size=size)


def build_generators(
    tokenizer,
    max_tokens: int = 65536,
    min_tokens: int = 0,
    seed: int = 0,
    sources: SourceBundle | None = None,
    datasets: Sequence[str] | None = None,
    world: World | None = None,
) -> dict[str, Generator]:
    """One generator per dataset, each capped at min(max_tokens, its paper bucket: 32K FuzzyNeedle, else 64K)."""
    counter = tokenizer if isinstance(tokenizer, TokenCounter) else TokenCounter(tokenizer)
    world = world or world_for(counter, max_tokens, seed)
    out = {}
    for name in _check_datasets(datasets):
        cls = GENERATORS[name]
        cap = min(max_tokens, cls.default_max_tokens)
        out[name] = cls(counter, LengthRange(min(min_tokens, cap), cap), world=world, sources=sources, seed=seed)
    return out


def _stats(records: list[RLRecord]) -> dict:
    tokens = [r.context_tokens for r in records]
    return {
        "items": len(records),
        "tokens_min": min(tokens),
        "tokens_median": int(statistics.median(tokens)),
        "tokens_mean": round(statistics.mean(tokens), 1),
        "tokens_max": max(tokens),
    }


def _markdown(summary: dict) -> str:
    lines = [
        "# Long-context RL data (Beyond Reward Engineering recipe)",
        "",
        f"source: `{summary['source']}` · tokenizer: `{summary['tokenizer']}` · seed {summary['seed']} · "
        f"scale {summary['scale']} · tokens ≤ {summary['max_tokens']:,}",
        "",
        "| family | dataset | items | paper items | source | reward | length range | min | median | mean | max |",
        "|---|---|---:|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for name, row in summary["datasets"].items():
        lines.append(
            f"| {row['family']} | {name} | {row['items']:,} | {PAPER_COUNTS[name]:,} | {row['source']} | "
            f"{row['reward_type']} | {row['min_range']:,}–{row['max_range']:,} | {row['tokens_min']:,} | "
            f"{row['tokens_median']:,} | {row['tokens_mean']:,.0f} | {row['tokens_max']:,} |"
        )
    total = sum(r["items"] for r in summary["datasets"].values())
    lines += ["", f"{total:,} items in all; generated in {summary['seconds']:.1f} s.", ""]
    return "\n".join(lines)


def plot_lengths(records_by_dataset: dict[str, list[RLRecord]], path: str | os.PathLike, title: str = "") -> bool:
    """Token-length histograms, one panel per dataset; False (with a warning) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: no length histograms (pip install matplotlib)", stacklevel=2)
        return False
    names = list(records_by_dataset)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        tokens = [r.context_tokens for r in records_by_dataset[name]]
        ax.hist(tokens, bins=min(30, max(5, len(tokens) // 3)), color="#3b75af", edgecolor="white")
        ax.set_title(f"{name} (n={len(tokens)})", fontsize=10)
        ax.set_xlabel("prompt tokens")
        ax.set_ylabel("items")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    tmp = path.parent / f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}"
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return True


def synth_rl(
    out_dir: str | os.PathLike,
    tokenizer,
    source: str | Sequence[str] = "builtin",
    scale: float = 1.0,
    max_tokens: int = 65536,
    min_tokens: int = 0,
    seed: int = 0,
    datasets: Sequence[str] | None = None,
    fmt: str = "jsonl",
    tokenizer_name: str = "",
    progress: bool = True,
) -> dict:
    """Generate the datasets into ``out_dir`` (``<Dataset>.<fmt>``, ``summary.json``, ``summary.md``,
    ``lengths.png``) and return the summary. Every record is built before any file is written, so a failure leaves
    ``out_dir`` as it was."""
    if fmt not in ("jsonl", "parquet"):
        raise ValueError(f"format must be jsonl or parquet, got {fmt!r}")
    counts = scaled_counts(scale, datasets)
    LengthRange(min_tokens, max_tokens)  # validates
    if source == "builtin" or source == ["builtin"]:
        sources, source_label = SourceBundle(), "builtin"
    else:
        paths = [source] if isinstance(source, str) else list(source)
        sources, source_label = load_sources(paths), ", ".join(map(str, paths))
    t0 = time.time()
    gens = build_generators(tokenizer, max_tokens, min_tokens, seed, sources, list(counts))
    records: dict[str, list[RLRecord]] = {}
    with progress_bar("synth-rl", sum(counts.values()), progress) as advance:
        for name, n in counts.items():
            records[name] = []
            for i in range(n):
                records[name].append(gens[name].generate(i))
                advance(1, description=name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "source": source_label,
        "tokenizer": tokenizer_name or getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
        "seed": seed,
        "scale": scale,
        "max_tokens": max_tokens,
        "min_tokens": min_tokens,
        "format": fmt,
        "seconds": round(time.time() - t0, 2),
        "datasets": {},
    }
    for name, recs in records.items():
        g = gens[name]
        summary["datasets"][name] = {
            "family": g.family,
            "reward_type": g.reward_type,
            "source": g.source_name,
            "min_range": g.length.min_tokens,
            "max_range": g.length.max_tokens,
            "file": f"{name}.{fmt}",
            **_stats(recs),
        }
        write_records(recs, out / f"{name}.{fmt}")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.md", _markdown(summary))
    plot_lengths(records, out / "lengths.png", title=f"prompt tokens per item ({summary['tokenizer']})")
    return summary
