"""Rewards on hand-made cases, the registry, and the LLM judge (a stub local model; a loopback HTTP endpoint)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from longforge.data.rl import RLRecord
from longforge.train.rewards import (
    REWARDS,
    LLMJudge,
    exact_match,
    extract_answer,
    normalize_answer,
    numbers_equal,
    reward_fn,
    score,
    two_way_substring,
    word_recall,
)


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("Paris", "Paris"),
        ("<think>maybe Rome</think> Paris", "Paris"),
        ("<think>a</think>x<think>b</think>  The answer is: Paris.", "Paris."),
        ("Let me see. The answer is Rome. No wait, the final answer is **Paris**", "Paris**"),
        ("THE ANSWER IS: 42", "42"),
        ("<think>still thinking, the answer is Rome", ""),  # an unfinished thought has no answer
        ("  plain text  ", "plain text"),
    ],
)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


def test_normalize_and_metrics():
    assert normalize_answer("  The  Quick, brown FOX! ") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"
    assert word_recall("Alma Brest lives here", "alma brest") == 1.0
    assert word_recall("Alma", "Alma Brest") == 0.5
    assert word_recall("brest brest", "Brest Brest Brest") == pytest.approx(2 / 3)  # counted with multiplicity
    assert word_recall("anything", "the") == 0.0 and word_recall("", "the") == 1.0
    assert two_way_substring("The Meltwater River", "meltwater") == 1.0
    assert two_way_substring("Meltwater", "the Meltwater River") == 1.0
    assert two_way_substring("Melt", "River") == 0.0 and two_way_substring("", "River") == 0.0
    assert exact_match("the Meltwater.", "Meltwater") == 1.0
    assert exact_match("Meltwater River", "Meltwater") == 0.0


@pytest.mark.parametrize(
    "prediction, gold, equal",
    [
        ("1,000", "1000", True),
        ("1000.0", "1000", True),
        ("0.5", "1/2", True),
        ("\\frac{1}{2}", "0.5", True),
        ("about 3827 dollars", "3827", True),
        ("3827 or 3828", "3827", False),  # listing candidates does not score
        ("3828", "3827", False),
        ("x", "3827", False),
        ("5", "five", False),
    ],
)
def test_numbers_equal(prediction, gold, equal):
    assert numbers_equal(prediction, gold) is equal


def test_registry_and_score():
    assert set(REWARDS) == {"recall", "f1", "two_way_substring", "exact_match", "llm_judge"}
    with pytest.raises(ValueError, match="unknown reward_type 'bleu'; known: recall"):
        reward_fn("bleu")
    rec = RLRecord("x", "retrieval", "FuzzyNeedle", "…Question: Who?", ["Alma Brest", "A. Brest"], "recall", 5, {})
    assert score(rec, "<think>hmm</think>The answer is Alma.") == 0.5
    assert score(rec, "alma brest") == 1.0
    assert score(rec.to_dict(), "A Brest", reward_type="exact_match") == 1.0
    assert score(rec, "Alma Brest and Bob Stone", reward_type="two_way_substring") == 1.0
    math = RLRecord("m", "reasoning", "LongMath", "…Question: How many?", ["3827"], "llm_judge", 5, {})
    assert score(math, "The answer is: 3,827") == 1.0
    with pytest.warns(UserWarning, match="without a configured judge"):
        import longforge.train.rewards as rewards

        rewards._warned_no_judge = False
        assert score(math, "The answer is: three thousand") == 0.0


class _StubLM(torch.nn.Module):
    """Generates a fixed continuation: a stand-in judge model."""

    def __init__(self, tokenizer, reply: str):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.reply = tokenizer(reply, add_special_tokens=False)["input_ids"]
        self.prompts: list[torch.Tensor] = []

    def generate(self, input_ids, attention_mask, **kw):
        self.prompts.append(input_ids)
        return torch.cat([input_ids, torch.tensor([self.reply])], dim=1)


def test_local_judge(tokenizer):
    yes = LLMJudge(model=(_StubLM(tokenizer, " YES"), tokenizer))
    no = LLMJudge(model=(_StubLM(tokenizer, " NO"), tokenizer))
    rec = RLRecord(
        "c", "multi_evidence", "CrossEntity", "…Question: Who was youngest?", ["Alma Brest"], "llm_judge", 5, {}
    )
    assert score(rec, "Ms Brest, Alma", judge=yes) == 1.0 and yes.calls == 1
    assert score(rec, "Ms Brest, Alma", judge=no) == 0.0
    assert score(rec, "alma brest", judge=no) == 1.0 and no.calls == 1  # exact matches never ask the judge
    prompt = tokenizer.decode(yes._model.prompts[0][0])
    assert "Who was youngest?" in prompt and "Alma Brest" in prompt and "Ms Brest, Alma" in prompt
    with pytest.raises(ValueError, match="exactly one of model"):
        LLMJudge()


def test_endpoint_judge(monkeypatch):
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append((self.path, self.headers.get("Authorization"), body))
            verdict = "YES" if "42" in body["messages"][0]["content"].split("Answer to grade:")[1] else "NO"
            data = json.dumps({"choices": [{"message": {"content": verdict}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("TEST_JUDGE_KEY", "secret")
        judge = LLMJudge(url=f"http://127.0.0.1:{server.server_port}/v1", model_name="j", api_key_env="TEST_JUDGE_KEY")
        rec = RLRecord("m", "reasoning", "LongMath", "Question: 6 × 7?", ["forty-two"], "llm_judge", 5, {})
        assert score(rec, "It is 42", judge=judge) == 1.0
        assert score(rec, "It is 41", judge=judge) == 0.0
        path, auth, body = requests[0]
        assert path == "/v1/chat/completions" and auth == "Bearer secret"
        assert body["model"] == "j" and body["temperature"] == 0
        dead = LLMJudge(url="http://127.0.0.1:9/v1", timeout=2)
        with pytest.raises(RuntimeError, match="LLM judge at http://127.0.0.1:9/v1/chat/completions failed"):
            dead("q", "a", "b")
    finally:
        server.shutdown()
        server.server_close()
