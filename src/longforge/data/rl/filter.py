"""Difficulty filter (Beyond Reward Engineering §1.2): k rollouts of a policy per item, keep 0 < pass rate < 1 (items
the policy always or never solves give GRPO no signal), then an optional task-balanced subset.

An item *passes* a rollout when its reward reaches ``threshold`` (1.0: a full-recall / exact / judged-correct
answer). The paper filters with 4 rollouts of Qwen3-30B-A3B-Thinking-2507; any local policy works here.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ...utils.io import atomic_write_text
from ...utils.progress import progress_bar
from .records import RLRecord, read_records, write_records

__all__ = ["filter_rl", "pass_rates", "select_by_pass_rate", "task_balanced_sample"]


def task_balanced_sample(records: Sequence[RLRecord], total: int | None = None, seed: int = 0) -> list[RLRecord]:
    """An equal share per dataset (water-filling: a dataset with fewer items than its share gives the rest to the
    others), interleaved round-robin across datasets. ``total=None`` keeps every record, only interleaved."""
    rng = random.Random(seed)
    by: dict[str, list[RLRecord]] = {}
    for r in records:
        by.setdefault(r.dataset, []).append(r)
    for name in by:
        by[name] = rng.sample(by[name], len(by[name]))
    if total is not None:
        if total <= 0:
            raise ValueError(f"total must be > 0, got {total}")
        quota = dict.fromkeys(by, 0)
        left = min(total, len(records))
        while left > 0:
            open_sets = [d for d in sorted(by) if quota[d] < len(by[d])]
            share = max(1, left // len(open_sets))
            for d in open_sets:
                give = min(share, len(by[d]) - quota[d], left)
                quota[d] += give
                left -= give
                if left == 0:
                    break
        by = {d: by[d][: quota[d]] for d in by}
    out: list[RLRecord] = []
    queues = {d: list(v) for d, v in by.items()}
    while any(queues.values()):
        for d in sorted(queues):
            if queues[d]:
                out.append(queues[d].pop())
    return out


def select_by_pass_rate(
    records: Sequence[RLRecord], rewards: Sequence[Sequence[float]], threshold: float = 1.0
) -> tuple[list[RLRecord], dict]:
    """Keep records whose pass rate (share of rollouts with reward ≥ threshold) is strictly between 0 and 1; the
    kept records carry ``pass_rate`` and ``rollout_rewards`` in their metadata. Returns (kept, per-dataset stats)."""
    if len(records) != len(rewards):
        raise ValueError(f"{len(records)} records but {len(rewards)} reward lists")
    kept, stats = [], {}
    for record, rs in zip(records, rewards):
        if not rs:
            raise ValueError(f"record {record.id} has no rollout rewards")
        rate = sum(r >= threshold - 1e-9 for r in rs) / len(rs)
        s = stats.setdefault(record.dataset, {"items": 0, "all_correct": 0, "all_wrong": 0, "kept": 0, "rates": []})
        s["items"] += 1
        s["rates"].append(rate)
        if rate == 0:
            s["all_wrong"] += 1
        elif rate == 1:
            s["all_correct"] += 1
        else:
            s["kept"] += 1
            meta = dict(record.metadata, pass_rate=rate, rollout_rewards=[round(float(r), 4) for r in rs])
            kept.append(RLRecord(**{**record.to_dict(), "metadata": meta}))
    for s in stats.values():
        rates = s.pop("rates")
        s["mean_pass_rate"] = round(sum(rates) / len(rates), 4)
    return kept, stats


def pass_rates(
    records: Sequence[RLRecord],
    model,
    tokenizer,
    rollouts: int = 4,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_p: float = 1.0,
    batch_size: int = 16,
    reward: Callable[[RLRecord, str], float] | None = None,
    prompt_suffix: str = "",
    chat_template: bool = False,
    progress: bool = True,
) -> list[list[float]]:
    """``rollouts`` sampled completions per record (batched ``model.generate``), scored with the record's reward."""
    from ...train.grpo import encode_prompt, sample_completions
    from ...train.rewards import score

    if rollouts < 2:
        raise ValueError(f"rollouts must be >= 2 to tell hard from easy items, got {rollouts}")
    reward = reward or (lambda record, text: score(record, text))
    prompts = [encode_prompt(tokenizer, r.prompt + prompt_suffix, chat_template) for r in records]
    with progress_bar("filter-rl rollouts", len(records) * rollouts, progress) as advance:
        outs = sample_completions(
            model,
            tokenizer,
            prompts,
            rollouts,
            max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            batch_size=batch_size,
            on_batch=advance,
        )
    return [
        [float(reward(rec, tokenizer.decode(ids, skip_special_tokens=True))) for ids, _ in completions]
        for rec, completions in zip(records, outs)
    ]


def filter_rl(
    data: str | os.PathLike | Sequence[str | os.PathLike],
    policy: str,
    out_dir: str | os.PathLike,
    rollouts: int = 4,
    threshold: float = 1.0,
    total: int | None = None,
    seed: int = 0,
    fmt: str = "jsonl",
    judge=None,
    device: str | None = None,
    progress: bool = True,
    **rollout_kwargs,
) -> dict:
    """Filter RL records by a policy's pass rate and write the kept (optionally task-balanced) records per dataset,
    plus ``filter_summary.json`` / ``.md``. Nothing is written before every rollout is done."""
    import torch

    from ...models.pretrained import pretrained
    from ...train.rewards import score

    if fmt not in ("jsonl", "parquet"):
        raise ValueError(f"format must be jsonl or parquet, got {fmt!r}")
    records = read_records(data)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    model, tokenizer = pretrained(policy, device=device)
    t0 = time.time()
    rewards = pass_rates(
        records,
        model,
        tokenizer,
        rollouts,
        reward=lambda r, t: score(r, t, judge),
        progress=progress,
        **rollout_kwargs,
    )
    kept, stats = select_by_pass_rate(records, rewards, threshold)
    chosen = task_balanced_sample(kept, total, seed)
    for d in stats:
        stats[d]["written"] = sum(r.dataset == d for r in chosen)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by: dict[str, list[RLRecord]] = {}
    for r in chosen:
        by.setdefault(r.dataset, []).append(r)
    for name, recs in by.items():
        write_records(recs, out / f"{name}.{fmt}")
    summary = {
        "policy": str(policy),
        "rollouts": rollouts,
        "threshold": threshold,
        "total": total,
        "seed": seed,
        "seconds": round(time.time() - t0, 2),
        "items": len(records),
        "kept": len(kept),
        "written": len(chosen),
        "datasets": stats,
    }
    atomic_write_text(out / "filter_summary.json", json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# Difficulty filter: {rollouts} rollouts of `{policy}`, keep 0 < pass rate < 1",
        "",
        "| dataset | items | all correct | all wrong | kept | written | mean pass rate |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for d, s in stats.items():
        lines.append(
            f"| {d} | {s['items']} | {s['all_correct']} | {s['all_wrong']} | {s['kept']} | {s['written']} | "
            f"{s['mean_pass_rate']:.3f} |"
        )
    lines += ["", f"{len(kept)} of {len(records)} items kept, {len(chosen)} written.", ""]
    atomic_write_text(out / "filter_summary.md", "\n".join(lines))
    return summary
