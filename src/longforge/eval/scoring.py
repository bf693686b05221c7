"""RULER's scoring, exactly as NVIDIA/RULER defines it (``scripts/eval/synthetic/constants.py``, ``evaluate.py``).

    string_match_all  = mean_i ( Σ_r 1[r.lower() ∈ pred_i.lower()] / |refs_i| ) × 100     NIAH, VT, CWE, FWE
    string_match_part = mean_i ( max_r 1[r.lower() ∈ pred_i.lower()] ) × 100             QA

Both are on the 0–100 scale and rounded to two decimals, as RULER prints them. lm-evaluation-harness ships a
different ``string_match_part`` (the *fraction* of gold answers found, on a 0–1 scale); these are not that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# RULER README: the effective length is the longest length whose average exceeds Llama-2-7B's score at 4K.
EFFECTIVE_LENGTH_THRESHOLD = 85.6

_CONTROL_CHARS = re.compile(r"[\x00-\x1f]")


def postprocess_pred(pred: str) -> str:
    """RULER's ``postprocess_pred``: strip, map control characters (``\\x00``–``\\x1f``) to newlines, strip again."""
    return _CONTROL_CHARS.sub("\n", pred.strip()).strip()


def _check(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"preds and refs differ in length: {len(preds)} predictions, {len(refs)} reference lists")
    if not preds:
        raise ValueError("preds is empty: nothing to score")
    for ref in refs:
        if isinstance(ref, str) or not len(ref):
            raise ValueError(f"each entry of refs must be a non-empty list of strings, got {ref!r}")


def string_match_all(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Mean over samples of the fraction of gold strings found (case-insensitive substring) in the prediction, ×100."""
    _check(preds, refs)
    total = sum(sum(r.lower() in p.lower() for r in ref) / len(ref) for p, ref in zip(preds, refs))
    return round(total / len(preds) * 100, 2)


def string_match_part(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Mean over samples of 1 if *any* gold string is found (case-insensitive substring) in the prediction, ×100."""
    _check(preds, refs)
    total = sum(max(float(r.lower() in p.lower()) for r in ref) for p, ref in zip(preds, refs))
    return round(total / len(preds) * 100, 2)


METRICS = {"string_match_all": string_match_all, "string_match_part": string_match_part}


def effective_length(average_by_length: Mapping[int, float], threshold: float = EFFECTIVE_LENGTH_THRESHOLD):
    """The largest evaluated length whose average score exceeds ``threshold`` (RULER: 85.6), or None if none does."""
    passing = [length for length, score in average_by_length.items() if score > threshold]
    return max(passing) if passing else None
