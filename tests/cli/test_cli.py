"""The console script, run as a user runs it (subprocess)."""

import json
import subprocess
import sys

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from longforge.cli import INFO_LENGTHS, info_report
from longforge.models import HybridForCausalLM, load_config
from longforge.models.hybrid.memory import cache_bytes


def run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "longforge.cli", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_info_builtin_shapes_json():
    sala = json.loads(run("info", "sala-9b-shape", "--json").stdout)
    assert sala["layer_types"].count("sparse_attention") == 8
    # Lightning state is constant: 24 layers × 32 heads × 128 × 128 × 4 bytes = 48 MiB at every length.
    for n in INFO_LENGTHS:
        assert sala["cache_bytes_bf16"][str(n)]["lightning_attention"] == 24 * 32 * 128 * 128 * 4
    qwen = json.loads(run("info", "qwen3-8b-shape", "--json").stdout)
    # Qwen3-8B KV cache: 36 layers × 2 × 8 heads × 128 × 2 bytes = 144 KiB per token → 18 GiB at 128K.
    assert qwen["cache_bytes_bf16"]["131072"]["total"] == 36 * 2 * 8 * 128 * 2 * 131072
    assert qwen["parameters"]["total"] == 8_190_735_360  # Qwen3-8B's published size (8.19B)
    assert sala["cache_bytes_bf16"]["1048576"]["total"] < qwen["cache_bytes_bf16"]["1048576"]["total"] / 10


def test_info_table_and_paths(tmp_path):
    out = run("info", "sala-9b-shape").stdout
    assert "SLLLLLLLLSLLLLLLSSLLLLSLLLLLLSSS" in out and "1M" in out
    # a config.json, and a model directory (a transformers one too)
    cfg = load_config("tiny-hybrid-shape")
    cfg.save_pretrained(tmp_path / "hyb")
    report = json.loads(run("info", str(tmp_path / "hyb" / "config.json"), "--json").stdout)
    assert report == json.loads(json.dumps(info_report(cfg)))
    Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=50,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
        )
    ).save_pretrained(tmp_path / "q")
    report = json.loads(run("info", str(tmp_path / "q"), "--json").stdout)
    assert report["layer_types"] == ["full_attention"] * 2
    assert report["cache_bytes_bf16"]["4096"]["total"] == cache_bytes(load_config(str(tmp_path / "q")), 4096)["total"]


def test_info_bad_input_is_a_clear_error(tmp_path):
    proc = run("info", "no-such-shape", check=False)
    assert proc.returncode == 2 and "built-in shape" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"model_type": "longforge_hybrid", "num_hidden_layers": 2, "layer_types": ["full_attention", "mamba"]}
        )
    )
    proc = run("info", str(tmp_path), check=False)
    assert proc.returncode == 2 and "layer_types[1]" in proc.stderr


def test_demo_runs(tmp_path):
    """The main job, shrunk to one length and one sample per task: teacher vs shipped hybrid, side by side."""
    out = tmp_path / "demo"
    proc = run("demo", "--lengths", "1024", "--samples", "1", "--speed-lengths", "512", "--out", str(out),
               "--no-progress")  # fmt: skip
    assert "tiny-teacher" in proc.stdout and "tiny-hybrid" in proc.stdout
    report = json.loads((out / "demo.json").read_text())
    assert set(report["models"]) == {"tiny-teacher", "tiny-hybrid"}
    hybrid, teacher = report["models"]["tiny-hybrid"], report["models"]["tiny-teacher"]
    assert "lightning_attention" in hybrid["layer_types"]
    for model in (hybrid, teacher):
        assert 0 <= model["ruler"]["average"]["1024"] <= 100
        assert model["speed"][0]["length"] == 512 and model["speed"][0]["ttft_s"] > 0
    # the hybrid's cache is smaller than the teacher's full KV at the same length
    assert hybrid["speed"][0]["cache_bytes"] < teacher["speed"][0]["cache_bytes"]
    for name in ("demo.md", "demo_ruler.png", "demo_speed.png"):
        assert (out / name).is_file()


def test_demo_convert_recipe_without_a_source_checkout(tmp_path, monkeypatch):
    """`demo --convert` reruns the embedded hybrid's recipe: from recipes/ in a checkout, else from the config stored
    in the hybrid's conversion report (an installed wheel has no recipes/), never the bare defaults."""
    from pathlib import Path

    from longforge import demo

    from_file = demo.tiny_recipe(tmp_path / "a")
    real_is_file = Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda self: self.name != "tiny-sala.yaml" and real_is_file(self))
    from_card = demo.tiny_recipe(tmp_path / "b")
    assert from_file.out_dir == str(tmp_path / "a") and from_card.out_dir == str(tmp_path / "b")
    for cfg in (from_file, from_card):
        assert cfg.recipe == "sala" and cfg.attn_ratio == 0.5 and cfg.select.mode == "hype"
    for stage in ("stage1", "stage2", "stage3"):
        assert getattr(from_file, stage) == getattr(from_card, stage)
    assert from_file.mix == from_card.mix


def test_import_verb(tmp_path):
    torch.manual_seed(0)
    src = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=50,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
        )
    ).eval()
    src.save_pretrained(tmp_path / "src")
    run(
        "import",
        str(tmp_path / "src"),
        "--out",
        str(tmp_path / "out"),
        "--layer-types",
        "LLLF",
        "--position-encoding",
        "hype",
        "--attn-logit-scaling",
        "hype 500",
    )
    model = HybridForCausalLM.from_pretrained(tmp_path / "out")
    assert model.config.layer_types[-1] == "full_attention" and model.config.attn_logit_scaling == "hype 500"
    proc = run("import", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2"), check=False)
    assert proc.returncode == 2 and "nor a local model directory" in proc.stderr
    assert not (tmp_path / "o2").exists()
