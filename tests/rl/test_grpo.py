"""GRPO math against hand-computed values, and tiny CPU runs of the loop (transformers Qwen3 and a longforge
hybrid): parameters change, rewards are logged."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import longforge
from longforge.data.rl import RLRecord
from longforge.recipes import from_dict, load_recipe
from longforge.train.grpo import (
    GRPOConfig,
    GRPOTrainer,
    TaskBalancedSampler,
    clipped_surrogate,
    dynamic_sampling_mask,
    group_advantages,
    grpo_loss,
    kl_k3,
    overlong_penalty,
    token_log_probs,
)

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------------ math


def test_group_advantages_by_hand():
    a = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 0.2, 0.2, 0.2, 0.2]), 4)
    std = math.sqrt((4 * 0.25) / 3)  # unbiased
    expected = 0.5 / (std + 1e-4)
    assert torch.allclose(a[:4], torch.tensor([expected, -expected, -expected, expected]), atol=1e-6)
    assert torch.equal(a[4:], torch.zeros(4))  # equal rewards: no signal
    none = group_advantages(torch.tensor([[3.0, 1.0], [0.0, 0.0]]), 2, scale="none")
    assert torch.equal(none, torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
    batch = group_advantages(torch.tensor([3.0, 1.0, 0.0, 0.0]), 2, scale="batch")
    batch_std = torch.tensor([3.0, 1.0, 0.0, 0.0]).std().item()
    assert torch.allclose(batch, torch.tensor([1.0, -1.0, 0.0, 0.0]) / (batch_std + 1e-4))
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        group_advantages(torch.ones(3), 1)


def test_clipped_surrogate_by_hand():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 1.5, 0.5, 0.5]]))
    # one sequence per token here: advantages +1, −1, +1, −1
    loss, clipped = clipped_surrogate(logp.T, old.T, torch.tensor([1.0, -1.0, 1.0, -1.0]), 0.2, 0.2)
    assert torch.allclose(loss.squeeze(1), torch.tensor([-1.2, 1.5, -0.5, 0.8]))
    assert clipped.squeeze(1).tolist() == [True, False, False, True]
    # clip-higher (DAPO): ε_high = 0.28 lets a good token rise further
    loss_hi, _ = clipped_surrogate(logp.T[:1], old.T[:1], torch.tensor([1.0]), 0.2, 0.28)
    assert torch.allclose(loss_hi, torch.tensor([[-1.28]]))


def test_kl_k3_by_hand():
    kl = kl_k3(torch.log(torch.tensor([0.5, 0.3])), torch.log(torch.tensor([0.25, 0.3])))
    assert torch.allclose(kl, torch.tensor([0.5 + math.log(2) - 1, 0.0]), atol=1e-6)


def test_grpo_loss_aggregations_by_hand():
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, 0.5])
    # on-policy (ratio 1): ℓ = −Â per token → rows (−1, −1) and (−0.5)
    loss, stats = grpo_loss(logp, logp.detach(), adv, mask)
    assert loss.item() == pytest.approx(-2.5 / 3)
    loss.backward()
    # the gradient is the policy gradient: −Â / (number of tokens) on every completion token, 0 on padding
    assert torch.allclose(logp.grad, torch.tensor([[-1 / 3, -1 / 3, 0.0], [-0.5 / 3, 0.0, 0.0]]))
    assert stats["clip_fraction"] == 0.0
    loss, _ = grpo_loss(logp, logp.detach(), adv, mask, normalizer=10.0)
    assert loss.item() == pytest.approx(-2.5 / 10)
    loss, _ = grpo_loss(logp, logp.detach(), adv, mask, loss_agg="seq-mean-token-mean")
    assert loss.item() == pytest.approx((-1 + -0.5) / 2)
    loss, _ = grpo_loss(logp, logp.detach(), adv, mask, loss_agg="seq-mean-token-sum-norm", max_completion_length=4)
    assert loss.item() == pytest.approx((-2 / 4 + -0.5 / 4) / 2)
    # β · k3 is added per token
    ref = torch.full((2, 3), math.log(0.5))
    loss, stats = grpo_loss(logp, logp.detach(), adv, mask, ref_logp=ref, beta=0.1)
    k3 = 0.5 + math.log(2) - 1
    assert loss.item() == pytest.approx((-2.5 + 0.1 * k3 * 3) / 3)
    assert stats["kl"] == pytest.approx(k3)
    with pytest.raises(ValueError, match="beta != 0 needs ref_logp"):
        grpo_loss(logp, logp.detach(), adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="loss_agg must be one of"):
        grpo_loss(logp, logp.detach(), adv, mask, loss_agg="sum")


def test_token_log_probs_and_dapo_helpers():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    assert torch.allclose(token_log_probs(logits, torch.tensor([[1]])), torch.tensor([[math.log(0.75)]]))
    # temperature 2: softmax of (0, log3 / 2) → 1 / (1 + 1/√3)
    t2 = token_log_probs(logits, torch.tensor([[1]]), temperature=2.0)
    assert t2.item() == pytest.approx(math.log(1 / (1 + 3**-0.5)))
    mask = dynamic_sampling_mask(torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]))
    assert mask.tolist() == [False, True, False]
    pen = overlong_penalty(torch.tensor([10, 12, 14, 16]), max_length=16, buffer=4, factor=1.0)
    assert pen.tolist() == [0.0, 0.0, -0.5, -1.0]
    with pytest.raises(ValueError, match="overlong buffer"):
        overlong_penalty(torch.tensor([1]), 16, 0)


def test_task_balanced_sampler():
    recs = [RLRecord(f"a{i}", "r", "A", "p", ["x"], "recall", 1) for i in range(9)]
    recs += [RLRecord("b0", "r", "B", "p", ["x"], "recall", 1)]
    drawn = TaskBalancedSampler(recs, seed=0).take(10)
    assert sum(r.dataset == "B" for r in drawn) == 5  # equal share, not 9:1


# ------------------------------------------------------------------------------------------------ the loop


def short_records(n: int = 8) -> list[RLRecord]:
    return [
        RLRecord(
            f"r{i}",
            "retrieval",
            ["FuzzyNeedle", "KeyChain"][i % 2],
            f"Question: who is number {i}?\nAnswer:",
            [f"person {i}"],
            "recall",
            12,
        )
        for i in range(n)
    ]


def length_reward(record, completion: str) -> float:
    """A reward a random tiny model can vary on: the share of 'e' characters."""
    return completion.count("e") / max(1, len(completion))


def tiny_cfg(tmp_path, **over) -> GRPOConfig:
    data = {
        "out_dir": str(tmp_path / "run"),
        "steps": 2,
        "prompts_per_step": 2,
        "group_size": 4,
        "max_new_tokens": 8,
        "micro_batch_size": 3,
        "lr": 1e-3,
        "device": "cpu",
        "eval_items": 2,
        "data": {"eval_fraction": 0.25},
    }
    data.update(over)
    return from_dict(GRPOConfig, data)


@pytest.mark.parametrize("kind", ["qwen3", "hybrid"])
def test_two_step_run_changes_parameters_and_logs_rewards(tmp_path, tokenizer, tiny_model, kind):
    model = tiny_model(kind)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = tiny_cfg(tmp_path)
    trainer = GRPOTrainer(cfg, model=model, tokenizer=tokenizer, records=short_records(), reward_fn=length_reward)
    history = trainer.fit(progress=False)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, unchanged
    assert [h["step"] for h in history] == [1, 2] and all(h["updated"] == 1 for h in history)
    assert all(0.0 <= h["reward"] <= 1.0 and h["groups_kept"] == 2 for h in history)
    out = Path(cfg.out_dir)
    summary = json.loads((out / "grpo_summary.json").read_text())
    assert [h["reward"] for h in summary["history"]] == [h["reward"] for h in history]
    assert len(summary["eval"]) == 2  # before and after training
    assert (out / "rewards.png").stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [s.value for s in events.Scalars("train/reward")] == pytest.approx([h["reward"] for h in history])
    assert "eval_reward" in events.Tags()["scalars"]
    reloaded = longforge.pretrained(str(out / "model"))[0]
    assert torch.equal(reloaded.state_dict()["lm_head.weight"], model.state_dict()["lm_head.weight"])


def test_dynamic_sampling_drops_flat_groups(tmp_path, tokenizer, tiny_model):
    model = tiny_model("qwen3")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = tiny_cfg(tmp_path, steps=1, dynamic_sampling=True, max_gen_batches=2, save=False, tensorboard=False)
    trainer = GRPOTrainer(cfg, model=model, tokenizer=tokenizer, records=short_records(), reward_fn=lambda r, c: 1.0)
    with pytest.warns(UserWarning, match="equal rewards; no update"):
        history = trainer.fit(progress=False)
    assert history[0]["updated"] == 0 and history[0]["groups_dropped"] == 4  # 2 prompts × 2 rollout batches
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_config_validation_and_shipped_recipe(tmp_path):
    cfg = load_recipe(GRPOConfig, ROOT / "recipes" / "rl" / "retrieval-keychain.yaml")
    assert cfg.data.datasets == ["FuzzyNeedle", "MultiNeedle", "KeyChain"] and cfg.data.max_tokens <= 4096
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        load_recipe(GRPOConfig, None, ["group_size=1"])
    with pytest.raises(ValueError, match="reward_overrides.KeyChain: unknown reward_type 'bleu'"):
        load_recipe(GRPOConfig, None, ["reward_overrides={KeyChain: bleu}"])
    with pytest.raises(ValueError, match="unknown key"):
        load_recipe(GRPOConfig, None, ["clip=0.3"])


def test_rl_cli(tmp_path, tokenizer, tiny_model, capsys):
    """`longforge rl RECIPE k=v` end to end, on built-in data with the registry's rewards."""
    from longforge.train.grpo_cli import main

    policy = tmp_path / "policy"
    tiny_model("qwen3").save_pretrained(policy)
    tokenizer.save_pretrained(policy)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "steps: 1\nprompts_per_step: 2\ngroup_size: 2\nmax_new_tokens: 4\ndevice: cpu\neval_items: 1\n"
        "data:\n  datasets: [FuzzyNeedle]\n  items_per_dataset: 4\n  max_tokens: 700\n  eval_fraction: 0.3\n"
    )
    args = ["rl", str(recipe), f"policy.path={policy}", f"out_dir={tmp_path / 'run'}", "--no-progress"]
    assert main(args) == 0
    assert "done: 1 steps" in capsys.readouterr().out
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert main(args[:2] + ["policy.path=/nonexistent/dir"]) == 2
    assert "neither a built-in model" in capsys.readouterr().err
    assert main(args[:2] + ["data.max_tokens=50", f"policy.path={policy}"]) == 2
    assert "FuzzyNeedle: max_tokens=50 is too small" in capsys.readouterr().err


def test_sample_completions_splits_a_batch_that_runs_out_of_memory(tokenizer, tiny_model):
    """A generate call that raises CUDA OOM is retried as two halves; greedy completions are those of small batches."""
    from longforge.train.grpo import sample_completions

    model = tiny_model("qwen3").eval()
    prompts = [tokenizer(f"Question {i}: who?")["input_ids"] for i in range(3)]
    reference = sample_completions(model, tokenizer, prompts, 2, 5, do_sample=False, batch_size=1)
    real_generate, sizes = model.generate, []

    def generate(**kwargs):
        sizes.append(len(kwargs["input_ids"]))
        if len(kwargs["input_ids"]) > 2:
            raise torch.cuda.OutOfMemoryError("simulated: batch too large")
        return real_generate(**kwargs)

    model.generate = generate
    got = sample_completions(model, tokenizer, prompts, 2, 5, do_sample=False, batch_size=6)
    assert sizes == [6, 3, 1, 2, 3, 1, 2] and got == reference


def test_reset_reference_follows_a_policy_changed_outside_grpo(tmp_path, tokenizer, tiny_model):
    # the KL reference is a copy taken at construction; after a warm-up it must be re-taken, or β pulls the policy
    # back to the base model (the first H200 KL run measured k3 ≈ 13 nats/token at step 1 for this reason)
    model = tiny_model("qwen3")
    cfg = tiny_cfg(tmp_path, beta=0.1)
    trainer = GRPOTrainer(cfg, model=model, tokenizer=tokenizer, records=short_records(), reward_fn=length_reward)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.01)
    ref = dict(trainer.ref_model.named_parameters())
    assert any(not torch.equal(p, ref[n]) for n, p in trainer.model.named_parameters())
    trainer.reset_reference()
    ref = dict(trainer.ref_model.named_parameters())
    assert all(torch.equal(p, ref[n]) and not ref[n].requires_grad for n, p in trainer.model.named_parameters())
