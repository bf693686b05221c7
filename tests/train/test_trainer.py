"""The training loop, tested by behaviour on tiny CPU runs."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from longforge.recipes import apply_overrides, from_dict, load_recipe
from longforge.train import TrainConfig, Trainer, lr_at, weighted_token_loss

TINY_MODEL = {
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 12,
    "tie_word_embeddings": True,
}


# Tests read a small installed package's docs as prose (fast to parse); real runs read stdlib + numpy + torch.
PROSE = ["rich"]


@pytest.fixture(scope="module", autouse=True)
def prose_cache(tmp_path_factory):
    import os

    old = os.environ.get("LONGFORGE_CACHE")
    os.environ["LONGFORGE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        del os.environ["LONGFORGE_CACHE"]
    else:
        os.environ["LONGFORGE_CACHE"] = old


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, prose_cache):
    """Train the built-in corpus tokenizer once (small vocabulary) and share it."""
    import os

    from longforge.data.tokenizer import build_tokenizer

    out = tmp_path_factory.mktemp("tok")
    build_tokenizer(out, seed=0, vocab_size=600, prose_sources=tuple(PROSE), cache_dir=os.environ["LONGFORGE_CACHE"])
    return str(out)


def tiny_cfg(tmp_path: Path, tokenizer_dir: str, **over) -> TrainConfig:
    data = {
        "out_dir": str(tmp_path / "run"),
        "steps": 12,
        "micro_batch_size": 4,
        "seq_len": 64,
        "model": {"arch": "qwen3", "config": dict(TINY_MODEL), "tokenizer": tokenizer_dir},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.0},
        "data": {"prose_sources": PROSE},
        "eval_every": 0,
        "save_every": 0,
        "tensorboard": False,
        "device": "cpu",
    }
    overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in over.items()]
    cfg = from_dict(TrainConfig, apply_overrides(data, overrides))
    cfg.validate()
    return cfg


def test_loss_falls_and_every_parameter_changes(tmp_path, tokenizer_dir):
    cfg = tiny_cfg(tmp_path, tokenizer_dir, steps=40)
    trainer = Trainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    history = trainer.fit(progress=False)
    first = sum(r["loss"] for r in history[:5]) / 5
    last = sum(r["loss"] for r in history[-5:]) / 5
    assert last < first - 0.5, (first, last)
    unchanged = [n for n, p in trainer.model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged, unchanged
    assert (Path(cfg.out_dir) / "checkpoints" / "step_40" / "model" / "config.json").is_file()
    assert (Path(cfg.out_dir) / "recipe.resolved.yaml").is_file()


def test_grad_accumulation_4x1_equals_1x4(tmp_path, tokenizer_dir):
    fixed = None
    losses, params = [], []
    for accum, micro in ((1, 4), (4, 1)):
        cfg = tiny_cfg(tmp_path / f"a{accum}", tokenizer_dir, grad_accum=accum, micro_batch_size=micro, steps=1)
        torch.manual_seed(0)
        trainer = Trainer(cfg)
        if fixed is None:
            fixed = trainer.stream.next_batch(4, 64)
            fixed["loss_weight"][0, 10:20] = 3.0  # uneven weights must still be normalised over the whole step
        chunks = iter([{k: v[i : i + micro] for k, v in fixed.items()} for i in range(0, 4, micro)])
        trainer.stream.next_batch = lambda b, t, _c=chunks: next(_c)
        losses.append(trainer.train_step()["loss"])
        params.append(torch.cat([p.detach().flatten() for p in trainer.model.parameters()]))
    assert abs(losses[0] - losses[1]) < 1e-5
    torch.testing.assert_close(params[0], params[1], atol=1e-6, rtol=1e-5)


def test_kill_and_resume_reproduces_the_curve(tmp_path, tokenizer_dir):
    full = Trainer(tiny_cfg(tmp_path / "full", tokenizer_dir, steps=8, save_every=4)).fit(progress=False)
    # the same run "killed" after step 5 (its last checkpoint is step 4), then restarted
    killed = tiny_cfg(tmp_path / "killed", tokenizer_dir, steps=8, save_every=4)
    trainer = Trainer(killed)
    for _ in range(5):
        trainer.train_step()
        if trainer.step == 4:
            trainer.save_checkpoint()
    del trainer
    resumed = Trainer(tiny_cfg(tmp_path / "killed", tokenizer_dir, steps=8, save_every=4))
    assert resumed.step == 4
    tail = resumed.fit(progress=False)
    assert [r["step"] for r in tail[-4:]] == [5, 6, 7, 8]
    for a, b in zip(full[-4:], tail[-4:]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6), (a, b)


def test_checkpoint_is_never_half_written(tmp_path, tokenizer_dir, monkeypatch):
    cfg = tiny_cfg(tmp_path, tokenizer_dir, steps=2)
    trainer = Trainer(cfg)
    trainer.train_step()
    good = trainer.save_checkpoint()
    trainer.train_step()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    ckpts = sorted(p.name for p in (Path(cfg.out_dir) / "checkpoints").iterdir())
    assert ckpts == ["latest", good.name]
    assert (Path(cfg.out_dir) / "checkpoints" / "latest").read_text() == good.name


def test_schedules():
    cfg = TrainConfig(steps=100)
    cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio = 1.0, 10, 0.1
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(10 + 45, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    cfg.optim.schedule, cfg.optim.decay_fraction = "wsd", 0.2
    assert lr_at(50, cfg) == 1.0 and lr_at(79, cfg) == 1.0
    assert lr_at(99, cfg) == pytest.approx(0.1) and 0.1 < lr_at(90, cfg) < 1.0
    cfg.seq_len, cfg.micro_batch_size = 256, 64
    cfg.seq_len_schedule = [[0, 256], [50, 1024]]
    assert (cfg.seq_len_at(49), cfg.micro_batch_at(49)) == (256, 64)
    assert (cfg.seq_len_at(50), cfg.micro_batch_at(50)) == (1024, 16)


def test_weighted_loss_is_plain_cross_entropy_with_unit_weights():
    logits = torch.randn(2, 7, 11)
    ids = torch.randint(0, 11, (2, 7))
    w = torch.ones(2, 7)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1), reduction="sum")
    torch.testing.assert_close(weighted_token_loss(logits, ids, w), ref)


def test_bad_recipes_name_the_problem(tmp_path, tokenizer_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 10\noptim:\n  lr: 1e-3\n  lrr: 2\n")
    with pytest.raises(ValueError, match="optim.lrr"):
        load_recipe(TrainConfig, bad)
    with pytest.raises(ValueError, match="does not exist"):
        load_recipe(TrainConfig, tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="optim.schedule"):
        load_recipe(TrainConfig, None, ["optim.schedule=linear"])
    with pytest.raises(ValueError, match="steps: expected an integer"):
        load_recipe(TrainConfig, None, ["steps=ten"])
    with pytest.raises(ValueError, match="seq_len_schedule"):
        load_recipe(TrainConfig, None, ["seq_len_schedule=[[0, 256], [0, 512]]"])
    with pytest.raises(ValueError, match="nope.jsonl does not exist"):
        load_recipe(
            TrainConfig, None, ["data.source=" + str(tmp_path / "nope.jsonl"), "model.tokenizer=" + str(tmp_path)]
        )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="give model.tokenizer"):
        load_recipe(TrainConfig, None, ["data.source=" + str(empty)])  # a user dataset needs a tokenizer
    cfg = tiny_cfg(tmp_path, tokenizer_dir, **{"data.source": str(empty)})
    with pytest.raises(ValueError, match="empty.jsonl"):
        Trainer(cfg)


def test_float_fields_take_yaml_11_exponents(tmp_path):
    # YAML 1.1 reads "3e-4" (no dot in the mantissa) as a string; a float field takes it as the number it spells.
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: 3e-4\n")
    assert load_recipe(TrainConfig, recipe).optim.lr == 3e-4
    assert load_recipe(TrainConfig, None, ["optim.lr=2e-3"]).optim.lr == 2e-3
    with pytest.raises(ValueError, match="optim.lr: expected a number, got 'fast'"):
        load_recipe(TrainConfig, None, ["optim.lr=fast"])


def test_every_shipped_recipe_validates():
    root = Path(__file__).resolve().parents[2] / "recipes"
    recipes = sorted((root / "train").glob("*.yaml"))
    assert recipes, "no training recipes shipped"
    for path in recipes:
        cfg = load_recipe(TrainConfig, path)
        assert cfg.steps > 0


def test_torchrun_fsdp2_trains_checkpoints_and_resumes(tmp_path, tokenizer_dir):
    """Two CPU processes (gloo) under torchrun: FSDP2-sharded training, a full checkpoint, then a resume."""
    import os
    import subprocess
    import sys

    from longforge.models.pretrained import resolve_model_path  # noqa: F401  (package importable)

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "longforge.cli"]
    args = [
        "train",
        str(Path(__file__).resolve().parents[2] / "recipes" / "train" / "tiny-teacher.yaml"),
        f"out_dir={tmp_path / 'run'}",
        "save_every=2",
        "seq_len=32",
        "micro_batch_size=2",
        "seq_len_schedule=[]",
        f"data.prose_sources={PROSE}",
        f"model.tokenizer={tokenizer_dir}",
        "model.config.hidden_size=32",
        "model.config.intermediate_size=64",
        "model.config.num_hidden_layers=2",
        "model.config.num_attention_heads=2",
        "model.config.num_key_value_heads=1",
        "model.config.head_dim=16",
        "eval_every=0",
        "device=cpu",
        "tensorboard=false",
        "data.probes=[]",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for steps in (3, 5):
        proc = subprocess.run(
            torchrun + args + [f"steps={steps}"], capture_output=True, text=True, env=env, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"done: step {steps}" in proc.stdout
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "latest").read_text() == "step_5"
    assert not list(ckpts.glob(".rank*_step_2.pt"))  # pruned with their checkpoint
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ckpts / "step_5" / "model")
    assert model.config.hidden_size == 32
