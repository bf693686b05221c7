"""The pieces of issue 8's learning demonstration: the F1 reward, the answer-format warm-up, GRPO's time budget,
and scripts/rl_learning.py end to end with a tiny random policy (CPU, seconds)."""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import pytest
import torch

from longforge.data.rl import RLRecord
from longforge.recipes import from_dict, load_recipe
from longforge.train.grpo import (
    GRPOConfig,
    GRPOTrainer,
    WarmupConfig,
    length_batches,
    sft_warmup,
    warmup_batch,
    warmup_examples,
)
from longforge.train.rewards import REWARDS, score, word_f1

ROOT = Path(__file__).resolve().parents[2]


def records(n: int = 8) -> list[RLRecord]:
    return [
        RLRecord(
            f"w{i}",
            "retrieval",
            ["FuzzyNeedle", "KeyChain"][i % 2],
            f"Question: who is number {i}?",
            [f"person {i}"],
            "recall",
            8,
        )
        for i in range(n)
    ]


def test_word_f1_by_hand():
    assert word_f1("Soren Wiopax", "soren wiopax.") == 1.0
    assert word_f1("Soren", "Soren Wiopax") == pytest.approx(2 * 1 * 0.5 / 1.5)  # p = 1, r = 1/2
    # listing candidates: recall stays 1, F1 falls (p = 2/6)
    listed = "Soren Wiopax, Cleo Dral, Hale Viwais"
    assert REWARDS["recall"](listed, ["Soren Wiopax"]) == 1.0
    assert word_f1(listed, "Soren Wiopax") == pytest.approx(2 * (2 / 6) * 1 / (2 / 6 + 1))
    assert word_f1("nobody", "Soren Wiopax") == 0.0 and word_f1("", "") == 1.0 and word_f1("", "x") == 0.0
    record = records(1)[0]
    f1 = score(record, "The answer is: person 0 and person 1", reward_type="f1")
    assert f1 == pytest.approx(2 * 0.4 / 1.4)  # p = 2/5, r = 1


def test_warmup_examples_and_batches(tokenizer):
    recs = records(6)
    prompt_ids = lambda r: tokenizer(r.prompt + "\nThe answer is:")["input_ids"]  # noqa: E731
    examples = warmup_examples(recs, tokenizer, prompt_ids)
    for (ids, start), r in zip(examples, recs):
        assert ids[:start] == prompt_ids(r) and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids[start:-1]) == " " + r.answers[0]
    batch = warmup_batch(examples[:3], pad_id=0)
    w = batch["loss_weight"]
    assert torch.allclose(w.sum(1), torch.ones(3))  # every record weighs the same, whatever its answer length
    for row, (ids, start) in enumerate(examples[:3]):
        assert (w[row, :start] == 0).all() and (w[row, len(ids) :] == 0).all() and (w[row, start : len(ids)] > 0).all()
        assert batch["attention_mask"][row].sum() == len(ids)
    lengths = [5, 9, 3, 40, 7, 7, 12, 2]
    got = length_batches(lengths, 20, random.Random(0))
    assert sorted(i for b in got for i in b) == list(range(8))
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 20 for b in got)
    with pytest.raises(ValueError, match="no warm-up example"):
        warmup_examples(recs, tokenizer, prompt_ids, max_answer_tokens=0)
    with pytest.raises(ValueError, match="target_reward"):
        WarmupConfig(target_reward=2).validate()


def test_sft_warmup_learns_and_stops_at_the_target(tokenizer, tiny_model):
    model = tiny_model("qwen3")
    recs = records(4)
    examples = warmup_examples(recs, tokenizer, lambda r: tokenizer(r.prompt)["input_ids"])
    cfg = WarmupConfig(lr=1e-2, warmup_steps=0, batch_tokens=10_000, max_steps=6, target_reward=0.0, eval_every=100)
    history = sft_warmup(model, examples, cfg, pad_id=tokenizer.pad_token_id, progress=False)
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0], losses  # one batch of 4 records, memorised
    # the dev reward ends the warm-up as soon as it reaches the target
    calls = []
    evaluate = lambda: calls.append(1) or {"eval_reward": 0.1 * len(calls)}  # noqa: E731
    cfg = WarmupConfig(lr=1e-3, batch_tokens=10_000, max_steps=50, target_reward=0.25, eval_every=1)
    history = sft_warmup(tiny_model("qwen3"), examples, cfg, evaluate=evaluate, progress=False)
    evals = [h for h in history if "eval_reward" in h]
    assert [e["step"] for e in evals] == [1, 2, 3] and evals[-1]["eval_reward"] == pytest.approx(0.3)


def test_grpo_time_budget_stops_early_and_still_evaluates(tmp_path, tokenizer, tiny_model):
    cfg = from_dict(
        GRPOConfig,
        {
            "out_dir": str(tmp_path),
            "steps": 50,
            "prompts_per_step": 2,
            "group_size": 2,
            "max_new_tokens": 4,
            "device": "cpu",
            "eval_items": 2,
            "save": False,
            "tensorboard": False,
            "time_budget_s": 1e-3,
            "data": {"eval_fraction": 0.25},
        },
    )
    trainer = GRPOTrainer(
        cfg,
        model=tiny_model("qwen3"),
        tokenizer=tokenizer,
        records=records(12),
        reward_fn=lambda r, c: c.count("e") / max(1, len(c)),
    )
    t0 = time.time()
    history = trainer.fit(progress=False)
    assert len(history) == 1 and time.time() - t0 < 30
    assert len(trainer.eval_history) == 2 and all("eval_seconds" in e for e in trainer.eval_history)
    assert trainer.evaluate(records(2))["step"] == 1  # any records can be scored
    with pytest.raises(ValueError, match="time_budget_s"):
        load_recipe(GRPOConfig, None, ["time_budget_s=-1"])


def test_demo_recipes_load():
    cfg = load_recipe(GRPOConfig, ROOT / "recipes" / "rl" / "learning-demo.yaml")
    # the demonstration: a retrieval dataset and KeyChain at <= 4K tokens, with binary rewards
    assert cfg.data.max_tokens <= 4096 and cfg.data.datasets == ["FuzzyNeedle", "KeyChain"]
    assert 8 <= cfg.group_size <= 16 and set(cfg.reward_overrides.values()) == {"exact_match"}
    warm = load_recipe(WarmupConfig, ROOT / "recipes" / "rl" / "learning-warmup.yaml")
    assert warm.seed != cfg.seed and 0 < warm.target_reward < 0.5


@pytest.mark.slow
def test_rl_learning_script_end_to_end(tmp_path, tokenizer, tiny_model):
    """scripts/rl_learning.py with a tiny random policy and tiny budgets: every stage runs and the outputs exist."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import rl_learning
    finally:
        sys.path.pop(0)
    policy = tmp_path / "policy"
    tiny_model("qwen3").save_pretrained(policy)
    tokenizer.save_pretrained(policy)
    out = tmp_path / "demo"
    rc = rl_learning.main(
        [
            "--out",
            str(out),
            "--minutes",
            "2",
            "--warmup-items",
            "3",
            "--dev-items",
            "1",
            "--workers",
            "1",
            "--no-progress",
            f"policy.path={policy}",
            "data.datasets=[FuzzyNeedle]",
            "data.max_tokens=700",
            "data.items_per_dataset=4",
            "prompts_per_step=1",
            "group_size=2",
            "max_new_tokens=12",
            "eval_items=2",
            "steps=2",
            "eval_every=2",
            "warmup.max_steps=2",
            "warmup.eval_every=2",
            "warmup.batch_tokens=3000",
            "device=cpu",
        ]
    )
    assert rc == 0
    summary = json.loads((out / "grpo_summary.json").read_text())
    demo, warm = summary["demonstration"], summary["warmup"]
    assert summary["steps"] == 2 and len(summary["eval"]) == 2  # before GRPO and after step 2
    assert demo["rise"] == pytest.approx(demo["after"]["eval_reward"] - demo["before"]["eval_reward"])
    assert demo["before"] == summary["eval"][0] and demo["base"]["step"] == 0
    assert warm["steps"] == 2 and warm["examples"] > 0 and warm["final_dev_reward"] is not None
    for name in ("rewards.png", "warmup.png", "summary.md", "recipe.resolved.yaml", "data/heldout.jsonl"):
        assert (out / name).stat().st_size > 0, name
    assert "GRPO rise" in (out / "summary.md").read_text()


def test_truncated_reward_batch_advantages_and_stop_request(tmp_path, tokenizer, tiny_model):
    """The fixes after the first H200 run: completions without EOS get `truncated_reward`, scale_rewards=batch uses
    one std over the step's groups, and `stop_requested` (a SIGTERM in rl_learning.py) ends fit() after the step."""
    cfg = from_dict(
        GRPOConfig,
        {
            "out_dir": str(tmp_path),
            "steps": 5,
            "prompts_per_step": 2,
            "group_size": 4,
            "max_new_tokens": 4,
            "device": "cpu",
            "eval_items": 2,
            "save": False,
            "tensorboard": False,
            "truncated_reward": 0.0,
            "scale_rewards": "batch",
            "data": {"eval_fraction": 0.25},
        },
    )
    trainer = GRPOTrainer(
        cfg, model=tiny_model("qwen3"), tokenizer=tokenizer, records=records(12), reward_fn=lambda r, c: 1.0
    )
    eos = tokenizer.eos_token_id
    assert trainer._rewards(records(1)[0], [([5, 6, eos], False), ([5, 6, 7, 8], True)]) == [1.0, 0.0]
    groups = [{"rewards": [0.0, 0.0, 0.0, 1.0]}, {"rewards": [0.0, 0.1, 0.0, 0.0]}]
    flat = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.1, 0.0, 0.0])
    centered = torch.tensor([-0.25, -0.25, -0.25, 0.75, -0.025, 0.075, -0.025, -0.025])
    assert torch.allclose(trainer.advantages(groups).flatten(), centered / (flat.std() + 1e-4), atol=1e-6)
    trainer.cfg.scale_rewards = "group"  # per group: the 0.1 group gets the same advantages as the 1.0 group
    adv = trainer.advantages(groups)
    assert torch.allclose(adv[0], adv[1][[0, 2, 3, 1]], atol=1e-2) and adv[1, 1] > 1.4
    trainer.cfg.scale_rewards = "batch"
    trainer.on_step = lambda record: setattr(trainer, "stop_requested", True)
    history = trainer.fit(progress=False)
    assert len(history) == 1 and len(trainer.eval_history) == 2  # stopped after step 1, still evaluated at the end
    with pytest.raises(ValueError, match="truncated_reward must be in"):
        load_recipe(GRPOConfig, None, ["truncated_reward=2"])
    assert load_recipe(GRPOConfig, None, ["truncated_reward=null"]).truncated_reward is None


def test_rl_learning_summary_before_grpo_finishes():
    """The summary written after the warm-up (what survives a kill during GRPO) says so instead of a rise."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import rl_learning
    finally:
        sys.path.pop(0)
    e = {"step": 0, "eval_reward": 0.2, "eval_reward/KeyChain": 0.2}
    demo = {
        "policy": "p",
        "device": "cpu",
        "datasets": ["KeyChain"],
        "max_tokens": 700,
        "reward": "f1",
        "eval_items": 1,
        "base": e,
        "before": None,
        "after": None,
        "rise": None,
        "command": "c",
    }
    warm = {
        "steps": 1,
        "seconds": 1.0,
        "examples": 1,
        "seed": 1,
        "lr": 1e-3,
        "final_dev_reward": 0.2,
        "target_reached": True,
        "target_reward": 0.1,
    }
    text = rl_learning.markdown({"demonstration": demo, "warmup": warm})
    assert "GRPO did not finish" in text and "| base policy (no warm-up) | 20.0 | 20.0 |" in text
    assert "after GRPO" not in text and "rewards.png" not in text
    demo.update(
        before=e,
        after={**e, "eval_reward": 0.35},
        rise=0.15,
        grpo_steps=3,
        grpo_seconds=9.0,
        stopped_by_signal=True,
        total_seconds=20.0,
    )
    text = rl_learning.markdown({"demonstration": demo, "warmup": warm})
    assert "GRPO rise: +15.0 points" in text and "cut short by a signal" in text
