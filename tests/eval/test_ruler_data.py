"""RULER sample generation: lengths, determinism, gold answers recoverable from the context, RULER's formats."""

import copy
import json
import re
from collections import Counter

import pytest

from longforge.eval import haystack
from longforge.eval.qa import read_hotpotqa, read_squad, synthetic_hotpotqa, synthetic_squad
from longforge.eval.ruler import DEPTHS, RULER_LITE_TASKS, RULER_TASKS, TASKS, generate_samples

LENGTH = 2048

# RULER's table (reference §4.1): tokens to generate and metric per task.
RULER_GEN_TOKENS = {"niah": 128, "vt": 30, "cwe": 120, "fwe": 50, "qa": 32}


def _tokens(tokenizer, sample):
    return len(tokenizer(sample["input"] + sample["answer_prefix"])["input_ids"])


@pytest.fixture(scope="module")
def samples(tokenizer):
    return {task: generate_samples(task, tokenizer, LENGTH, 3, seed=0) for task in RULER_TASKS}


def test_thirteen_tasks_and_lite_subset():
    assert len(RULER_TASKS) == 13 and set(RULER_LITE_TASKS) < set(RULER_TASKS)


@pytest.mark.parametrize("task", RULER_TASKS)
def test_samples_fill_budget_never_exceed_and_hold_gold(task, samples, tokenizer):
    for sample in samples[task]:
        family = task.split("_")[0]
        assert sample["tokens_to_generate"] == RULER_GEN_TOKENS[family]
        measured = _tokens(tokenizer, sample) + sample["tokens_to_generate"]
        assert sample["length"] == measured
        assert 0.9 * LENGTH <= measured <= LENGTH, (task, measured)
        assert sample["outputs"] and all(isinstance(o, str) and o for o in sample["outputs"])
        if family == "qa":  # scored with string_match_part: one gold answer in the context suffices
            assert any(o in sample["input"] for o in sample["outputs"])
        else:
            assert all(o in sample["input"] for o in sample["outputs"]), task


@pytest.mark.parametrize("task", ["niah_single_1", "niah_multiquery", "vt", "cwe", "fwe", "qa_2"])
def test_deterministic_per_seed(task, samples, tokenizer):
    again = generate_samples(task, tokenizer, LENGTH, 3, seed=0)
    assert again == samples[task]
    other = generate_samples(task, tokenizer, LENGTH, 3, seed=1)
    assert [s["input"] for s in other] != [s["input"] for s in samples[task]]


def _needles(text):
    return re.findall(r"One of the special magic (\w+) for (.+?) is: ([\w-]+)\.", text)


def test_niah_single_prompt_is_singular_and_needle_formats(samples):
    sample = samples["niah_single_1"][0]
    (value,) = sample["outputs"]
    assert re.fullmatch(r"\d{7}", value)
    assert sample["input"].startswith("A special magic number is hidden within the following text.")
    assert "I will quiz you about the number afterwards." in sample["input"]
    (needle,) = _needles(sample["input"])
    assert needle[0] == "numbers" and needle[2] == value  # the needle itself keeps RULER's plural
    assert sample["input"].endswith(f"What is the special magic number for {needle[1]} mentioned in the provided text?")
    assert sample["answer_prefix"] == f" The special magic number for {needle[1]} mentioned in the provided text is"
    adjectives, nouns = haystack.key_word_parts()
    assert any(needle[1] == f"{a}-{needle[1][len(a) + 1 :]}" and needle[1][len(a) + 1 :] in nouns for a in adjectives)
    lines = sample["input"].split("\n")[1:-1]  # the noise haystack: one line per repetition
    assert sum(line == haystack.NOISE_HAYSTACK for line in lines) == len(lines) - 1


def test_uuid_needles(samples):
    uuid4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    assert re.fullmatch(uuid4, samples["niah_single_3"][0]["outputs"][0])
    sample = samples["niah_multikey_3"][0]
    needles = _needles(sample["input"])
    assert len(needles) > 10 and all(re.fullmatch(uuid4, k) and re.fullmatch(uuid4, v) for _, k, v in needles)
    # the needle haystack: every filler line is a distractor needle; exactly one line has the queried key
    key = re.search(r"for (\S+) mentioned", sample["answer_prefix"]).group(1)
    assert [v for _, k, v in needles if k == key] == sample["outputs"]


def test_multi_needle_variants(samples):
    multikey = samples["niah_multikey_1"][0]
    assert len(_needles(multikey["input"])) == 4 and len(multikey["outputs"]) == 1
    multivalue = samples["niah_multivalue"][0]
    assert multivalue["input"].startswith("Some special magic numbers are hidden")
    (key,) = {k for _, k, _ in _needles(multivalue["input"])}
    assert sorted(v for _, _, v in _needles(multivalue["input"])) == sorted(multivalue["outputs"])
    assert multivalue["answer_prefix"] == f" The special magic numbers for {key} mentioned in the provided text are"
    multiquery = samples["niah_multiquery"][0]
    keys = re.search(r"numbers for (.+) mentioned", multiquery["answer_prefix"]).group(1)
    assert re.fullmatch(r"\S+, \S+, \S+, and \S+", keys)
    values = dict((k, v) for _, k, v in _needles(multiquery["input"]))
    assert [values[k] for k in re.split(r", and |, ", keys)] == multiquery["outputs"]


def test_essay_needles_sit_at_sampled_depths(samples):
    for task in ("niah_single_2", "niah_multikey_1"):
        for sample in samples[task]:
            assert set(sample["needle_depths"]) <= set(DEPTHS)
            assert len(sample["needle_depths"]) == len(_needles(sample["input"]))


def test_fixed_depths_put_the_needle_at_the_start_or_end(tokenizer):
    (start,) = generate_samples("niah_single_2", tokenizer, 1024, 1, needle_depths=[0])
    (end,) = generate_samples("niah_single_2", tokenizer, 1024, 1, needle_depths=[100])
    # RULER joins the (empty) text before a depth-0 needle with a space: the context starts " One of ..."
    assert start["input"].split("\n")[1].startswith(" One of the special magic numbers")
    context = end["input"].split("\n")[1]
    assert context.endswith(f"is: {end['outputs'][0]}. ")  # and the (empty) text after it: a trailing space
    with pytest.raises(ValueError, match="needle_depths"):
        generate_samples("niah_single_1", tokenizer, 1024, 1, needle_depths=[50])


def test_vt_chain_resolves_to_gold_and_has_icl_example(samples):
    for sample in samples["vt"]:
        text = sample["input"]
        assert text.startswith("Memorize and track") and text.count("Memorize and track") == 2
        icl, main = text.split("\n\nMemorize and track")  # one ICL example, a blank line, then the question
        value = re.search(r"assigned the value (\d{5}) in the text above\.$", text).group(1)
        assert sample["answer_prefix"] == (
            " Answer: According to the chain(s) of variable assignment in the text above, "
            f"5 variables are assgined the value {value}, they are: "
        )
        found, frontier = [], {value}
        assignments = re.findall(r"VAR (\w+) = (VAR \w+|\d+)", main)
        while frontier:
            frontier = {name for name, source in assignments if source.removeprefix("VAR ") in frontier}
            found += sorted(frontier)
        assert sorted(found) == sorted(sample["outputs"]) and len(found) == 5
        assert all(re.fullmatch(r"[A-Z]{5}", name) for name in found)
        icl_answer = re.search(r"they are:  ((?:[A-Z]{3} ?){5})\n", text).group(1).split()
        assert len(icl_answer) == 5 and not set(icl_answer) & set(found)


def _numbered(text):
    return re.findall(r"\d+\. (\S+)", text)


def test_cwe_gold_are_the_most_common_words(samples, tokenizer):
    for sample in samples["cwe"]:
        shot, main = sample["input"].rsplit("Below is a numbered list", 1)
        counts = Counter(_numbered(main.split("\nQuestion:")[0]))
        top = [w for w, _ in counts.most_common(10)]
        assert sorted(top) == sorted(sample["outputs"])
        assert {counts[w] for w in sample["outputs"]} == {6}  # below 4096 tokens: 6x common, 1x uncommon
        assert set(counts.values()) == {6, 1}
        assert "Answer: The top 10 words that appear most often in the list are: 1. " in shot
    (long,) = generate_samples("cwe", tokenizer, 4096, 1)
    counts = Counter(_numbered(long["input"].rsplit("Below is a numbered list", 1)[1].split("\nQuestion:")[0]))
    assert {counts[w] for w in long["outputs"]} == {30} and set(counts.values()) == {30, 3}


def test_fwe_gold_are_the_three_most_frequent_coded_words(samples):
    for sample in samples["fwe"]:
        context = sample["input"].split("coded words. ", 1)[1].split("\nQuestion:")[0]
        counts = Counter(context.split())
        ranked = [w for w, _ in counts.most_common()]
        assert ranked[0] == "..."
        assert ranked[1:4] == sample["outputs"]
        assert counts[ranked[3]] > counts[ranked[4]]
        assert all(re.fullmatch(r"[a-z]{6}", w) for w in ranked[1:])


def test_qa_documents_and_question(samples):
    sample = samples["qa_1"][0]
    assert sample["qa_source"] == "synthetic-squad"
    documents = re.findall(r"Document (\d+):\n", sample["input"])
    assert [int(d) for d in documents] == list(range(1, len(documents) + 1)) and len(documents) > 3
    assert re.search(r"\n\nQuestion: .+\?$", sample["input"]) and sample["answer_prefix"] == " Answer:"


def test_synthetic_qa_formats_parse_like_the_real_files():
    squad = synthetic_squad(4)
    qas, docs = read_squad(squad)
    impossible = sum(qa["is_impossible"] for a in squad["data"] for p in a["paragraphs"] for qa in p["qas"])
    total = sum(len(p["qas"]) for a in squad["data"] for p in a["paragraphs"])
    assert impossible == 4 and len(qas) == total - impossible and len(docs) == 16
    for qa in qas:
        assert qa["outputs"][0] in docs[qa["context"][0]] and len(qa["more_context"]) == 3
    hotpot = synthetic_hotpotqa(3)
    qas, docs = read_hotpotqa(hotpot)
    assert len(docs) == 30 and all(len(qa["context"]) == 10 for qa in qas)
    for qa, item in zip(qas, hotpot):
        assert any(qa["outputs"][0] in docs[i] for i in qa["context"])
        assert item["question"].startswith("In which city was the director of ")
    assert synthetic_squad(8)["data"][:4] == squad["data"]  # bigger pools extend smaller ones


def test_qa_from_user_file(tmp_path, tokenizer):
    data = copy.deepcopy(synthetic_squad(2))
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    samples = generate_samples("qa_1", tokenizer, 2048, 2, qa_file=path)
    assert samples[0]["qa_source"] == str(path)
    first_question = data["data"][0]["paragraphs"][0]["qas"][0]
    assert first_question["question"] in samples[0]["input"]
    # 8 documents in all: they fit, so every sample holds all of them (RULER uses the whole pool)
    assert all(len(re.findall(r"Document \d+:\n", s["input"])) == 8 for s in samples)


def test_chat_template_wraps_and_counts(tokenizer):
    chat = copy.deepcopy(tokenizer)
    chat.chat_template = "{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}<|assistant|>"
    (sample,) = generate_samples("niah_single_1", chat, 1024, 1, chat_template=True)
    assert sample["input"].startswith("<|user|>A special magic number") and sample["input"].endswith("<|assistant|>")
    assert sample["length"] == len(chat(sample["input"] + sample["answer_prefix"])["input_ids"]) + 128 <= 1024
    with pytest.raises(ValueError, match="chat template"):
        generate_samples("niah_single_1", tokenizer, 1024, 1, chat_template=True)


def test_essay_haystack_repeats_like_ruler():
    words = haystack.prose_words()
    assert len(words) > 40_000
    from longforge.eval.ruler import _essay_words

    long = _essay_words(len(words) + 5).split(" ")
    assert long[len(words) :] == list(words[:5])
    assert haystack.haystack_info()["sha256"] == haystack.haystack_info()["sha256"]


def test_cwe_fallback_vocabulary_is_large_and_distinct():
    words = haystack.extended_words(20_000)
    assert len(words) >= 20_000 and len(set(words)) == len(words)
    assert words[: len(haystack.common_words())] == list(haystack.common_words())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(task="niah_single_9"), "unknown RULER task"),
        (dict(task="vt", max_seq_length=300), "below the minimum length of task 'vt'"),
        (dict(task="cwe", max_seq_length=512), "below the minimum length of task 'cwe'"),
        (dict(task="qa_1", qa_file="/nonexistent/squad.json"), "squad QA file not found"),
        (dict(task="qa_1", num_samples=10_000, qa_file="SQUAD"), "answerable questions"),
        (dict(task="niah_single_1", max_seq_length=0), "max_seq_length must be a positive integer"),
    ],
)
def test_bad_input_errors_name_the_problem(kwargs, message, tokenizer, tmp_path):
    if kwargs.get("qa_file") == "SQUAD":
        kwargs["qa_file"] = tmp_path / "squad.json"
        kwargs["qa_file"].write_text(json.dumps(synthetic_squad(1)))
    args = dict(tokenizer=tokenizer, max_seq_length=1024, num_samples=1) | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_samples(**args)


def test_malformed_qa_file_and_tokenizer_without_eos(tmp_path, tokenizer):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"no_paragraphs": 1}]}')
    with pytest.raises(ValueError, match="not a SQuAD v2.0 JSON file"):
        generate_samples("qa_1", tokenizer, 1024, 1, qa_file=bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        generate_samples("qa_2", tokenizer, 2048, 1, qa_file=bad)
    no_eos = copy.deepcopy(tokenizer)
    no_eos.eos_token = None
    with pytest.raises(ValueError, match="no EOS token"):
        generate_samples("niah_single_1", no_eos, 1024, 1)


def test_task_table_matches_ruler():
    families = {name: task.family for name, task in TASKS.items()}
    assert families["vt"] == "variable_tracking" and families["qa_2"] == "qa"
    assert TASKS["niah_multikey_2"].args["type_haystack"] == "needle"
    assert TASKS["cwe"].args == dict(freq_cw=30, freq_ucw=3, num_cw=10, num_fewshot=1)
    assert {n: TASKS[n].template.metric for n in ("qa_1", "qa_2", "vt")} == {
        "qa_1": "string_match_part",
        "qa_2": "string_match_part",
        "vt": "string_match_all",
    }
