"""Needle-in-a-haystack depth × length sweep (the heatmap popularised by G. Kamradt's NIAH test).

Each cell puts RULER's single needle ("One of the special magic numbers for <adjective-noun> is: <7 digits>.")
into the prose haystack at a fixed depth — the percentage of the haystack's sentences that precede it — and asks
for the number with RULER's niah_single_2 prompt, fitted to the length like every RULER sample. The score of a
cell is RULER's ``string_match_all`` over its samples. Cell (length, i-th depth) draws its samples with seed
``seed + 7919 * i``, so depths get different needles and every run with the same seed gets the same ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from .haystack import haystack_info
from .ruler import check_length, check_tokenizer, generate_samples, score_task
from .scoring import effective_length, postprocess_pred

NIAH_TASK = "niah_single_2"  # prose haystack, adjective-noun key, 7-digit value, 128 tokens to generate
DEFAULT_DEPTHS = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
_DEPTH_SEED_STRIDE = 7919


def check_depths(depths: Sequence[float]) -> list[float]:
    depths = [float(d) for d in depths]
    if not depths or any(not 0 <= d <= 100 for d in depths):
        raise ValueError(f"needle depths are percentages in [0, 100], got {depths}")
    return sorted(set(depths))


def generate_niah_samples(
    tokenizer, max_seq_length: int, depth: float, num_samples: int, seed: int = 0, *, chat_template: bool = False
) -> list[dict]:
    """``num_samples`` single-needle samples with the needle at ``depth`` percent of the prose haystack."""
    (depth,) = check_depths([depth])
    return generate_samples(
        NIAH_TASK, tokenizer, max_seq_length, num_samples, seed, chat_template=chat_template, needle_depths=[depth]
    )


def _label(depth: float) -> str:
    return f"{depth:g}"


def evaluate_niah(
    model,
    tokenizer,
    lengths: Sequence[int],
    depths: Sequence[float] = DEFAULT_DEPTHS,
    num_samples: int = 5,
    batch_size: int = 1,
    *,
    seed: int = 0,
    chat_template: bool = False,
    progress: bool = True,
) -> dict:
    """Score every (length, depth) cell. Returns a JSON-ready dict with ``grid`` {length: {depth: score}},
    ``average`` {length: mean over depths}, ``overall_average``, ``effective_length`` (85.6 rule on the
    per-length average), ``predictions`` and the settings."""
    from .generation import evaluation_progress, greedy_generate

    depths = check_depths(depths)
    lengths = sorted({int(n) for n in lengths})
    if not lengths or lengths[0] <= 0:
        raise ValueError(f"lengths must be positive integers, got {lengths}")
    check_tokenizer(tokenizer)
    check_length(NIAH_TASK, tokenizer, lengths[0], chat_template=chat_template)
    grid: dict[str, dict[str, float]] = {}
    records = []
    with evaluation_progress(len(lengths) * len(depths) * num_samples, enabled=progress) as bar:
        for length in lengths:
            grid[str(length)] = {}
            for i, depth in enumerate(depths):
                bar.describe(f"niah @ {length}, depth {_label(depth)}%")
                samples = generate_niah_samples(
                    tokenizer, length, depth, num_samples, seed + _DEPTH_SEED_STRIDE * i, chat_template=chat_template
                )
                predictions = greedy_generate(
                    model,
                    tokenizer,
                    [s["input"] + s["answer_prefix"] for s in samples],
                    max_new_tokens=samples[0]["tokens_to_generate"],
                    batch_size=batch_size,
                    add_special_tokens=not chat_template,
                    on_batch=bar.advance,
                )
                grid[str(length)][_label(depth)] = score_task(NIAH_TASK, predictions, samples)
                for sample, prediction in zip(samples, predictions):
                    records.append(
                        {
                            "task": NIAH_TASK,
                            "max_seq_length": length,
                            "depth": depth,
                            "index": sample["index"],
                            "length": sample["length"],
                            "outputs": sample["outputs"],
                            "pred": postprocess_pred(prediction),
                        }
                    )
    average = {n: round(sum(row.values()) / len(row), 2) for n, row in grid.items()}
    return {
        "tasks": [NIAH_TASK],
        "lengths": lengths,
        "depths": depths,
        "num_samples": num_samples,
        "seed": seed,
        "chat_template": chat_template,
        "metrics": {NIAH_TASK: "string_match_all"},
        "grid": grid,
        "scores": {NIAH_TASK: average},
        "average": average,
        "overall_average": round(sum(average.values()) / len(average), 2),
        "effective_length": effective_length({int(k): v for k, v in average.items()}),
        "haystack": haystack_info(),
        "predictions": records,
    }
