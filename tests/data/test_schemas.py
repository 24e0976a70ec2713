"""Common schemas out of the box (GSM8K, MATH, multiple choice, code), detected or named, with the
record's checker; chat `messages` and per-record system turns, rendered by the model's chat
template the same way for sampling and for training (checked against transformers)."""

import json

import pytest

from jaxevo.commands.generate import read_prompts
from jaxevo.data import load_source
from jaxevo.data.records import chat_of
from jaxevo.data.schemas import last_boxed
from jaxevo.errors import ConfigError
from jaxevo.evolve.select import build_sft
from jaxevo.tokenizer import chat_prompt
from jaxevo.train.batches import format_context
from jaxevo.train.objectives import OBJECTIVES
from jaxevo.weights.embedded import resolve_embedded
from jaxevo.weights.load import load_tokenizer


def _jsonl(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


def _load(tmp_path, rows, **spec):
    return load_source({"type": "jsonl", "path": _jsonl(tmp_path, rows), **spec}).to_list()


def test_gsm8k_rows_are_detected(tmp_path):
    (r,) = _load(tmp_path, [{"question": "Tom has 3 apples and buys 4. How many?",
                             "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}])
    assert r["answer"] == "7" and r["solution"].endswith("#### 7") and r["checker"] == "number"
    assert r["prompt"].startswith("Tom has 3 apples") and "The answer is N." in r["prompt"]


def test_math_rows_take_the_last_boxed_answer_whole(tmp_path):
    rows = [{"problem": "Half of 1?", "solution": "First \\boxed{2} no, it is $\\boxed{\\frac{1}{2}}$."},
            {"problem": "x?", "solution": "... \\boxed{x^{2}+1}", "answer": "x^2+1"},  # MATH-500: answer wins
            {"problem": "Interval?", "solution": "So \\boxed{\\left[0, \\frac{\\pi}{2}\\right)}."}]
    a, b, c = _load(tmp_path, rows)
    assert (a["answer"], b["answer"], c["answer"]) == ("\\frac{1}{2}", "x^2+1", "\\left[0, \\frac{\\pi}{2}\\right)")
    assert a["checker"] == "math" and "\\boxed{}" in a["prompt"] and a["prompt"].startswith("Half of 1?")
    assert last_boxed("\\boxed{\\text{5 cm}}") == "\\text{5 cm}" and last_boxed("no box") is None
    assert last_boxed("\\boxed{1") is None  # unbalanced
    with pytest.raises(ConfigError, match=r"d\.jsonl line 1: math schema: the solution has no \\boxed"):
        _load(tmp_path, [{"problem": "p", "solution": "it is 3"}])


def test_multiple_choice_answers_in_every_usual_form(tmp_path):
    rows = [{"question": "2+2?", "choices": ["3", "4", "5"], "answer": "B"},
            {"question": "Sky?", "choices": ["red", "blue"], "answer": 1},  # MMLU: an index
            {"question": "Cat?", "choices": ["dog", "cat"], "answer": "cat"},  # the option's text
            {"question": "ARC?", "choices": {"text": ["w", "x", "y", "z"], "label": ["1", "2", "3", "4"]},
             "answerKey": "3"},
            {"question": "lower?", "choices": ["a", "b"], "answer": "a"}]  # "a" is the text of option A
    recs = _load(tmp_path, rows)
    assert [r["answer"] for r in recs] == ["B", "B", "B", "C", "A"]
    assert recs[3]["choices"] == ["w", "x", "y", "z"] and all(r["checker"] == "choice" for r in recs)
    assert recs[0]["prompt"] == "2+2?\nA. 3\nB. 4\nC. 5\nAnswer with the letter of the correct option, " \
                                "e.g. 'The answer is (A)'."
    with pytest.raises(ConfigError, match=r"d\.jsonl line 1: choice schema: answer 'E' is not a letter"):
        _load(tmp_path, [{"question": "q", "choices": ["a", "b"], "answer": "E"}])
    with pytest.raises(ConfigError, match=r"d\.jsonl line 1: choice schema needs the field 'answer'"):
        _load(tmp_path, [{"question": "q", "choices": ["a", "b"]}])


def test_code_rows_humaneval_and_mbpp(tmp_path):
    he = {"task_id": "HumanEval/0", "prompt": "def add(a, b):\n    \"\"\"Sum.\"\"\"\n",
          "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n", "entry_point": "add"}
    mbpp = {"text": "Write a function to add two numbers.", "test_list": ["assert add(1, 2) == 3"],
            "test_setup_code": ""}
    a, b = _load(tmp_path, [he, mbpp])
    assert a["prompt"] == he["prompt"] and a["test"] == he["test"] and a["entry_point"] == "add"
    assert a["checker"] == b["checker"] == "code"
    assert b["test"] == "assert add(1, 2) == 3" and "assert add(1, 2) == 3" in b["prompt"]


def test_schema_and_checker_keys(tmp_path):
    rows = [{"question": "2+2?", "answer": "4"}]  # no "####": nothing detected, and no prompt
    with pytest.raises(ConfigError, match=r"field 'prompt' not found; available fields: answer, question"):
        _load(tmp_path, rows)
    (r,) = _load(tmp_path, rows, prompt_field="question", checker="normalized")
    assert r["checker"] == "normalized" and r["prompt"] == "2+2?"
    (r,) = _load(tmp_path, [{"question": "q", "choices": ["a", "b"], "answer": "A", "checker": "exact"}])
    assert r["checker"] == "exact"  # the row's own checker wins over the schema's
    with pytest.raises(ConfigError, match=r"d\.jsonl line 1: unknown checker 'mine'; known: choice"):
        _load(tmp_path, [{"question": "q", "choices": ["a", "b"], "answer": "A", "checker": "mine"}])
    (r,) = _load(tmp_path, [{"prompt": "p", "test": "t"}], schema="none")
    assert "checker" not in r
    with pytest.raises(ConfigError, match=r"unknown schema 'gsm9k'; known: choice, code, gsm8k, math, none"):
        _load(tmp_path, rows, schema="gsm9k")
    with pytest.raises(ConfigError, match=r"line 1: the math schema needs the field\(s\) problem"):
        _load(tmp_path, rows, schema="math")


def test_hf_source_uses_the_same_schemas(tmp_path):
    path = _jsonl(tmp_path, [{"question": "q", "choices": ["a", "b"], "answer": 0}], "mc.jsonl")
    (r,) = load_source({"type": "hf", "path": path}).to_list()
    assert r["answer"] == "A" and r["checker"] == "choice"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(resolve_embedded("smollm2-135m-instruct"))


def test_chat_messages_and_system_turns_render_as_transformers_does(tmp_path, tok):
    chat = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}]
    a, b, c = _load(tmp_path, [{"messages": chat, "answer": "4"}, {"prompt": "3+3?", "system": "Be exact."},
                               {"prompt": "1+1?"}], system="Default system.")
    assert a["prompt"] == "2+2?" and a["messages"] == chat and "system" not in a
    assert b["system"] == "Be exact." and c["system"] == "Default system."  # the row's own wins
    ref = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    ref_b = tok.apply_chat_template([{"role": "system", "content": "Be exact."},
                                     {"role": "user", "content": "3+3?"}], add_generation_prompt=True, tokenize=False)
    # Sampling renders chat_of(record); training the SFT record's context: the same text.
    assert chat_prompt(tok, chat_of(a)) == ref and chat_prompt(tok, chat_of(b)) == ref_b
    group = {"item": a, "prompt": a["prompt"],
             "responses": [{"text": "The answer is 4.", "score": 1.0, "kind": "sample", "finish": "stop"}]}
    (sft,) = build_sft([group])
    _, context_fn, _ = OBJECTIVES["sft"].views[0]
    assert sft["messages"] == chat and format_context(tok, context_fn(sft, {}), True, None) == ref
    with pytest.raises(ConfigError, match=r"records with chat `messages` need data\.chat_template: true"):
        format_context(tok, context_fn(sft, {}), False, None)


@pytest.mark.parametrize("messages, message", [
    ([], r"\"messages\" must be a non-empty list"),
    ([{"role": "user"}], r"\"messages\" must be a non-empty list"),
    ([{"role": "bot", "content": "x"}], r"message role\(s\) \['bot'\]"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
     r"the last message must be the user's"),
])
def test_bad_messages_name_the_file_and_line(tmp_path, messages, message):
    with pytest.raises(ConfigError, match=r"d\.jsonl line 2: " + message):
        _load(tmp_path, [{"prompt": "ok"}, {"messages": messages}])


def test_generate_reads_chat_rows(tmp_path):
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    path = _jsonl(tmp_path, [{"messages": chat, "id": 1}, {"prompt": "p", "system": "S2"}])
    rows = read_prompts(path)
    assert [chat_of(r) for r in rows] == [
        chat, [{"role": "system", "content": "S2"}, {"role": "user", "content": "p"}]]
    bad = _jsonl(tmp_path, [{"messages": [{"role": "assistant", "content": "x"}]}], "bad.jsonl")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1: the last message must be the user's"):
        read_prompts(bad)
