"""The lm-evaluation-harness adapter (skipped when lm_eval is not installed)."""

import json
import math

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from longforge.eval.generation import greedy_generate  # noqa: E402
from longforge.eval.harness import LongforgeLM  # noqa: E402


@pytest.fixture(scope="module")
def lm(model_dir):
    return LongforgeLM(pretrained=str(model_dir), device="cpu", batch_size=3)


def _request(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def _manual_logprob(lm, context_ids, continuation_ids):
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), -1)
    n = len(context_ids)
    return sum(logprobs[n - 1 + j, t].item() for j, t in enumerate(continuation_ids))


def test_loglikelihood_matches_a_manual_forward_and_is_batch_invariant(lm):
    pairs = [("The grass is", " green."), ("Here we go. There and", " back again"), ("Assignment statements", " are")]
    batched = lm.loglikelihood([_request("loglikelihood", c, x) for c, x in pairs], disable_tqdm=True)
    lm.batch_size = 1
    try:
        single = lm.loglikelihood([_request("loglikelihood", c, x) for c, x in pairs], disable_tqdm=True)
    finally:
        lm.batch_size = 3
    for (context, continuation), (logprob, _), (again, _) in zip(pairs, batched, single):
        ctx_ids = lm.tok_encode(context)
        cont_ids = lm.tok_encode(context + continuation)[len(ctx_ids) :]
        assert logprob == pytest.approx(_manual_logprob(lm, ctx_ids, cont_ids), abs=1e-4)
        assert logprob == pytest.approx(again, abs=1e-4) and logprob < 0


def test_is_greedy_flag(lm):
    context = "The sky is blue. The sun is"
    greedy = greedy_generate(lm.model, lm.tokenizer, [context], 3, add_special_tokens=False)[0]
    ids = lm.tok_encode(context + greedy)[len(lm.tok_encode(context)) :]
    # The fixture is deterministic; if the greedy text stopped re-tokenizing to the same ids, the check below would
    # test nothing, so that is a failure of the set-up rather than a reason to skip.
    assert lm.tok_encode(context) + ids == lm.tok_encode(context + greedy), "greedy text re-tokenizes differently"
    (_, is_greedy), (_, other) = lm.loglikelihood(
        [_request("loglikelihood", context, greedy), _request("loglikelihood", context, " zzzz qqq")], True
    )
    assert is_greedy is True and other is False


def test_loglikelihood_rolling(lm):
    text = "Assignment statements are used to (re)bind names to values and to modify attributes or items."
    ids = lm.tok_encode(text, add_special_tokens=False)
    (whole,) = lm.loglikelihood_rolling([_request("loglikelihood_rolling", text)], disable_tqdm=True)
    assert whole == pytest.approx(_manual_logprob(lm, [lm.prefix_token_id], ids), abs=1e-3)
    lm._max_length = 8  # several disjoint windows: different (less context), still finite, batch-invariant
    try:
        (windowed,) = lm.loglikelihood_rolling([_request("loglikelihood_rolling", text)], disable_tqdm=True)
        lm.batch_size = 1
        (again,) = lm.loglikelihood_rolling([_request("loglikelihood_rolling", text)], disable_tqdm=True)
    finally:
        lm._max_length, lm.batch_size = None, 3
    assert math.isfinite(windowed) and windowed != pytest.approx(whole, abs=1e-3)
    assert windowed == pytest.approx(again, abs=1e-3)


def test_generate_until_stops_and_truncates(lm):
    contexts = ["The grass is green.", "Here we go.", "Assignment"]
    requests = [_request("generate_until", c, {"until": ["e"], "max_gen_toks": 6}) for c in contexts]
    outputs = lm.generate_until(requests, disable_tqdm=True)
    free = [greedy_generate(lm.model, lm.tokenizer, [c], 6, add_special_tokens=False)[0] for c in contexts]
    assert outputs == [text.split("e")[0] for text in free]
    assert all("e" not in out for out in outputs)


def test_simple_evaluate_on_local_tasks(lm, tmp_path, monkeypatch):
    """lm-eval's own pipeline, offline, on two tiny local tasks (multiple choice and generation)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    rows = [
        {"question": "The grass is", "choices": [" green.", " loud."], "answer": 0, "target": "green"},
        {"question": "The sky is", "choices": [" blue.", " square."], "answer": 0, "target": "blue"},
        {"question": "The sun is", "choices": [" yellow.", " wet."], "answer": 0, "target": "yellow"},
    ]
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (tmp_path / "mc.yaml").write_text(
        "task: lf_toy_mc\n" + common + "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    (tmp_path / "gen.yaml").write_text(
        "task: lf_toy_gen\n" + common + "output_type: generate_until\n"
        'doc_to_text: "{{question}}"\ndoc_to_target: "{{target}}"\n'
        'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 4\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n"
    )
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    out = lm_eval.simple_evaluate(model=lm, tasks=["lf_toy_mc", "lf_toy_gen"], task_manager=manager)
    mc, gen = out["results"]["lf_toy_mc"], out["results"]["lf_toy_gen"]
    assert 0.0 <= mc["acc,none"] <= 1.0 and 0.0 <= gen["exact_match,none"] <= 1.0
    assert len(out["samples"]["lf_toy_mc"]) == 3
    # by registry name and an argument string, as `lm_eval --model longforge --model_args pretrained=DIR` does
    by_name = lm_eval.simple_evaluate(
        model="longforge", model_args=f"pretrained={lm.pretrained}", device="cpu", batch_size=2,
        tasks=["lf_toy_mc"], task_manager=manager,
    )  # fmt: skip
    assert by_name["results"]["lf_toy_mc"]["acc,none"] == mc["acc,none"]


def test_registered_under_longforge_and_bad_args(model_dir):
    from lm_eval.api.registry import get_model

    assert get_model("longforge") is LongforgeLM
    with pytest.raises(ValueError, match="pretrained="):
        LongforgeLM()
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        LongforgeLM(pretrained=str(model_dir), device="cpu", batch_size=0)
