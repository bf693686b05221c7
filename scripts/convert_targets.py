"""Check a conversion report of the embedded tiny teacher against the HALO issue's targets, and pick the report
(of several) that meets the most; prints a table and, last, `chosen <run-name>`.

    python scripts/convert_targets.py runs/tiny-sala/report.json [runs/other/report.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NIAH = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
        "niah_multivalue", "niah_multiquery")  # fmt: skip


def niah_average(ruler: dict, who: str, length: int) -> float | None:
    scores = ruler[who]["scores"]
    values = [scores[t][str(length)] for t in NIAH if t in scores and str(length) in scores[t]]
    return sum(values) / len(values) if values else None


def targets(report: dict, teacher_length: int = 4096) -> list[tuple[str, bool, str]]:
    ruler, loss = report["ruler"], report["heldout_loss"]
    rows = []
    t, h = niah_average(ruler, "teacher", teacher_length), niah_average(ruler, "hybrid", teacher_length)
    if t is not None and h is not None:
        rows.append((f"NIAH avg at {teacher_length} >= 90% of teacher", h >= 0.9 * t, f"{h:.1f} vs {t:.1f}"))
    rows.append(("held-out loss <= teacher + 5%", loss["hybrid"] <= 1.05 * loss["teacher"],
                 f"{loss['hybrid']:.4f} vs {loss['teacher']:.4f}"))  # fmt: skip
    for mult in (2, 4):
        n = mult * teacher_length
        t, h = niah_average(ruler, "teacher", n), niah_average(ruler, "hybrid", n)
        if t is not None and h is not None:
            rows.append((f"NIAH avg at {n} beats teacher", h > t, f"{h:.1f} vs {t:.1f}"))
    frac = report.get("conversion_token_fraction")
    if frac is not None:
        rows.append(("conversion tokens <= 2% of teacher's", frac <= 0.02, f"{100 * frac:.2f}%"))
    return rows


def hybrid_niah_mean(report: dict) -> float:
    """The hybrid's NIAH average over every report length: the tie-break between runs meeting as many targets."""
    ruler = report["ruler"]
    values = [niah_average(ruler, "hybrid", n) for n in ruler.get("lengths", [])]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else -1.0


def main() -> None:
    best, best_key = None, None
    for path in sys.argv[1:]:
        p = Path(path)
        if not p.is_file():
            print(f"{p.parent.name}: no report")
            continue
        report = json.loads(p.read_text())
        rows = targets(report)
        met = sum(ok for _, ok, _ in rows)
        key = (met, hybrid_niah_mean(report))
        print(f"{p.parent.name}: {met}/{len(rows)} targets met; hybrid NIAH mean over lengths {key[1]:.1f}")
        for name, ok, value in rows:
            print(f"  [{'x' if ok else ' '}] {name}: {value}")
        if best_key is None or key > best_key:
            best, best_key = p.parent.name, key
    print(f"chosen {best}")


if __name__ == "__main__":
    main()
