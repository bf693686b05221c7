"""Compare conversions of one teacher run in different parallel modes (FSDP2 on N GPUs, replicas, one GPU): per stage,
tokens/s (whole stage and after its first step) and peak memory on every GPU. Reads each run's ``state.json`` (the
finished stages' records), writes ``results.json``, ``results.md`` and ``results.png`` to ``--out`` and prints the
table.

    python scripts/convert_fsdp_compare.py --out DIR fsdp=runs/a single=runs/b [replicate=runs/c]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STAGES = ("1", "2", "3")


def read_run(path: Path) -> dict:
    """The finished stages of a run (from state.json), with its log's last line when it stopped early."""
    state_path = path / "state.json"
    if not state_path.is_file():
        return {"stages": {}, "completed": [], "error": f"no state.json in {path} (the run did not start a stage)"}
    state = json.loads(state_path.read_text())
    stages = {}
    for name in STAGES:
        info = state.get("stages", {}).get(name)
        if info is None:
            continue
        history = info.get("history") or []
        peaks = info.get("peak_mem_gib_per_rank") or ([info["peak_mem_gib"]] if info.get("peak_mem_gib") else [])
        stages[name] = {
            "tokens": info["tokens"], "steps": info["steps"], "seq_len": info["seq_len"], "seconds": info["seconds"],
            "tokens_per_s": info.get("tokens_per_s"), "steady_tokens_per_s": info.get("steady_tokens_per_s"),
            "peak_mem_gib_per_gpu": peaks, "max_peak_mem_gib": max((p for p in peaks if p is not None), default=None),
            "parallel": info.get("parallel"), "world_size": info.get("world_size"),
            "first_loss": history[0][1] if history else None, "last_loss": history[-1][1] if history else None,
        }  # fmt: skip
    return {"stages": stages, "completed": state.get("completed", [])}


def compare(runs: dict[str, dict], baseline: str) -> dict:
    """Ratios against ``baseline`` per stage: peak memory per GPU (lower is better) and steady tokens/s."""
    out = {}
    base = runs.get(baseline, {}).get("stages", {})
    for name, run in runs.items():
        if name == baseline:
            continue
        rows = {}
        for stage, info in run["stages"].items():
            ref = base.get(stage)
            if ref is None:
                continue
            mem = (info["max_peak_mem_gib"] / ref["max_peak_mem_gib"]) if info["max_peak_mem_gib"] and \
                ref["max_peak_mem_gib"] else None  # fmt: skip
            speed_key = "steady_tokens_per_s" if info["steady_tokens_per_s"] and ref["steady_tokens_per_s"] else \
                "tokens_per_s"  # fmt: skip
            speed = (info[speed_key] / ref[speed_key]) if info[speed_key] and ref[speed_key] else None
            rows[stage] = {"peak_mem_per_gpu_ratio": mem, "tokens_per_s_ratio": speed, "speed_measure": speed_key}
        out[name] = rows
    return out


def _fmt(x, digits=1) -> str:
    if x is None:
        return "–"
    if isinstance(x, list):
        return " / ".join(_fmt(v, 2) for v in x)
    return f"{x:,.{digits}f}" if isinstance(x, float) else f"{x:,}"


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        f"# HALO conversion under torchrun: FSDP2 vs one GPU ({result['teacher']})",
        "",
        f"{env.get('gpu', 'unknown device')}, torch {env.get('torch')}, transformers {env.get('transformers')}. "
        "tokens/s counts all GPUs together; steady = after each stage's first step. Peak memory is "
        "`torch.cuda.max_memory_allocated` on each GPU during the stage.",
        "",
        "| run | stage | GPUs | tokens | steps | seq len | seconds | tokens/s | steady tokens/s | peak GiB per GPU "
        "| loss first → last |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in result["runs"].items():
        if run.get("error"):
            lines.append(f"| {name} | – | – | – | – | – | – | – | – | – | {run['error']} |")
        for stage, s in run["stages"].items():
            lines.append(
                f"| {name} | {stage} | {_fmt(s['world_size'])} | {_fmt(s['tokens'])} | {s['steps']} | {s['seq_len']} | "
                f"{_fmt(s['seconds'], 2)} | {_fmt(s['tokens_per_s'])} | {_fmt(s['steady_tokens_per_s'])} | "
                f"{_fmt(s['peak_mem_gib_per_gpu'])} | {_fmt(s['first_loss'], 3)} → {_fmt(s['last_loss'], 3)} |"
            )
    if any(result["ratios"].values()):
        lines += ["", f"Against `{result['baseline']}`:", "", "| run | stage | peak memory per GPU | tokens/s |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, rows in result["ratios"].items():
            for stage, r in rows.items():
                mem = f"{r['peak_mem_per_gpu_ratio']:.2f}×" if r["peak_mem_per_gpu_ratio"] else "–"
                speed = f"{r['tokens_per_s_ratio']:.2f}×" if r["tokens_per_s_ratio"] else "–"
                lines.append(f"| {name} | {stage} | {mem} | {speed} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, r in result["runs"].items() if r["stages"]]
    if not names:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        stages = result["runs"][name]["stages"]
        xs = [int(s) - 1 + i * width for s in stages]
        axes[0].bar(xs, [s["max_peak_mem_gib"] or 0 for s in stages.values()], width, label=name)
        axes[1].bar(xs, [s["steady_tokens_per_s"] or s["tokens_per_s"] or 0 for s in stages.values()], width,
                    label=name)  # fmt: skip
    for ax, title in zip(axes, ("peak memory per GPU (GiB)", "tokens/s, all GPUs (steady)")):
        ax.set_xticks([k + 0.4 - width / 2 for k in range(3)], [f"stage {s}" for s in STAGES])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    from io import BytesIO

    from longforge.utils.io import atomic_write_bytes

    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def environment() -> dict:
    env = {}
    try:
        import torch
        import transformers

        env.update(torch=torch.__version__, transformers=transformers.__version__)
        if torch.cuda.is_available():
            env["gpu"] = f"{torch.cuda.device_count()}× {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="name=run_dir (the first is the baseline unless --baseline)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--baseline", default=None)
    parser.add_argument("--teacher", default="teacher")
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"runs are name=dir, got {spec!r}")
        runs[name] = read_run(Path(path))
    baseline = args.baseline or next(iter(runs))
    if baseline not in runs:
        raise SystemExit(f"--baseline {baseline!r} is not one of {', '.join(runs)}")
    result = {"teacher": args.teacher, "baseline": baseline, "environment": environment(), "runs": runs,
              "ratios": compare(runs, baseline)}  # fmt: skip
    from longforge.utils.io import atomic_write_text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))
    text = markdown(result)
    atomic_write_text(out / "results.md", text)
    plot(result, out / "results.png")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
