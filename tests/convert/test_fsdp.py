"""HALO conversion under torchrun with FSDP2: two processes (CPU + gloo; or two GPUs) run stages 1, 2 and 3 of a tiny
random teacher, once with replicas and once sharded (interrupted inside stage 2, then resumed in a new run); both must
train the same way, and the model rank 0 saves must be the one it reported on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longforge.convert import ConvertConfig
from longforge.recipes import from_dict, to_dict

from .test_convert import tiny_config


def _torchrun(jobs: list[dict], tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    # --standalone: a free rendezvous port, so that concurrent runs on one host do not collide
    spec = tmp_path / f"{name}.json"
    spec.write_text(json.dumps(jobs))
    worker = Path(__file__).with_name("fsdp_worker.py")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = [*torchrun, str(worker), str(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        torch.cuda.device_count() < 2, reason="needs two CUDA devices")])],
)  # fmt: skip
def test_fsdp_conversion_matches_replicas_and_resumes(teacher_dir, corpus_file, tmp_path, device, monkeypatch):
    """On the CPU through gloo (fp32: the curves agree to float rounding); on two GPUs through NCCL (bf16 autocast and a
    bf16 teacher, as a real conversion runs there: the curves agree to bf16 rounding)."""
    loss_tol, weight_tol, eval_tol = (2e-3, 2e-3, 1e-5) if device == "cpu" else (3e-2, 3e-2, 1e-3)
    # The tiny teacher's 8-wide heads are below what the Triton / fused kernels take: the reference ops run on a GPU
    # too (this test is about the sharding, the collectives and the checkpoints, not the kernels).
    for op in ("LIGHTNING", "ATTENTION"):
        monkeypatch.setenv(f"LONGFORGE_BACKEND_{op}", "naive")
    from longforge.convert.pipeline import _Run
    from longforge.convert.stages import heldout_loss
    from longforge.models import HybridForCausalLM

    def job(out: str, parallel: str, interrupt=None) -> dict:
        cfg = tiny_config(teacher_dir, corpus_file, tmp_path / out, parallel=parallel, save_every=2, device=device)
        cfg.stage1.tokens = 2 * 4 * 64 * 4  # 4 steps of 4 rows × 64 tokens on each of 2 ranks
        cfg.stage2.tokens = 2 * 4 * 64 * 4  # 4 steps (a checkpoint at step 2)
        cfg.stage3.tokens = 2 * 2 * 128 * 2  # 2 steps, gradient checkpointing on
        return {"config": to_dict(cfg), "interrupt_stage2_at": interrupt, "result": str(tmp_path / f"{out}.json")}

    replicate, fsdp = job("replicate", "replicate"), job("fsdp", "fsdp")
    interrupted = {**fsdp, "interrupt_stage2_at": 3, "result": str(tmp_path / "interrupted.json")}
    _torchrun([replicate, interrupted, fsdp], tmp_path, "jobs")  # the third job resumes the second one's run
    stopped = json.loads(Path(interrupted["result"]).read_text())
    assert stopped["interrupted"] and stopped["completed"] == ["1", "select"]
    checkpoint = stopped["checkpoint"]
    assert checkpoint["step"] == 2 and len(checkpoint["streams"]) == 2  # every rank's data position
    assert checkpoint["streams"][0] != checkpoint["streams"][1]
    out = tmp_path / "fsdp"
    ref = json.loads(Path(replicate["result"]).read_text())
    report = json.loads(Path(fsdp["result"]).read_text())

    for stage in ("1", "2", "3"):
        ours, theirs = report["stages"][stage]["history"], ref["stages"][stage]["history"]
        assert [s for s, _ in ours] == list(range(1, len(theirs) + 1))  # stage 2: steps 1-2, then 3-4 resumed
        # FSDP2's reduce-scatter and the replicas' all-reduce average the same gradients: the same curve
        assert [loss for _, loss in ours] == pytest.approx([loss for _, loss in theirs], rel=loss_tol, abs=1e-4)
        assert report["stages"][stage]["tokens"] == ref["stages"][stage]["tokens"]
        assert (report["stages"][stage]["parallel"], ref["stages"][stage]["parallel"]) == ("fsdp", "replicate")
        assert report["stages"][stage]["world_size"] == 2
    for stage in ("1", "2"):
        losses = [loss for _, loss in report["stages"][stage]["history"]]
        assert losses[-1] < losses[0]  # the loss falls
    assert report["stages"]["1"]["tokens"] == 2 * 4 * 64 * 4

    # The final model, saved once by rank 0, loads and is the model rank 0 evaluated for the report.
    model = HybridForCausalLM.from_pretrained(out / "model", dtype=torch.float32).eval()
    twin = HybridForCausalLM.from_pretrained(tmp_path / "replicate" / "model", dtype=torch.float32).eval()
    for (name, p), q in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.allclose(p, q, atol=weight_tol, rtol=0), name
    cfg = from_dict(ConvertConfig, fsdp["config"])
    run = _Run(cfg, progress=False)
    batches = run.heldout_batches(report["heldout_loss"]["seq_len"], cfg.report.loss_batches)
    ours = heldout_loss(model.to(run.rt.device), batches, run.rt)
    assert ours == pytest.approx(report["heldout_loss"]["hybrid"], rel=eval_tol)
    assert not (out / "stage2" / "checkpoint").exists()


def test_student_bank_is_not_a_module_list():
    # torch 2.11's fully_shard refuses any nn.ModuleList root (the H200 run of this test's cuda case failed on
    # exactly that); the bank keeps ModuleList's indexing, length, iteration and "<i>.<name>" state-dict keys
    from torch import nn

    from longforge.convert.models import StudentBank

    bank = StudentBank(nn.Linear(2, 3) for _ in range(3))
    assert not isinstance(bank, (nn.ModuleList, nn.ModuleDict))
    assert len(bank) == 3 and bank[-1] is bank[2] and list(bank) == [bank[0], bank[1], bank[2]]
    assert list(bank.state_dict())[:2] == ["0.weight", "0.bias"]
    with pytest.raises(IndexError):
        bank[3]
