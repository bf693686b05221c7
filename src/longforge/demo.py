"""`longforge demo`: the main job on the embedded default — the tiny teacher against its HALO-converted hybrid.

Both are evaluated with RULER-lite from 1K up to 4× the teacher's training length; prefill time, decode tokens/s
and cache memory are measured at a few lengths; the results are printed side by side and written to ``--out``
(``demo.json``, ``demo.md``, ``demo_ruler.png``, ``demo_speed.png``). ``--convert`` first reruns the conversion
(``recipes/convert/tiny-sala.yaml``; a GPU is recommended) and adds the fresh hybrid as a third column.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .eval.report import _figure_png as _png
from .eval.report import length_label as _label
from .eval.ruler import RULER_LITE_TASKS

DEFAULT_LENGTHS = (1024, 4096)  # up to the teacher's training length; --lengths 1024,4096,16384 for 4x (slow on CPU)
DEFAULT_SPEED_LENGTHS = (1024, 4096)


def _speed(model, tokenizer, length: int, new_tokens: int, seed: int) -> dict:
    """Prefill (TTFT) and decode speed of one prompt of ``length`` random tokens, plus the cache it needs."""
    from .infer import InferenceEngine
    from .infer.memory import kv_cache_bytes

    g = torch.Generator().manual_seed(seed)
    vocab = min(model.config.vocab_size, len(tokenizer))
    ids = torch.randint(1, vocab, (1, length), generator=g).to(next(model.parameters()).device)
    engine = InferenceEngine(model, chunk_size=4096)
    result = engine.generate(ids, new_tokens, temperature=0.0)
    # decode as many tokens as asked even if EOS comes early: re-measure if it stopped at once
    return {
        "length": length,
        "ttft_s": round(result.ttft_s, 4),
        "decode_tokens_per_s": None if result.decode_tokens_per_s is None else round(result.decode_tokens_per_s, 2),
        "cache_bytes": int(kv_cache_bytes(model.config, length + new_tokens, torch.bfloat16)),
    }


def _plot_ruler(results: dict, lengths: list[int]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        ax.plot(lengths, [r["ruler"]["average"][str(n)] for n in lengths], "o-" if "hybrid" in name else "s--",
                lw=2, label=name)  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [_label(n) for n in lengths])
    ax.axvline(4096, color="gray", ls=":", lw=1, label="teacher's training length")
    ax.set_ylim(-2, 102)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("RULER-lite average")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def _plot_speed(results: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    keys = (("ttft_s", "prefill time (s)"), ("decode_tokens_per_s", "decode tokens/s"), ("cache_bytes", "cache (MiB)"))
    for ax, (key, title) in zip(axes, keys):
        for name, r in results.items():
            xs = [s["length"] for s in r["speed"]]
            ys = [(s[key] or 0) / (2**20 if key == "cache_bytes" else 1) for s in r["speed"]]
            ax.plot(xs, ys, "o-", label=name)
        ax.set_xscale("log", base=2)
        ax.set_title(title)
        ax.set_xlabel("prompt tokens")
        ax.grid(alpha=0.3)
    axes[0].legend()
    return _png(fig)


def _markdown(results: dict, lengths: list[int], tasks: list[str], samples: int, device: str) -> str:
    names = list(results)
    lines = [
        "# longforge demo: tiny teacher vs its HALO hybrid",
        "",
        f"RULER-lite ({', '.join(tasks)}), {samples} sample(s) per task and length, greedy, on {device}:",
        "",
        "| length | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for n in lengths:
        lines.append(f"| {_label(n)} | " + " | ".join(f"{results[m]['ruler']['average'][str(n)]:.1f}" for m in names)
                     + " |")  # fmt: skip
    lines += ["", "| prompt | " + " | ".join(f"{m}: prefill s / decode tok/s / cache" for m in names) + " |",
              "|---|" + "---|" * len(names)]  # fmt: skip
    speed_lengths = [s["length"] for s in results[names[0]]["speed"]]
    for i, n in enumerate(speed_lengths):
        cells = []
        for m in names:
            s = results[m]["speed"][i]
            cells.append(
                f"{s['ttft_s']:.2f} / {s['decode_tokens_per_s'] or 0:.1f} / {s['cache_bytes'] / 2**20:.1f} MiB"
            )
        lines.append(f"| {_label(n)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tiny_recipe(out_dir: Path):
    """The conversion recipe of the embedded hybrid, writing to ``out_dir``: ``recipes/convert/tiny-sala.yaml`` from
    a source checkout, else (an installed wheel has no ``recipes/``) the resolved config stored in the hybrid's own
    ``conversion_report.json`` — never the bare defaults, which would convert a different hybrid."""
    import json

    from .assets import ASSETS_DIR
    from .convert import ConvertConfig
    from .recipes import from_dict, load_recipe

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "convert" / "tiny-sala.yaml"
    if recipe.is_file():
        return load_recipe(ConvertConfig, recipe, [f"out_dir={out_dir}"])
    report = ASSETS_DIR / "tiny-hybrid" / "conversion_report.json"
    cfg = from_dict(ConvertConfig, json.loads(report.read_text())["config"])
    cfg.out_dir = str(out_dir)
    cfg.validate()
    return cfg


def run_demo(
    out: str = "runs/demo",
    lengths: list[int] | None = None,
    tasks: list[str] | None = None,
    samples: int = 1,
    speed_lengths: list[int] | None = None,
    new_tokens: int = 16,
    convert: bool = False,
    device: str = "auto",
    batch_size: int = 1,
    seed: int = 0,
    progress: bool = True,
    console=None,
) -> dict:
    from .eval.loading import load_model_and_tokenizer, resolve_device
    from .eval.ruler import evaluate
    from .utils.io import atomic_write_bytes

    device = resolve_device(device)
    lengths = sorted(lengths or DEFAULT_LENGTHS)
    tasks = list(tasks or RULER_LITE_TASKS)
    speed_lengths = sorted(speed_lengths or DEFAULT_SPEED_LENGTHS)
    out_dir = Path(out)
    models = {"tiny-teacher": "tiny-teacher", "tiny-hybrid": "tiny-hybrid"}
    if convert:
        from .convert import convert as run_convert

        cfg = tiny_recipe(out_dir / "convert")
        run_convert(cfg, progress=progress)
        models["fresh hybrid"] = str(out_dir / "convert" / "model")
    results = {}
    for name, where in models.items():
        start = time.time()
        model, tokenizer = load_model_and_tokenizer(where, device=device)
        if console is not None:
            console.print(f"[bold]{name}[/]: RULER-lite at {', '.join(_label(n) for n in lengths)} …")
        ruler = evaluate(model, tokenizer, tasks, lengths, samples, batch_size, seed=seed, progress=progress)
        speed = [_speed(model, tokenizer, n, new_tokens, seed) for n in speed_lengths]
        results[name] = {
            "ruler": {"average": ruler["average"], "scores": ruler["scores"]},
            "speed": speed,
            "layer_types": list(getattr(model.config, "layer_types", None) or []),
            "seconds": round(time.time() - start, 1),
        }
        del model
    report = {"lengths": lengths, "tasks": tasks, "samples": samples, "device": device, "models": results}
    md = _markdown(results, lengths, tasks, samples, device)
    files = {
        "demo.json": json.dumps(report, indent=2).encode(),
        "demo.md": md.encode(),
        "demo_ruler.png": _plot_ruler(results, lengths),
        "demo_speed.png": _plot_speed(results),
    }
    for name, data in files.items():
        atomic_write_bytes(out_dir / name, data)
    report["markdown"] = md
    return report
