"""Small DECO replication (issue #7): dense vs DECO vs top-k MoE vs ReMoE at equal total parameters and tokens.

Each variant is one `longforge.train.Trainer` run (arch "hybrid", `mlp_types`/`moe_*` config fields) on the
built-in corpus; the runs go in parallel processes on one GPU (the models are small). Writes, under --out:
    deco_replication.json   resolved recipe, per-run histories, final eval loss and activation ratio ρ
    deco_replication.md     the summary table and the checks (ρ within 0.2 ± 0.02; DECO within 2 % of dense)
    deco_replication_loss.png, deco_replication_rho.png

Recipe (the RECIPE dict below; --size tiny shrinks everything for the CPU test):
  * every model: the hybrid model with full attention (the channel mixer is what is compared), the built-in
    corpus with stdlib prose and the embedded tiny-teacher's tokenizer (12k entries), hidden 384,
    6 layers, first layer dense (DECO's layout), seq 256,
    micro-batch 32, 8192 tokens/step, AdamW lr 1.5e-3 WSD, bf16 autocast on CUDA;
  * dense: SwiGLU 1024 wide — 1.18M FFN params/layer;
  * DECO: E = 21 experts × d = 64 + shared SwiGLU 128 + router (1.18M), NormSiLU, expert scale, entropy penalty;
  * ReMoE: the same experts, no scale, plain SiLU, load-balanced L1 penalty (m = 1.05 as DECO's ReMoE baseline);
  * top-k: 16 gated SwiGLU experts of width 56, top-3 (≈ 20 %), shared 128, switch balance loss.
Sparsity control: λ₀ = 1e-8. The paper's m = 1.002 needs ln(1e6)/ln(1.002) ≈ 6,900 steps before the penalty
even starts to bite (λ from 1e-8 to ~1e-2) — far beyond a few-minute run — so the short run uses m = 1.08
(λ reaches 1e-2 in ~180 steps) for DECO and ReMoE, and a fifth run, "deco_m1.002", keeps the paper's m to show
that ρ does not reach the target in this budget.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# (model.config overrides, controller multiplier) per variant; all share BASE.
RECIPE = {
    "base": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2,
                 layer_types="F", moe_target_activation=0.2, moe_lambda_init=1e-8),
    "train": dict(steps=900, seq_len=256, micro_batch_size=32, eval_every=50, eval_batches=4, lr=1.5e-3,
                  warmup_steps=50, prose_sources=["stdlib"]),
    "variants": {
        "dense": dict(mlp_types=None, intermediate_size=1024),
        "deco": dict(mlp_types="deco_moe", moe_num_experts=21, moe_expert_dim=64, moe_shared_dim=128,
                     moe_lambda_multiplier=1.08),
        "remoe": dict(mlp_types="remoe", moe_num_experts=21, moe_expert_dim=64, moe_shared_dim=128,
                      moe_lambda_multiplier=1.08),
        "topk": dict(mlp_types="topk_moe", moe_num_experts=16, moe_expert_dim=56, moe_shared_dim=128, moe_top_k=3),
        "deco_m1.002": dict(mlp_types="deco_moe", moe_num_experts=21, moe_expert_dim=64, moe_shared_dim=128,
                            moe_lambda_multiplier=1.002),
    },
}
TINY = {
    "base": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 layer_types="LF", moe_target_activation=0.2, moe_lambda_init=1e-8),
    "train": dict(steps=4, seq_len=32, micro_batch_size=2, eval_every=2, eval_batches=1, lr=1e-3, warmup_steps=1,
                  prose_sources=["rich"]),
    "variants": {
        "dense": dict(mlp_types=None, intermediate_size=64),
        "deco": dict(mlp_types="deco_moe", moe_num_experts=5, moe_expert_dim=8, moe_shared_dim=8,
                     moe_lambda_multiplier=1.08),
        "remoe": dict(mlp_types="remoe", moe_num_experts=5, moe_expert_dim=8, moe_shared_dim=8,
                      moe_lambda_multiplier=1.08),
        "topk": dict(mlp_types="topk_moe", moe_num_experts=4, moe_expert_dim=7, moe_shared_dim=8, moe_top_k=1),
    },
}


def ffn_params(cfg: dict) -> int:
    """FFN parameters of one MoE-capable layer (the first layer is dense in every variant)."""
    h = cfg["hidden_size"]
    kind = cfg.get("mlp_types")
    if kind is None:
        return 3 * h * cfg["intermediate_size"]
    E, d, s = cfg["moe_num_experts"], cfg["moe_expert_dim"], cfg["moe_shared_dim"]
    experts = (3 if kind == "topk_moe" else 2) * h * E * d
    return experts + 3 * h * s + E * h + (E if kind == "deco_moe" else 0)


def train_config(recipe: dict, name: str, out: Path, tokenizer: str | None, device: str):
    from longforge.train.config import TrainConfig

    t = recipe["train"]
    model_cfg = {**recipe["base"], **recipe["variants"][name]}
    if model_cfg.get("mlp_types") is None:
        model_cfg.pop("mlp_types")
    model_cfg.setdefault("intermediate_size", recipe["variants"]["dense"]["intermediate_size"])
    cfg = TrainConfig(out_dir=str(out / name), steps=t["steps"], seq_len=t["seq_len"],
                      micro_batch_size=t["micro_batch_size"], eval_every=t["eval_every"],
                      eval_batches=t["eval_batches"], save_every=0, log_every=t["eval_every"], tensorboard=False,
                      resume=False, device=device)
    cfg.model.arch = "hybrid"
    cfg.model.config = model_cfg
    cfg.model.tokenizer = tokenizer
    cfg.data.prose_sources = list(t["prose_sources"])
    cfg.data.probes = []
    cfg.optim.lr = t["lr"]
    cfg.optim.warmup_steps = t["warmup_steps"]
    cfg.optim.schedule = "wsd"
    return cfg


def run_variant(recipe: dict, name: str, out: Path, tokenizer: str, device: str, budget_s: float = 1e9) -> dict:
    """One variant with the Trainer's own step and evaluation (Trainer.fit's loop without checkpoints), stopping
    early — with a final evaluation and ``truncated: true`` — if ``budget_s`` runs out. The history is rewritten
    (atomically) after every evaluation, so a killed run still leaves its curve."""
    from longforge.train.trainer import Trainer
    from longforge.utils.io import atomic_write_text

    cfg = train_config(recipe, name, out, tokenizer, device)
    t0 = time.time()
    trainer = Trainer(cfg)
    params = sum(p.numel() for p in trainer.model.parameters())
    history, truncated = [], False

    def dump():
        run = {"variant": name, "params": params, "seconds": time.time() - t0, "tokens": trainer.tokens_seen,
               "steps": trainer.step, "truncated": truncated, "history": history}
        atomic_write_text(out / f"{name}.history.json", json.dumps(run))
        return run

    while trainer.step < cfg.steps:
        record = trainer.train_step()
        truncated = time.time() - t0 > budget_s and trainer.step < cfg.steps
        if trainer.step % cfg.eval_every == 0 or trainer.step == cfg.steps or truncated:
            record.update(trainer.evaluate())
            history.append(record)
            print(json.dumps({k: v for k, v in record.items() if not k.startswith("moe_rho_layer")}), flush=True)
            dump()
        else:
            history.append(record)
        if truncated:
            break
    return dump()


def worker(args) -> None:
    recipe = _recipe(args)
    budget = (args.deadline - time.time()) if args.deadline else args.timeout - 30
    run_variant(recipe, args.worker, Path(args.out), args.tokenizer, args.device, budget_s=budget)


def _recipe(args) -> dict:
    recipe = copy.deepcopy(TINY if args.size == "tiny" else RECIPE)
    if args.steps:
        recipe["train"]["steps"] = args.steps
    if args.variants:
        unknown = set(args.variants.split(",")) - set(recipe["variants"])
        if unknown:
            raise ValueError(f"--variants: unknown {sorted(unknown)}; allowed: {', '.join(recipe['variants'])}")
        recipe["variants"] = {k: v for k, v in recipe["variants"].items() if k in args.variants.split(",")}
    return recipe


def prepare_data(recipe: dict, out: Path, device: str) -> str:
    """The embedded tiny-teacher's tokenizer (12k entries; no tokenizer training), and one draw from the stream so
    the prose cache is filled once before the parallel runs read it. Returns the tokenizer directory."""
    from transformers import AutoTokenizer

    from longforge.assets import asset_path
    from longforge.train.trainer import build_stream

    tokenizer = str(asset_path("tiny-teacher"))
    cfg = train_config(recipe, "dense", out, tokenizer, device)
    build_stream(cfg, AutoTokenizer.from_pretrained(tokenizer, local_files_only=True), 0).next_batch(1, cfg.seq_len)
    return tokenizer


def summarize(recipe: dict, runs: dict, out: Path, wall: float) -> dict:
    from longforge.utils.io import atomic_write_text

    target = recipe["base"]["moe_target_activation"]
    summary = {"recipe": recipe, "wall_seconds": round(wall, 1), "runs": {}}
    for name, run in runs.items():
        hist = run["history"]
        evals = [(r["step"], r["eval_loss"]) for r in hist if "eval_loss" in r]
        rhos = [(r["step"], r["moe_rho"]) for r in hist if "moe_rho" in r]
        tail = [v for _, v in rhos[-max(1, len(rhos) // 10):]]
        summary["runs"][name] = {
            "params": run["params"], "tokens": run["tokens"], "seconds": round(run["seconds"], 1),
            "steps": run["steps"], "truncated": run["truncated"] or run["steps"] < recipe["train"]["steps"],
            "ffn_params_per_moe_layer": ffn_params({**recipe["base"], **recipe["variants"][name]}),
            "final_eval_loss": evals[-1][1] if evals else None,
            "final_rho": sum(tail) / len(tail) if tail else None,
            "final_lambda": next((r["moe_lambda"] for r in reversed(hist) if "moe_lambda" in r), None),
            "eval_curve": evals, "rho_curve": rhos,
        }
    s = summary["runs"]
    checks = {}
    checks["equal_tokens"] = len({r["tokens"] for r in s.values()}) == 1
    # Runs cut short by the time budget stop at different steps: compare the losses at the last evaluation step
    # that every run reached (equal tokens there), and say so.
    common = set.intersection(*[{st for st, _ in r["eval_curve"]} for r in s.values()]) if s else set()
    common_step = max(common) if common else None
    summary["common_eval_step"] = common_step
    for r in s.values():
        r["eval_loss_at_common_step"] = dict(r["eval_curve"]).get(common_step)
    if "deco" in s and "dense" in s and s["dense"]["final_eval_loss"]:
        exact = checks["equal_tokens"] and not any(r["truncated"] for r in s.values())
        key = "final_eval_loss" if exact else "eval_loss_at_common_step"
        if s["deco"][key] is not None and s["dense"][key]:
            gap = s["deco"][key] / s["dense"][key] - 1
            checks["deco_vs_dense_loss_gap"] = round(gap, 4)
            checks["deco_within_2pct"] = gap <= 0.02
            checks["loss_compared_at"] = "final" if exact else f"step {common_step} (last step every run reached)"
    for name in ("deco", "remoe", "deco_m1.002"):
        if name in s and s[name]["final_rho"] is not None:
            checks[f"{name}_rho_within_0.02"] = abs(s[name]["final_rho"] - target) <= 0.02
    summary["checks"] = checks
    atomic_write_text(out / "deco_replication.json", json.dumps(summary, indent=2) + "\n")
    lines = [
        "# DECO small replication — equal total parameters and tokens", "",
        f"wall {wall:.0f} s; steps {recipe['train']['steps']}, {recipe['train']['micro_batch_size']}×"
        f"{recipe['train']['seq_len']} tokens/step", "",
        f"| run | params | FFN params/MoE layer | tokens | final eval loss | eval loss @ step {common_step} "
        "| final ρ (last 10 %) | final λ | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in s.items():
        rho = f"{r['final_rho']:.3f}" if r["final_rho"] is not None else "—"
        lam = f"{r['final_lambda']:.2e}" if r["final_lambda"] is not None else "—"
        loss = f"{r['final_eval_loss']:.4f}" if r["final_eval_loss"] is not None else "—"
        at = r["eval_loss_at_common_step"]
        at = f"{at:.4f}" if at is not None else "—"
        lines.append(f"| {name} | {r['params']:,} | {r['ffn_params_per_moe_layer']:,} | {r['tokens']:,} | {loss} | "
                     f"{at} | {rho} | {lam} | {r['seconds']:.0f}{' (truncated)' if r['truncated'] else ''} |")
    lines += ["", "Checks (target ρ = 0.2 ± 0.02, DECO eval loss within 2 % of dense):", ""]
    lines += [f"- {k}: {v}" for k, v in checks.items()]
    atomic_write_text(out / "deco_replication.md", "\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return summary
    for key, fname, ylabel in (("eval_curve", "loss", "validation loss"), ("rho_curve", "rho", "activation ratio ρ")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, r in s.items():
            if r[key]:
                ax.plot(*zip(*r[key]), label=name)
        if key == "rho_curve":
            ax.axhline(target, color="gray", ls="--", lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend()
        fig.tight_layout()
        tmp = out / f".deco_replication_{fname}.tmp.png"
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(out / f"deco_replication_{fname}.png")
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/deco_replication")
    p.add_argument("--size", choices=["full", "tiny"], default="full")
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", default=None, help="comma-separated subset of the recipe's variants")
    p.add_argument("--timeout", type=float, default=420.0, help="seconds each run may take")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's step count (all runs)")
    p.add_argument("--in-process", action="store_true", help="run the variants one after another in this process")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--tokenizer", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    recipe = _recipe(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tokenizer = prepare_data(recipe, out, args.device)
    if args.in_process:
        runs = {name: run_variant(recipe, name, out, tokenizer, args.device) for name in recipe["variants"]}
        summary = summarize(recipe, runs, out, time.time() - t0)
        print(json.dumps({"checks": summary["checks"]}))
        return 0
    base_cmd = [sys.executable, os.path.abspath(__file__), "--out", str(out), "--size", args.size, "--device",
                args.device, "--tokenizer", tokenizer] + (["--steps", str(args.steps)] if args.steps else [])
    procs = {}
    for name in recipe["variants"]:
        log = open(out / f"{name}.log", "w")
        # every run stops (with a final evaluation) 25 s before the overall timeout
        deadline = t0 + args.timeout - 25
        proc = subprocess.Popen(base_cmd + ["--worker", name, "--deadline", str(deadline)], stdout=log,
                                stderr=subprocess.STDOUT)
        procs[name] = (proc, log)
    failed = []
    for name, (proc, log) in procs.items():
        try:
            rc = proc.wait(timeout=max(1.0, args.timeout - (time.time() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "timeout"
        log.close()
        if rc != 0:
            failed.append(f"{name} ({rc}; see {out / (name + '.log')})")
    runs = {}
    for name in recipe["variants"]:
        path = out / f"{name}.history.json"
        if path.is_file():
            runs[name] = json.loads(path.read_text())
    if not runs:
        raise SystemExit(f"no run finished: {failed}")
    summary = summarize(recipe, runs, out, time.time() - t0)
    finals = {k: {"loss": v["final_eval_loss"], "rho": v["final_rho"]} for k, v in summary["runs"].items()}
    print(json.dumps({"checks": summary["checks"], "failed": failed, **finals}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
