"""Merge the results of scripts/gpu/convsearch.sh rounds (each an unpacked results.tgz) into one JSON + markdown table.

    python scripts/convert_search_report.py --round 1=DIR1 --round 2=DIR2 --out benchmarks/results/convert_search_X
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

SEARCH = Path(__file__).resolve().parent / "gpu" / "convsearch.sh"


def variant_args() -> dict[str, str]:
    """name → its overrides, as listed in convsearch.sh ($MIX spelled out)."""
    text = SEARCH.read_text()
    mix = re.search(r"^MIX=(.*)$", text, re.M).group(1)
    mix = shlex.split(mix)[0] if mix else ""
    out = {}
    for line in text.splitlines():
        m = re.match(r'\s*"([\w.-]+)\|(.*)"\s*$', line)
        if m:
            out[m.group(1)] = m.group(2).replace("$MIX", mix).replace('\\"', '"')
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--round", action="append", required=True, help="N=DIR")
    p.add_argument("--out", required=True, help="path stem: writes STEM.json and STEM.md")
    args = p.parse_args()
    overrides = variant_args()
    rows = []
    for spec in args.round:
        rnd, folder = spec.split("=", 1)
        for probe in sorted(Path(folder).glob("*.probe.json")):
            name = probe.name[: -len(".probe.json")]
            report_path = probe.with_name(f"{name}.report.json")
            report = json.loads(report_path.read_text()) if report_path.is_file() else {}
            cells = json.loads(probe.read_text())["cells"]
            stages = report.get("stages", {})
            rows.append({
                "round": int(rnd), "name": name, "overrides": overrides.get(name, ""),
                "kept": report.get("kept_attention_layers"),
                "final_loss": {k: round(v["final_loss"], 3) for k, v in stages.items()},
                "stage_seconds": {k: v["seconds"] for k, v in stages.items()},
                "heldout_loss": (report.get("heldout_loss") or {}).get("hybrid"),
                "conversion_tokens": report.get("conversion_tokens"),
                "probe": [{k: c[k] for k in ("alpha", "length", "score", "scores")} for c in cells],
            })  # fmt: skip
    Path(args.out + ".json").write_text(json.dumps(rows, indent=1))
    lines = [
        "| round | variant | overrides of recipes/convert/tiny-sala.yaml (as it was then) | kept | stage 1/2/3 final "
        "loss (MSE/KL/CE) | HyPE | NIAH 4K | 8K | 16K | mean |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    table = []
    for r in rows:
        by_alpha: dict = {}
        for c in r["probe"]:
            by_alpha.setdefault(c["alpha"], {})[c["length"]] = c["score"]
        for alpha, by in by_alpha.items():
            if len(by) < 3:
                continue
            mean = sum(by.values()) / len(by)
            losses = " / ".join(str(r["final_loss"].get(s, "–")) for s in ("1", "2", "3"))
            table.append((r["round"], -mean, f"| {r['round']} | {r['name']} | `{r['overrides']}` | {r['kept']} | "
                          f"{losses} | {alpha} | {by[4096]:.1f} | {by[8192]:.1f} | {by[16384]:.1f} | {mean:.1f} |"))
    lines += [t[2] for t in sorted(table)]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
