"""DECO sparse MoE: NormSiLU, exact sparse inference, the sparsity controller, config checks."""

import pytest
import torch
import torch.nn.functional as F

from longforge.layers.deco_moe import DecoMoE, TopKMoE, router_entropy
from longforge.models import HybridConfig, HybridForCausalLM
from longforge.modules.norm_silu import norm_silu
from longforge.ops.moe import deco_experts_dense, deco_experts_sparse
from longforge.train.moe import SparsityController, activation_counts, controller_for, penalty_loss


def test_norm_silu_matches_the_formula_written_out():
    E, d, eps = 5, 7, 1e-6
    u = torch.randn(3, E * d)
    gamma = torch.rand(d) + 0.5
    out = norm_silu(u, E, gamma, eps)
    for t in range(3):
        mean = sum(u[t].tolist()) / (E * d)
        for e in range(E):
            slice_ = [v - mean for v in u[t, e * d : (e + 1) * d].tolist()]
            rms = (sum(v * v for v in slice_) / d + eps) ** 0.5
            for j in range(d):
                n = gamma[j].item() * slice_[j] / rms
                expected = n / (1 + torch.exp(torch.tensor(-n)).item())
                assert abs(out[t, e * d + j].item() - expected) < 1e-5


@pytest.mark.parametrize("tokens", [1, 8, 64])
@pytest.mark.parametrize("with_norm", [True, False])
def test_sparse_inference_equals_dense_masked(tokens, with_norm):
    h, E, d = 48, 12, 16
    x = torch.randn(tokens, h)
    router = torch.randn(E, h)
    r = F.relu(x @ router.t() - 2.0)  # a sparse pattern: most experts inactive for most tokens
    gates = r * (torch.rand(E) + 0.05)
    assert 0 < (gates > 0).float().mean() < 0.5
    up, down = torch.randn(E * d, h) / h**0.5, torch.randn(h, E * d) / (E * d) ** 0.5
    gamma = torch.rand(d) + 0.5 if with_norm else None
    dense = deco_experts_dense(x, gates, up, down, gamma)
    sparse = deco_experts_sparse(x, gates, up, down, gamma)
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)
    # nothing active: zero output, no crash
    zero = deco_experts_sparse(x, torch.zeros_like(gates), up, down, gamma)
    assert torch.equal(zero, torch.zeros_like(zero))


def tiny_moe_config(kind="deco_moe", **kw):
    args = dict(
        vocab_size=61,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        layer_types="LFL",
        mlp_types=kind,
        moe_num_experts=10,
        moe_expert_dim=8,
        moe_shared_dim=16,
    )
    args.update(kw)
    return HybridConfig(**args)


@pytest.mark.parametrize("kind", ["deco_moe", "remoe", "topk_moe"])
def test_model_with_moe_layers_caches_saves_and_trains(kind, tmp_path):
    torch.manual_seed(0)
    model = HybridForCausalLM(tiny_moe_config(kind)).eval()
    assert model.config.mlp_types == ["dense", kind, kind]
    ids = torch.randint(0, 61, (2, 40))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits  # eval: the sparse path for DECO / ReMoE
        out = model(ids[:, :25], use_cache=True)
        step = model(ids[:, 25:], past_key_values=out.get("cache", out.get("past_key_values")), use_cache=True).logits
    torch.testing.assert_close(torch.cat([out.logits, step], 1), full, atol=1e-4, rtol=0)
    model.save_pretrained(tmp_path)
    again = HybridForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(ids, use_cache=False).logits, full)
    model.train()
    controller = controller_for(model)
    loss = model(ids, labels=ids).loss
    penalty = penalty_loss(model, controller or SparsityController(lam=0.1))
    (loss + penalty).backward()
    grads = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # top-k: an expert no token picked gets no gradient, which is legitimate
    if kind != "topk_moe":
        assert not grads, grads
    assert (controller is None) == (kind == "topk_moe")


def test_dense_training_path_equals_sparse_inference_in_a_layer():
    layer = DecoMoE(tiny_moe_config(), 1)
    with torch.no_grad():
        layer.router.weight.normal_(std=0.5)
    x = torch.randn(2, 9, 32)
    layer.train()
    dense = layer(x)
    layer.eval()
    with torch.no_grad():
        sparse = layer(x)
    torch.testing.assert_close(sparse, dense.detach(), atol=1e-5, rtol=1e-5)


def test_controller_update_rule():
    c = SparsityController(target=0.2, lambda_init=1e-8, multiplier=2.0)
    assert c.update(0.5) == 2e-8 and c.update(0.5) == 4e-8
    assert c.update(0.1) == 2e-8 and c.update(0.1) == 1e-8 and c.update(0.1) == 1e-8  # floored at λ₀


def test_controller_drives_activation_toward_target():
    """A toy run: the ReLU router starts ~50% active; the adaptive entropy penalty pulls ρ down toward 0.2."""
    torch.manual_seed(0)
    config = tiny_moe_config(moe_lambda_init=1e-3, moe_lambda_multiplier=1.3, moe_target_activation=0.2)
    model = HybridForCausalLM(config).train()
    controller = controller_for(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(0, 61, (8, 32))
    rhos = []
    for _ in range(120):
        loss = model(ids, labels=ids).loss + penalty_loss(model, controller)
        loss.backward()
        opt.step()
        opt.zero_grad()
        counts = activation_counts(model)
        rho = sum(a for a, _ in counts) / sum(b for _, b in counts)
        controller.update(rho)
        rhos.append(rho)
    assert rhos[0] > 0.35
    assert abs(sum(rhos[-10:]) / 10 - 0.2) < 0.06, rhos[-10:]


def test_router_entropy_is_the_deco_formula():
    r = torch.tensor([[1.0, 1.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    p0 = 1.0 / (2.0 + 1e-5)
    expected = (
        -2 * p0 * torch.log(torch.tensor(p0 + 1e-5))
        + -(4 / (4 + 1e-5)) * torch.log(torch.tensor(4 / (4 + 1e-5) + 1e-5))
    ) / 2
    torch.testing.assert_close(router_entropy(r), expected)


def test_topk_layer_routes_k_experts():
    layer = TopKMoE(tiny_moe_config("topk_moe", moe_top_k=3), 1).eval()
    with torch.no_grad():
        layer(torch.randn(5, 32))
    assert float(layer.num_active) == 15 and float(layer.num_routed) == 50


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(mlp_types="sparse_mlp"), "mlp_types"),
        (dict(mlp_types=["dense", "deco_moe"]), "mlp_types has 2 entries"),
        (dict(mlp_types=["dense", "deco_moe", "moe"]), r"mlp_types\[2\]"),
        (dict(moe_num_experts=0), "moe_num_experts"),
        (dict(moe_target_activation=1.5), "moe_target_activation"),
        (dict(moe_top_k=11), "moe_top_k"),
        (dict(moe_penalty="l2"), "moe_penalty"),
        (dict(moe_lambda_multiplier=0.9), "moe_lambda_multiplier"),
        (dict(moe_shared_dim=-1), "moe_shared_dim"),
    ],
)
def test_moe_config_errors(kwargs, field):
    with pytest.raises(ValueError, match=field):
        tiny_moe_config(**kwargs)


def test_bench_moe_writes_records(tmp_path):
    from longforge.bench.moe import run

    records = run(
        out_dir=tmp_path, shapes=("0.1B",), ratios=(0.2,), tokens=(1, 8), dtype="fp32", repeats=2, progress=False,
        model=False,
    )
    assert [(r["tokens"], r["activation_ratio"]) for r in records] == [(1, 0.2), (8, 0.2)]
    for r in records:
        # the benchmark's router weights make exactly round(0.2·42) = 8 experts fire per token
        assert r["measured_ratio"] == pytest.approx(8 / 42, abs=1e-4)
        assert set(r) >= {"shape", "activation_ratio", "tokens", "dense_ms", "deco_ms", "speedup", "device"}
        assert r["dense_params"] == pytest.approx(r["deco_params"], rel=1e-3)
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["deco_ms"], rel=1e-2)
    files = sorted(p.suffix for p in tmp_path.iterdir())
    assert files == [".json", ".md", ".png"]


@pytest.mark.slow
def test_deco_replication_runs_every_variant_tiny(tmp_path, monkeypatch):
    """scripts/deco_replication.py's code path on CPU: a few steps of dense / DECO / ReMoE / top-k, then the
    summary (JSON + MD + two PNGs) with per-run eval-loss and ρ curves."""
    import importlib.util
    import json
    from pathlib import Path

    monkeypatch.setenv("LONGFORGE_CACHE", str(tmp_path / "cache"))
    path = Path(__file__).resolve().parents[2] / "scripts" / "deco_replication.py"
    spec = importlib.util.spec_from_file_location("deco_replication", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # equal FFN parameters per MoE layer in the real recipe (within 3 %)
    base = mod.RECIPE["base"]
    sizes = {k: mod.ffn_params({**base, **v}) for k, v in mod.RECIPE["variants"].items()}
    assert max(sizes.values()) / min(sizes.values()) < 1.03, sizes
    assert mod.main(["--size", "tiny", "--device", "cpu", "--in-process", "--out", str(tmp_path / "rep")]) == 0
    summary = json.loads((tmp_path / "rep" / "deco_replication.json").read_text())
    runs = summary["runs"]
    assert set(runs) == {"dense", "deco", "remoe", "topk"}
    assert len({r["tokens"] for r in runs.values()}) == 1  # equal tokens
    for name, r in runs.items():
        assert len(r["eval_curve"]) == 2 and all(loss > 0 for _, loss in r["eval_curve"])
        assert (r["final_rho"] is None) == (name == "dense")
    assert runs["deco"]["final_lambda"] > 0 and "deco_within_2pct" in summary["checks"]
    assert {p.name for p in (tmp_path / "rep").glob("deco_replication*")} == {
        "deco_replication.json", "deco_replication.md", "deco_replication_loss.png", "deco_replication_rho.png"
    }


def test_deco_replication_compares_truncated_runs_at_a_common_step(tmp_path):
    """Runs cut short by the time budget stop at different steps: the DECO-vs-dense check uses the last evaluation
    step that every run reached, not the unequal final losses."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "deco_replication.py"
    spec = importlib.util.spec_from_file_location("deco_replication", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def run(steps, losses, rho=None):
        hist = [{"step": s, "eval_loss": l, **({"moe_rho": rho, "moe_lambda": 1e-3} if rho else {})}
                for s, l in zip(steps, losses)]
        return {"params": 1, "seconds": 1.0, "tokens": steps[-1] * 10, "steps": steps[-1], "truncated": True,
                "history": hist}

    runs = {"dense": run([50, 100, 150, 173], [5.0, 4.0, 3.0, 2.0]), "deco": run([50, 100, 121], [5.1, 4.05, 3.9],
                                                                                   rho=0.21)}
    summary = mod.summarize(mod.RECIPE, runs, tmp_path, 10.0)
    assert summary["common_eval_step"] == 100
    assert summary["checks"]["equal_tokens"] is False
    assert summary["checks"]["deco_vs_dense_loss_gap"] == round(4.05 / 4.0 - 1, 4)
    assert summary["checks"]["deco_within_2pct"] is True and "step 100" in summary["checks"]["loss_compared_at"]
    assert "eval loss @ step 100" in (tmp_path / "deco_replication.md").read_text()
