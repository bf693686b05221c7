"""The embedded tiny teacher: ships, loads offline, retrieves, and converts."""

import torch

import longforge
from longforge.assets import asset_path
from longforge.eval.ruler import generate_samples
from longforge.models import load_config
from longforge.utils.io import check_checkpoint_dir


def test_teacher_ships_complete_and_sharded():
    path = asset_path("tiny-teacher")
    check_checkpoint_dir(path)  # every shard complete, safetensors only
    shards = sorted(path.glob("*.safetensors"))
    assert len(shards) > 1 and all(s.stat().st_size <= 16 * 1024 * 1024 for s in shards)
    card = (path / "README.md").read_text()
    assert "tokens seen" in card and "commit" in card and "niah_single_1" in card
    assert load_config("tiny-teacher").num_hidden_layers == 8


def test_teacher_loads_and_retrieves_a_needle():
    model, tokenizer = longforge.pretrained("tiny-teacher")
    assert 15e6 <= sum(p.numel() for p in model.parameters()) <= 40e6
    hits = 0
    samples = generate_samples("niah_single_1", tokenizer, 768, num_samples=4, seed=123)
    for sample in samples:
        ids = tokenizer(sample["input"] + sample["answer_prefix"], return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(
                ids, max_new_tokens=sample["tokens_to_generate"], do_sample=False, pad_token_id=tokenizer.eos_token_id
            )
        hits += all(ans in tokenizer.decode(out[0, ids.shape[1] :]) for ans in sample["outputs"])
    assert hits >= 3, f"{hits}/4 needles retrieved"


def test_teacher_imports_into_a_hybrid_with_the_same_logits():
    model, tokenizer = longforge.pretrained("tiny-teacher")
    hybrid = longforge.from_transformers("tiny-teacher", dtype=torch.float32)
    ids = tokenizer("The quick brown fox jumps over the lazy dog. " * 8, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(hybrid(ids, use_cache=False).logits, model(ids).logits, atol=1e-4, rtol=0)
