"""HALO conversion: transfer, the selection score, each stage on a tiny random teacher, resume, CLI, bad inputs."""

from __future__ import annotations

import json

import pytest
import torch

from longforge.convert import (
    ConvertConfig,
    HypeSection,
    ReportSection,
    SelectSection,
    StageSection,
    assemble_hybrid,
    build_student_bank,
    convert,
    kept_layers,
    parse_tokens,
    selection_scores,
)
from longforge.convert.models import load_teacher, one_layer_converted, one_layer_nope, student_config


def tiny_config(teacher_dir, corpus_file, out, **overrides) -> ConvertConfig:
    kwargs = dict(
        teacher=str(teacher_dir), recipe="hypenet", out_dir=str(out), data=[str(corpus_file)],
        stage1=StageSection(tokens=4 * 64 * 8, seq_len=64, batch_size=4, lr=3e-3, warmup_steps=1),
        stage2=StageSection(tokens=4 * 64 * 6, seq_len=64, batch_size=4, lr=1e-3, warmup_steps=1),
        stage3=StageSection(tokens=2 * 128 * 3, seq_len=128, batch_size=2, lr=1e-4, warmup_steps=0,
                            schedule="constant"),
        select=SelectSection(tasks=["niah_single_1"], length=320, samples=1, loss_batches=1, loss_seq_len=64,
                             layers=[1]),
        hype=HypeSection(alphas=[64.0], samples=1, length=320, tasks=["niah_single_1"]),
        report=ReportSection(samples=0, loss_batches=1),
        stages=["1", "select", "2", "3"], eval_batch_size=2, device="cpu", save_every=3,
    )  # fmt: skip
    kwargs.update(overrides)
    return ConvertConfig(**kwargs)


# ------------------------------------------------------------------------------------------------ pure pieces


def test_selection_score_on_hand_made_numbers():
    # R: retrieval when only layer i is converted; C: general quality (higher is better).
    retrieval = [90.0, 40.0, 88.0, 90.0]
    general = [-2.00, -2.05, -2.50, -2.00]
    scores = selection_scores(retrieval, general)
    # layer 1: ΔR = 50, ΔC = 0.05 → 1000, capped at 50; layer 2: ΔR = 2, ΔC = 0.5 → 4; layers 0/3: ΔR = 0 → 0.
    assert scores == pytest.approx([0.0, 50.0, 4.0, 0.0])
    assert kept_layers(scores, 0.25, "hypenet") == [1]
    assert kept_layers(scores, 0.5, "hypenet") == [1, 2]
    # sala keeps the first and last layers in any case and fills the rest by score.
    assert kept_layers([0, 9, 3, 1, 7, 2, 0, 0], 0.5, "sala") == [0, 1, 4, 7]
    assert kept_layers([0, 9, 3, 1, 7, 2, 0, 0], 0.25, "sala") == [0, 7]
    # capped ties go to the larger retrieval drop (the measured tiny-teacher sweep: layers 1, 5, 6 all at 50)
    scores = [29.9, 50.0, 18.1, 27.7, 0.0, 50.0, 50.0, 15.9]
    drop = [25.4, 57.1, 2.2, 1.5, 0.0, 86.9, 0.7, 2.2]
    assert kept_layers(scores, 0.25, "hypenet", drop) == [1, 5]
    assert kept_layers(scores, 0.375, "sala", drop) == [0, 5, 7]
    with pytest.raises(ValueError, match="one R and one C"):
        selection_scores([1.0], [1.0, 2.0])


def test_hype_selection_score_uses_nope_retrieval():
    # The tiny teacher's pattern: layer 1 is a previous-token layer (NoPE kills retrieval, N = 0), layer 5 the
    # retrieval layer (NoPE keeps it, N = 100; converting it to Lightning kills it, R = 1).
    retrieval = [70.0, 45.0, 99.0, 99.0, 99.0, 1.0, 98.0, 97.0]
    nope = [0.0, 0.0, 100.0, 95.0, 100.0, 100.0, 100.0, 100.0]
    general = [-2.1, -2.0, -2.0, -2.0, -2.0, -2.0, -2.0, -2.0]
    halo = selection_scores(retrieval, general)
    hype = selection_scores(retrieval, general, kept_retrieval=nope)
    assert halo[1] == 50.0 and hype[1] < 0  # HALO keeps the previous-token layer; HyPE mode converts it
    assert hype[5] == 50.0 and hype[0] < 0
    # (N − R) / (max C − C + 1e-10): layer 6: 2 / 1e-10 → capped
    assert hype[6] == 50.0 and hype[3] < 0
    drop = [n - r for n, r in zip(nope, retrieval)]
    assert kept_layers(halo, 0.5, "sala", [99.0 - r for r in retrieval]) == [0, 1, 5, 7]
    assert kept_layers(hype, 0.5, "sala", drop) == [0, 5, 6, 7]
    # The H200 sweep of this teacher (benchmarks/results/convert_search_h200_20261128.md): layers 2, 4 and 6 score 0
    # (N = R); the tie goes to the layer whose conversion costs the least general quality (the ΔR/ΔC limit).
    retrieval = [64.7, 34.0, 99.3, 97.3, 99.3, 1.3, 99.3, 97.3]
    nope = [0.7, 0.0, 99.3, 96.0, 99.3, 99.3, 99.3, 99.3]
    general = [-7.048, -5.995, -5.577, -5.478, -5.488, -5.569, -5.416, -5.547]
    scores = selection_scores(retrieval, general, kept_retrieval=nope)
    gains = [n - r for n, r in zip(nope, retrieval)]
    assert kept_layers(scores, 0.5, "sala", gains) == [0, 2, 5, 7]
    assert kept_layers(scores, 0.5, "sala", gains, [max(general) - c for c in general]) == [0, 5, 6, 7]
    with pytest.raises(ValueError, match="one N per layer"):
        selection_scores([1.0, 2.0], [1.0, 2.0], kept_retrieval=[1.0])


def test_one_layer_nope_drops_rope_of_that_layer_only(teacher_dir):
    teacher = load_teacher(str(teacher_dir), dtype=torch.float32).eval()
    ids = torch.randint(0, teacher.config.vocab_size, (1, 24))
    with torch.no_grad():
        base = teacher(ids).logits
        with one_layer_nope(teacher, 1) as probe:
            assert not probe.model.layers[1].mixer.use_rope and probe.model.layers[0].mixer.use_rope
            changed = probe(ids).logits
        again = teacher(ids).logits
    assert not torch.allclose(base, changed) and torch.equal(base, again)
    assert teacher.model.layers[1].mixer.use_rope


def test_parse_tokens():
    assert parse_tokens("600K") == 600_000 and parse_tokens("1.5M") == 1_500_000 and parse_tokens("42") == 42
    with pytest.raises(ValueError, match="token count"):
        parse_tokens("lots")


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("attn_ratio", 0.0, "attn_ratio"),
        ("attn_ratio", 1.0, "attn_ratio"),
        ("recipe", "mamba", "recipe"),
        ("stages", ["2", "1"], "pipeline order"),
        ("stages", ["4"], "subset"),
        ("hybrid", {"layer_types": "LLLL"}, "not overridable"),
        ("data", [], "empty list"),
        ("parallel", "ddp", "parallel must be one of fsdp, replicate"),
        ("select", SelectSection(mode="jet"), "select.mode must be one of hype, halo"),
    ],
)
def test_config_validation(field, value, match):
    cfg = ConvertConfig(**{field: value})
    with pytest.raises(ValueError, match=match):
        cfg.validate()


def test_transfer_and_neutral_gates(teacher_dir):
    teacher = load_teacher(str(teacher_dir), dtype=torch.float32).eval()
    ids = torch.randint(1, 12000, (2, 40), generator=torch.Generator().manual_seed(0))
    # Every layer kept as full attention (RoPE kept): the gated hybrid computes exactly the teacher's function.
    hybrid = assemble_hybrid(
        teacher,
        build_student_bank(teacher, student_config(teacher.config, ["lightning_attention"] * 4, "hypenet")),
        keep=[0, 1, 2, 3],
        recipe="hypenet",
        extra={"position_encoding": "rope"},
    )
    assert hybrid.config.attn_output_gate
    with torch.no_grad():
        assert torch.allclose(hybrid(ids).logits, teacher(ids).logits, atol=1e-5)
    # A Lightning student gets the attention's projections (keys/values repeated out to MHA) and a zero gate.
    bank = build_student_bank(teacher, student_config(teacher.config, ["lightning_attention"] * 4, "sala"))
    attn, student = teacher.model.layers[2].mixer, bank[2]
    assert torch.equal(student.q_proj.weight, attn.q_proj.weight)
    assert torch.equal(student.k_proj.weight[:8], attn.k_proj.weight[:8])  # head 0 of group 0
    assert torch.equal(student.k_proj.weight[8:16], attn.k_proj.weight[:8])  # head 1 shares kv head 0
    assert torch.equal(student.o_proj.weight, 2 * attn.o_proj.weight) and not student.z_proj.weight.any()
    # one_layer_converted swaps in place and restores.
    before = teacher(ids).logits
    with one_layer_converted(teacher, 2, student) as probe:
        assert probe.config.layer_types[2] == "lightning_attention"
        assert not torch.allclose(probe(ids).logits, before)
    assert teacher.config.layer_types[2] == "full_attention"
    assert torch.allclose(teacher(ids).logits, before)


def test_stage1_trains_only_students(teacher_dir, corpus_file, tmp_path):
    from longforge.convert.pipeline import _Run

    cfg = tiny_config(teacher_dir, corpus_file, tmp_path / "run", stages=["1"])
    run = _Run(cfg, progress=False)
    teacher_before = {k: v.clone() for k, v in run.teacher.state_dict().items()}
    run.load_students()
    students_before = {k: v.clone() for k, v in run.students.state_dict().items()}
    run.stage1()
    assert all(torch.equal(v, run.teacher.state_dict()[k]) for k, v in teacher_before.items())
    changed = [k for k, v in run.students.state_dict().items() if not torch.equal(v, students_before[k])]
    assert any("q_proj" in k for k in changed) and any("z_proj" in k for k in changed)
    history = run.state["stages"]["1"]["history"]
    assert len(history) == 8 and history[-1][1] < history[0][1]  # the alignment loss falls
    assert (tmp_path / "run" / "stage1" / "students.safetensors").is_file()
    assert not (tmp_path / "run" / "stage1" / "checkpoint").exists()


def test_pipeline_end_to_end_resume_and_report(teacher_dir, corpus_file, tmp_path, monkeypatch):
    import longforge.convert.pipeline as pipeline
    from longforge.models import HybridForCausalLM

    out = tmp_path / "run"
    cfg = tiny_config(teacher_dir, corpus_file, out, recipe="sala",
                      hybrid={"sparse_block_size": 16, "sparse_kernel_size": 8, "sparse_kernel_stride": 4,
                              "sparse_topk": 1, "sparse_window_size": 16, "sparse_dense_len": 32})  # fmt: skip
    # Interrupt stage 2 after 4 of its 6 steps (a checkpoint was written at step 3).
    calls = {"n": 0}
    real = pipeline.distill_loss

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated interruption")
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "distill_loss", failing)
    with pytest.raises(KeyboardInterrupt):
        convert(cfg, progress=False)
    state = json.loads((out / "state.json").read_text())
    assert state["completed"] == ["1", "select"]
    assert (out / "stage2" / "checkpoint" / "state.json").is_file()
    monkeypatch.setattr(pipeline, "distill_loss", real)

    report = convert(cfg, progress=False)  # resumes stage 2 at step 3, then runs stage 3
    stage2 = report["stages"]["2"]["history"]
    assert [s for s, _ in stage2] == [1, 2, 3, 4, 5, 6]
    # given layers are kept exactly as given (sala's first/last rule applies to the sweep's choice)
    assert report["layer_types"] == [
        "lightning_attention",
        "sparse_attention",
        "lightning_attention",
        "lightning_attention",
    ]
    assert report["kept_attention_layers"] == [1]
    assert report["conversion_tokens"] == 4 * 64 * 8 + 4 * 64 * 6 + 2 * 128 * 3
    assert report["stages"]["3"]["seq_len"] == 128
    for name in ("report.json", "report.md", "report_losses.png"):
        assert (out / name).is_file()
    model = HybridForCausalLM.from_pretrained(out / "model")
    assert model.config.position_encoding == "hype" and model.config.attn_output_gate
    assert (out / "model" / "tokenizer.json").is_file()
    # A third run has nothing left to do and changes nothing.
    before = (out / "state.json").read_text()
    convert(cfg, progress=False)
    assert json.loads((out / "state.json").read_text())["completed"] == json.loads(before)["completed"]
    # A different config in the same directory is refused.
    cfg.stage2.lr = 5e-4
    with pytest.raises(ValueError, match="different config"):
        convert(cfg, progress=False)


@pytest.mark.slow
def test_selection_sweep_and_hype_sweep(teacher_dir, corpus_file, tmp_path):
    cfg = tiny_config(teacher_dir, corpus_file, tmp_path / "run", stages=["1", "select", "2", "hype"],
                      attn_ratio=0.5)  # fmt: skip
    cfg.select.layers = None
    report = convert(cfg, progress=False)
    sel = report["selection"]
    assert len(sel["retrieval"]) == len(sel["general"]) == len(sel["scores"]) == len(sel["nope_retrieval"]) == 4
    assert sel["mode"] == "hype"
    assert sel["scores"] == pytest.approx(
        selection_scores(sel["retrieval"], sel["general"], kept_retrieval=sel["nope_retrieval"])
    )
    assert len(sel["keep"]) == 2 and report["kept_attention_layers"] == sel["keep"]
    assert [h["attn_logit_scaling"] for h in report["hype"]["sweep"]] == [None, "hype 64"]
    assert report["attn_logit_scaling"] == report["hype"]["chosen"]


def test_cli_end_to_end_and_bad_inputs(teacher_dir, corpus_file, tmp_path, capsys):
    from longforge.cli import main

    out = tmp_path / "cli"
    args = ["convert", "--teacher", str(teacher_dir), "--recipe", "hypenet", "--out", str(out), "--data",
            str(corpus_file), "--tokens-per-stage", "1K,1K,512", "--keep-layers", "0", "--stages", "1,select,2,3",
            "--device", "cpu", "--no-progress", "stage1.seq_len=64", "stage2.seq_len=64", "stage3.seq_len=128",
            "stage1.batch_size=4", "stage2.batch_size=4", "stage3.batch_size=2", "report.samples=0",
            "report.loss_batches=1", "eval_batch_size=2"]  # fmt: skip
    assert main(args) == 0
    assert "hybrid saved to" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["kept_attention_layers"] == [0]
    assert report["stages"]["1"]["tokens"] == 1024 and report["stages"]["3"]["tokens"] == 512

    # bad inputs end in clear errors
    assert main(["convert", "--teacher", str(teacher_dir), "--out", str(tmp_path / "x"), "--attn-ratio", "1.5"]) == 2
    assert "attn_ratio must be in (0, 1)" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["convert", "--teacher", str(teacher_dir), "--out", str(tmp_path / "y"), "--data", str(empty)]) == 2
    assert "no non-empty" in capsys.readouterr().err
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 10}))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (gpt2 / name).write_bytes((teacher_dir / name).read_bytes())
    assert main(["convert", "--teacher", str(gpt2), "--out", str(tmp_path / "z"), "--data", str(corpus_file)]) == 2
    assert "cannot import model_type 'gpt2'" in capsys.readouterr().err
    assert (
        main(["convert", "--teacher", str(teacher_dir), "--out", str(tmp_path / "w"), "--tokens-per-stage", "1K"]) == 2
    )
    assert "three counts" in capsys.readouterr().err


def test_shipped_convert_recipes_validate():
    from pathlib import Path

    from longforge.recipes import load_recipe

    recipes = sorted((Path(__file__).parents[2] / "recipes" / "convert").glob("*.yaml"))
    assert recipes
    for path in recipes:
        load_recipe(ConvertConfig, path).validate()
