"""evaluate / evaluate_niah / greedy_generate: the decoding and scoring pipeline."""

import pytest
import torch

from longforge.eval import evaluate, evaluate_niah
from longforge.eval.generation import greedy_generate

from .conftest import OracleModel, tiny_model


def test_oracle_scores_niah_100_and_others_0(tokenizer):
    oracle = OracleModel(tokenizer)
    tasks = ["niah_single_1", "niah_multivalue", "vt", "qa_1"]
    results = evaluate(oracle, tokenizer, tasks, [2048, 1024], num_samples=3, batch_size=2, progress=False)
    assert results["lengths"] == [1024, 2048] and results["tasks"] == tasks
    for length in ("1024", "2048"):
        assert results["scores"]["niah_single_1"][length] == 100.0
        assert results["scores"]["niah_multivalue"][length] == 100.0
        assert results["scores"]["vt"][length] == 0.0 and results["scores"]["qa_1"][length] == 0.0
        assert results["average"][length] == 50.0
    assert results["overall_average"] == 50.0 and results["effective_length"] is None
    assert len(results["predictions"]) == len(tasks) * 2 * 3
    # each task decodes with RULER's budget, in batches of at most 2
    assert {n for _, n in oracle.calls} == {128, 30, 32}
    assert max(shape[0] for shape, _ in oracle.calls) == 2
    record = next(r for r in results["predictions"] if r["task"] == "niah_multivalue")
    assert sorted(record["pred"].rstrip(".").split(", ")) == sorted(record["outputs"])  # decoded, post-processed
    assert record["length"] <= record["max_seq_length"]


def test_effective_length_when_every_task_passes(tokenizer):
    results = evaluate(OracleModel(tokenizer), tokenizer, ["niah_multikey_2"], [1024, 2048], 2, 4, progress=False)
    assert results["average"] == {"1024": 100.0, "2048": 100.0} and results["effective_length"] == 2048


def test_too_short_length_fails_before_decoding(tokenizer):
    oracle = OracleModel(tokenizer)
    with pytest.raises(ValueError, match="minimum length of task 'cwe'"):
        evaluate(oracle, tokenizer, ["niah_single_1", "cwe"], [512, 4096], 1, progress=False)
    assert oracle.calls == []
    with pytest.raises(ValueError, match="unknown RULER task"):
        evaluate(oracle, tokenizer, ["niah"], [1024], 1, progress=False)
    with pytest.raises(ValueError, match="qa_files keys"):
        evaluate(oracle, tokenizer, ["qa_1"], [1024], 1, qa_files={"squad": "x.json"}, progress=False)


def test_niah_grid(tokenizer):
    results = evaluate_niah(OracleModel(tokenizer), tokenizer, [1024, 2048], [0, 50, 100], 2, 4, progress=False)
    assert results["depths"] == [0.0, 50.0, 100.0]
    assert results["grid"] == {n: {"0": 100.0, "50": 100.0, "100": 100.0} for n in ("1024", "2048")}
    assert results["effective_length"] == 2048 and results["scores"] == {"niah_single_2": results["average"]}
    depths = {r["depth"] for r in results["predictions"]}
    assert depths == {0.0, 50.0, 100.0} and len(results["predictions"]) == 2 * 3 * 2
    with pytest.raises(ValueError, match="percentages in"):
        evaluate_niah(OracleModel(tokenizer), tokenizer, [1024], [120], 1, progress=False)


def test_batched_left_padded_generation_matches_one_by_one(tokenizer):
    model = tiny_model(len(tokenizer))
    prompts = ["The grass is green.", "Here we go. There and back again, and again and again.", "Assignment"]
    batched = greedy_generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    single = [greedy_generate(model, tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single
    for prompt, text in zip(prompts, single):  # the new tokens only, as model.generate continues the prompt
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
        assert text == tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    with pytest.raises(ValueError, match="batch_size"):
        greedy_generate(model, tokenizer, prompts, 4, batch_size=0)
