"""What every `longforge bench` writes: ``<out>/<what>_<device>_<yyyymmdd>.{json,md,png}``, each file atomically.

The device tag is ``h200`` on an H200 (the name the results directory uses), else a short slug of the CUDA device
name, or ``cpu``."""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path

import torch

from ..utils.io import atomic_write_bytes, atomic_write_text


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    return dev


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def device_tag(device: torch.device) -> str:
    """``h200`` for an NVIDIA H200, a slug of any other CUDA device's name, ``cpu`` on CPU."""
    name = device_name(device)
    if "H200" in name:
        return "h200"
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "", name.lower().replace("nvidia", "")) or "cuda"


def results_stem(out_dir: str | Path, what: str, device: torch.device) -> Path:
    return Path(out_dir) / f"{what}_{device_tag(device)}_{_dt.date.today():%Y%m%d}"


def write_json(stem: Path, records: list[dict]) -> Path:
    path = stem.with_suffix(".json")
    atomic_write_text(path, json.dumps(records, indent=2) + "\n")
    return path


def write_markdown(stem: Path, lines: list[str]) -> Path:
    path = stem.with_suffix(".md")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def save_figure(fig, stem: Path) -> Path:
    """Save a matplotlib figure as ``<stem>.png`` atomically and close it."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    path = stem.with_suffix(".png")
    atomic_write_bytes(path, buf.getvalue())
    return path


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def length_label(n: int) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)}M"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}K"
    return str(n)


def parse_length(text: str) -> int:
    """``8K`` / ``1M`` / ``4096`` → tokens (K = 1024, M = 1024²)."""
    t = text.strip().upper()
    mult = {"K": 1024, "M": 1024 * 1024}.get(t[-1:], 1)
    digits = t[:-1] if mult > 1 else t
    if not digits.isdigit() or int(digits) <= 0:
        raise ValueError(f"a length must be a positive integer with an optional K or M suffix, got {text!r}")
    return int(digits) * mult


def environment() -> dict:
    return {"torch": torch.__version__, "cuda": torch.version.cuda}


def style_log_axes(axes, titles, xlabel: str) -> None:
    """Log-log axes with a title each, a grid, and a legend where something is labelled."""
    for ax, title in zip(axes, titles):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
