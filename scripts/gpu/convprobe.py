"""Quick retrieval probe of a converted hybrid (the conversion search of scripts/gpu/convsearch.sh): RULER on the
hybrid alone at a few HyPE scalings and lengths, written to JSON after every cell so a time limit loses nothing.

    python scripts/gpu/convprobe.py RUN_DIR --out probe.json [--lengths 4096,16384,8192] [--alphas 2000,500]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from longforge.eval.loading import load_tokenizer
from longforge.eval.ruler import evaluate
from longforge.models import HybridForCausalLM
from longforge.utils.io import atomic_write_text


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--out", required=True)
    p.add_argument("--lengths", default="4096,16384,8192")
    p.add_argument("--alphas", default="2000,500")
    p.add_argument("--tasks", default="niah_single_2,niah_multikey_1,niah_multivalue")
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=30)
    args = p.parse_args()
    run = Path(args.run)
    model_dir = next(d for d in (run / "model", run / "stage3" / "model", run / "stage2" / "model") if d.is_dir())
    model = HybridForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16).to("cuda" if torch.cuda.is_available() else "cpu").eval()
    tok = load_tokenizer(str(model_dir))
    result = {"run": run.name, "model": str(model_dir), "cells": []}
    state = run / "state.json"
    if state.is_file():
        result["state"] = json.loads(state.read_text())
    tasks = args.tasks.split(",")
    for alpha in args.alphas.split(","):
        value = None if alpha == "none" else f"hype {alpha}"
        model.set_attn_logit_scaling(value)
        for length in [int(x) for x in args.lengths.split(",")]:
            t0 = time.time()
            r = evaluate(model, tok, tasks, [length], args.samples, args.batch_size, seed=0)
            cell = {"alpha": value, "length": length, "score": r["overall_average"], "scores": r["scores"],
                    "seconds": round(time.time() - t0, 1)}  # fmt: skip
            result["cells"].append(cell)
            print(json.dumps({k: cell[k] for k in ("alpha", "length", "score", "seconds")}), flush=True)
            atomic_write_text(args.out, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
