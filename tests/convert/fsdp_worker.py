"""Run by tests/convert/test_fsdp.py under torchrun (2 CPU processes, gloo): ``fsdp_worker.py JOBS.json``.

JOBS.json is a list of ``{"config": {...ConvertConfig fields...}, "interrupt_stage2_at": n | null, "result": path}``;
the jobs run one after another in the same process group. ``interrupt_stage2_at: n`` raises KeyboardInterrupt in
the n-th stage-2 loss call on every rank (a deterministic interruption inside the stage, after a checkpoint); the
job then records ``{"interrupted": true, "completed": [...], "checkpoint": <stage 2's checkpoint state>}``.
Rank 0 writes each job's report (or that record) to ``result``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

import longforge.convert.pipeline as pipeline
from longforge.recipes import from_dict


def main() -> None:
    jobs = json.loads(open(sys.argv[1]).read())
    real = pipeline.distill_loss
    for job in jobs:
        cfg = from_dict(pipeline.ConvertConfig, job["config"])
        at = job.get("interrupt_stage2_at")
        calls = {"n": 0}

        def failing(*args, _at=at, _calls=calls, **kwargs):
            _calls["n"] += 1
            if _at is not None and _calls["n"] == _at:
                raise KeyboardInterrupt("simulated interruption")
            return real(*args, **kwargs)

        pipeline.distill_loss = failing
        try:
            result = pipeline.convert(cfg, progress=False)
        except KeyboardInterrupt:  # what the interruption left on disk, for the test to check
            out = Path(cfg.out_dir)
            result = {
                "interrupted": True,
                "completed": json.loads((out / "state.json").read_text())["completed"],
                "checkpoint": json.loads((out / "stage2" / "checkpoint" / "state.json").read_text()),
            }
        finally:
            pipeline.distill_loss = real
        if dist.get_rank() == 0:
            with open(job["result"], "w") as f:
                json.dump(result, f, default=str)
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
