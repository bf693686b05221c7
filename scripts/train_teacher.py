"""Train the tiny teacher within a wall-clock budget on whatever GPU this is.

    python scripts/train_teacher.py [--minutes 8.5] [--recipe recipes/train/tiny-teacher.yaml] [key=value ...]

The recipe's curriculum is written for a nominal number of steps. This script measures the step time at every
length of the curriculum (a few steps each on a throw-away trainer), then rescales `steps`, the curriculum and the
warm-up / eval / save intervals so that the run fits the budget, and trains. The resolved recipe (with the real
step counts) is saved with every checkpoint, so the run can be repeated exactly with `longforge train`.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch

from longforge.recipes import load_recipe
from longforge.train import TrainConfig, Trainer


def step_seconds(cfg: TrainConfig, lengths: list[int], steps: int = 4) -> dict[int, float]:
    probe = copy.deepcopy(cfg)
    probe.out_dir = cfg.out_dir + "-calibration"
    probe.resume = False
    trainer = Trainer(probe)
    times = {}
    for length in lengths:
        start = next(s for s, n in cfg.seq_len_schedule if n == length)
        trainer.step = start  # seq_len_at / micro_batch_at follow the step
        trainer.train_step()  # warm-up (allocations, autotuning)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.step = start
            trainer.train_step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        times[length] = (time.perf_counter() - t0) / steps
    del trainer
    return times


def fit_to_budget(cfg: TrainConfig, minutes: float, times: dict[int, float]) -> TrainConfig:
    sched = cfg.seq_len_schedule or [[0, cfg.seq_len]]
    bounds = [s for s, _ in sched] + [cfg.steps]
    spans = [(bounds[i + 1] - bounds[i], n) for i, (_, n) in enumerate(sched)]
    nominal = sum(count * times[n] for count, n in spans)
    # leave ~8% for evaluation and checkpoints
    scale = minutes * 60 * 0.92 / nominal
    out = copy.deepcopy(cfg)
    out.steps = max(10, int(cfg.steps * scale))
    out.seq_len_schedule = [[int(round(s * scale)), n] for s, n in sched]
    out.seq_len_schedule[0][0] = 0
    out.optim.warmup_steps = max(1, int(cfg.optim.warmup_steps * min(1.0, scale)))
    out.eval_every = max(1, int(cfg.eval_every * scale))
    out.save_every = max(1, int(cfg.save_every * scale))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="recipes/train/tiny-teacher.yaml")
    p.add_argument("--minutes", type=float, default=8.5)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    cfg = load_recipe(TrainConfig, args.recipe, args.overrides)
    lengths = sorted({n for _, n in cfg.seq_len_schedule} or {cfg.seq_len})
    t0 = time.time()
    times = step_seconds(cfg, lengths)
    print(
        "step seconds by length:", {n: round(t, 4) for n, t in times.items()}, f"(calibration {time.time() - t0:.0f}s)"
    )
    fitted = fit_to_budget(cfg, args.minutes, times)
    print(f"steps {cfg.steps} → {fitted.steps}; curriculum {fitted.seq_len_schedule}", flush=True)
    t1 = time.time()
    trainer = Trainer(fitted)
    trainer.fit(progress=False)
    last = trainer.history[-1]
    print(f"trained {trainer.step} steps, {trainer.tokens_seen:,} tokens in {(time.time() - t1) / 60:.2f} min; {last}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
