"""Model invariants for a hybrid that mixes all four layer types (fp32, CPU)."""

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

from longforge.models import HybridCache, HybridForCausalLM, HybridModel
from longforge.models.hybrid.memory import cache_bytes

from .helpers import mixed_config

ATOL = 1e-4


def make_model(**overrides):
    torch.manual_seed(0)
    return HybridForCausalLM(mixed_config(**overrides)).eval()


def logits_of(model, ids, **kw):
    with torch.no_grad():
        return model(ids, use_cache=False, **kw).logits


@pytest.mark.parametrize("chunks", [[100], [37, 41, 22], [1] * 5 + [95]])
def test_chunked_prefill_then_decode_equals_full_forward(chunks):
    model = make_model()
    T = sum(chunks)
    ids = torch.randint(0, 97, (2, T + 20))
    full = logits_of(model, ids)
    cache = HybridCache(model.config)
    pieces, start = [], 0
    with torch.no_grad():
        for n in chunks + [1] * 20:  # chunked prefill, then token-by-token decode
            out = model(ids[:, start : start + n], past_key_values=cache, use_cache=True)
            pieces.append(out.logits)
            start += n
    assert cache.get_seq_length() == T + 20
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=ATOL, rtol=0)


def test_sparse_layer_is_really_sparse():
    """With small blocks the InfLLM-V2 layer must differ from dense attention at 100 tokens."""
    ids = torch.randint(0, 97, (1, 100))
    sparse = logits_of(make_model(), ids)
    dense = logits_of(make_model(sparse_topk=1000), ids)
    assert (sparse - dense).abs().max() > 1e-3
    # ... and with top-k covering every block it is exactly dense attention.
    dense_layer = logits_of(make_model(sparse_topk=1000), ids)
    full = make_model(
        sparse_topk=1000,
        layer_types=[
            "full_attention",
            "lightning_attention",
            "sliding_attention",
            "full_attention",
            "lightning_attention",
        ],
    )
    torch.testing.assert_close(logits_of(full, ids), dense_layer, atol=ATOL, rtol=0)


def test_greedy_generation_cached_equals_uncached():
    model = make_model()
    ids = torch.randint(1, 97, (2, 60))
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=32, do_sample=False, pad_token_id=0)
        uncached = model.generate(ids, max_new_tokens=32, do_sample=False, use_cache=False, pad_token_id=0)
    assert cached.shape == (2, 92)
    assert torch.equal(cached, uncached)


def test_left_padded_batch_equals_each_sequence_alone():
    model = make_model()
    lengths = [70, 45, 9]
    T = max(lengths)
    seqs = [torch.randint(1, 97, (n,)) for n in lengths]
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, T - len(s) :] = s
        mask[i, T - len(s) :] = 1
    batch_logits = logits_of(model, ids, attention_mask=mask)
    for i, s in enumerate(seqs):
        alone = logits_of(model, s[None])
        torch.testing.assert_close(batch_logits[i, T - len(s) :], alone[0], atol=ATOL, rtol=0)
    # generation with the cache, left-padded, gives each sequence's own greedy continuation
    with torch.no_grad():
        gen = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
        for i, s in enumerate(seqs):
            alone = model.generate(s[None], max_new_tokens=12, do_sample=False, pad_token_id=0)
            assert torch.equal(gen[i, T:], alone[0, len(s) :]), f"row {i}"


def test_sampling_is_seeded_and_batched():
    model = make_model()
    ids = torch.randint(1, 97, (3, 20))
    with torch.no_grad():
        torch.manual_seed(1)
        a = model.generate(ids, max_new_tokens=8, do_sample=True, top_k=20, temperature=0.9, pad_token_id=0)
        torch.manual_seed(1)
        b = model.generate(ids, max_new_tokens=8, do_sample=True, top_k=20, temperature=0.9, pad_token_id=0)
    assert torch.equal(a, b) and a.shape == (3, 28)


def test_save_load_identical_logits(tmp_path):
    model = make_model()
    ids = torch.randint(0, 97, (2, 50))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    for loader in (HybridForCausalLM, AutoModelForCausalLM):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, HybridForCausalLM)
        assert torch.equal(logits_of(loaded, ids), logits_of(model, ids))
    base = AutoModel.from_pretrained(tmp_path)
    assert isinstance(base, HybridModel)


def test_tied_embeddings_save_load(tmp_path):
    model = make_model(tie_word_embeddings=True)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.save_pretrained(tmp_path)
    loaded = HybridForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 97, (1, 30))
    assert torch.equal(logits_of(loaded, ids), logits_of(model, ids))


def test_inputs_embeds_equals_input_ids():
    model = make_model()
    ids = torch.randint(0, 97, (2, 40))
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(logits_of(model, None, inputs_embeds=embeds), logits_of(model, ids), atol=0, rtol=0)
    with torch.no_grad():
        out = model.generate(inputs_embeds=embeds, max_new_tokens=4, do_sample=False, pad_token_id=0)
        ref = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(out, ref[:, 40:])


def test_labels_give_shifted_cross_entropy():
    model = make_model()
    ids = torch.randint(0, 97, (2, 30))
    labels = ids.clone()
    labels[0, :5] = -100
    out = model(ids, labels=labels, use_cache=False)
    ref = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 97), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, ref)


def test_training_step_reaches_every_parameter_and_checkpointing_matches():
    ids = torch.randint(0, 97, (2, 48))
    grads = []
    for checkpointing in (False, True):
        model = make_model().train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.model.layers)
        model(ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    no_grad = [n for n, g in grads[0].items() if g is None or g.abs().sum() == 0]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-5, rtol=1e-4)


def test_hype_scaling_only_at_inference_unless_asked():
    ids = torch.randint(0, 97, (1, 64))
    model = make_model()
    plain = make_model(attn_logit_scaling=None)
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, plain(ids).logits)
        model.train(), plain.train()
        torch.testing.assert_close(model(ids).logits, plain(ids).logits, atol=0, rtol=0)
        trained = make_model(attn_logit_scaling_in_training=True).train()
        assert not torch.allclose(trained(ids).logits, plain(ids).logits)


def test_set_attn_logit_scaling_in_place_equals_a_fresh_model():
    ids = torch.randint(0, 97, (1, 64))
    model = make_model(attn_logit_scaling=None)
    model.set_attn_logit_scaling("hype 500")
    assert model.config.attn_logit_scaling == "hype 500"
    torch.testing.assert_close(logits_of(model, ids), logits_of(make_model(attn_logit_scaling="hype 500"), ids),
                               atol=0, rtol=0)  # fmt: skip
    model.set_attn_logit_scaling(None)
    torch.testing.assert_close(logits_of(model, ids), logits_of(make_model(attn_logit_scaling=None), ids),
                               atol=0, rtol=0)  # fmt: skip
    with pytest.raises(ValueError, match="attn_logit_scaling"):
        model.set_attn_logit_scaling("yarn")
    assert model.config.attn_logit_scaling is None  # a bad value changes nothing


def test_cache_memory_matches_the_config_prediction():
    model = make_model()
    cache = HybridCache(model.config)
    with torch.no_grad():
        model(torch.randint(0, 97, (1, 77)), past_key_values=cache, use_cache=True)
    predicted = cache_bytes(model.config, 77, dtype=torch.float32)
    assert cache.nbytes_by_kind() == {k: v for k, v in predicted.items() if k != "total"}
    assert cache.nbytes() == predicted["total"]


def test_bad_inputs_are_named():
    model = make_model()
    ids = torch.randint(0, 97, (2, 10))
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, attention_mask=torch.ones(2, 9))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(ids, inputs_embeds=torch.zeros(2, 10, 64))
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=torch.zeros(2, 10, 63))
    with pytest.raises(ValueError, match="labels"):
        model(ids, labels=ids[:, :5])
    from transformers import DynamicCache

    with pytest.raises(ValueError, match="HybridCache"):
        model(ids, past_key_values=DynamicCache(), use_cache=True)


def test_corrupt_checkpoint_is_refused(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="model.safetensors is truncated or corrupt"):
        HybridForCausalLM.from_pretrained(tmp_path)


def test_missing_or_pickled_weights_are_refused(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickled weights are refused"):
        HybridForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json is missing"):
        HybridForCausalLM.from_pretrained(tmp_path)


def test_save_is_atomic_and_replaces_a_previous_save(tmp_path, monkeypatch):
    model = make_model()
    target = tmp_path / "ckpt"
    model.save_pretrained(target)
    before = (target / "model.safetensors").read_bytes()
    # A save that dies half-way leaves the previous checkpoint untouched and no temporary files behind.
    from transformers import PreTrainedModel

    def boom(self, save_directory, *a, **k):
        (save_directory / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        make_model(initializer_range=0.5).save_pretrained(target)
    monkeypatch.undo()
    assert (target / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    HybridForCausalLM.from_pretrained(target)
