"""`jaxevo score`: completions made elsewhere (here by transformers) scored with a checker or the
user's reward functions; scores equal a direct call; bad input fails before anything is written.
The 1,000-completion timing is `benchmarks/score.py` (docs/benchmarks.md)."""

import json
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from jaxevo.checkers import CHECKERS, Checker, get_checker
from jaxevo.cli import main
from jaxevo.commands.score import parse_reward_flags

USER_REWARDS = textwrap.dedent('''
    def mentions_answer(prompts, completions, answer, **columns):
        """1 if the gold answer appears in the completion; no opinion without one."""
        return [None if a is None else float(str(a) in c) for c, a in zip(completions, answer)]

    def brevity(prompts, completions, **columns):
        return [1.0 / (1.0 + len(c)) for c in completions]

    def short(prompts, completions, **columns):
        return [1.0]
''')

ROWS = [
    {"prompt": "2+2?", "answer": "4", "id": "a", "logprobs": [-1.0, -2.0, -3.0],
     "completions": ["The answer is 4.", "The answer is 5.", "4"]},
    {"prompt": "10-3?", "answer": "7", "id": "b", "logprobs": [-1.0],
     "completions": ["So 10 - 3 = 7. The answer is 7."]},
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def user_file(tmp_path):
    p = tmp_path / "user_rewards.py"
    p.write_text(USER_REWARDS)
    return p


def test_checker_scores_keep_every_input_field(tmp_path, capsys):
    data, out = _write(tmp_path / "c.jsonl", ROWS), tmp_path / "scored.jsonl"
    assert main(["score", "--data", str(data), "--checker", "number", "--out", str(out)]) == 0
    got = _read(out)
    assert [{k: v for k, v in r.items() if k != "scores"} for r in got] == ROWS
    # Hand-checked: the number checker wants "The answer is N"; a bare "4" is not that format.
    assert [r["scores"] for r in got] == [[1.0, 0.0, 0.0], [1.0]]
    summary = json.loads((tmp_path / "scored.summary.json").read_text())
    assert summary["records"] == 2 and summary["completions"] == 4 and summary["checker"] == "number"
    assert summary["mean"] == summary["accuracy"] == 0.5 and summary["format_rate"] == 0.75
    assert "accuracy 50.0%, formatted 75.0%" in capsys.readouterr().out


def test_user_reward_functions_by_plugin_and_by_path(tmp_path, user_file):
    rows = ROWS + [{"prompt": "no gold", "id": "c", "completions": ["x"]}]
    data, out = _write(tmp_path / "c.jsonl", rows), tmp_path / "r.jsonl"
    assert main(["score", "--plugin", str(user_file), "--data", str(data), "--out", str(out),
                 "--reward", "user_rewards:mentions_answer=2", "--reward", f"{user_file}:brevity"]) == 0
    got = _read(out)
    for r in got:
        m = [None if r.get("answer") is None else float(r["answer"] in c) for c in r["completions"]]
        b = [1.0 / (1.0 + len(c)) for c in r["completions"]]
        assert r["reward_scores"] == {"user_rewards:mentions_answer": m, f"{user_file}:brevity": b}
        assert r["scores"] == pytest.approx([(0 if x is None else 2 * x) + y for x, y in zip(m, b)])
    s = json.loads((tmp_path / "r.summary.json").read_text())
    assert s["rewards"]["user_rewards:mentions_answer"]["weight"] == 2.0
    assert s["rewards"]["user_rewards:mentions_answer"]["mean"] == 0.75  # 3 of 4; the "no gold" row is None
    # The only reward has no opinion on the row without gold: its score is null.
    assert main(["score", "--plugin", str(user_file), "--data", str(data), "--out", str(out),
                 "--reward", "user_rewards:mentions_answer"]) == 0
    assert _read(out)[2]["scores"] == [None]


def test_bad_input_fails_before_writing(tmp_path, user_file, capsys):
    rows = [ROWS[0], {"prompt": "no answer", "id": "z", "completions": ["The answer is 3."]}]
    data, out = _write(tmp_path / "c.jsonl", rows), tmp_path / "o.jsonl"
    assert main(["score", "--data", str(data), "--checker", "number", "--out", str(out)]) == 2
    assert (f"{data} line 2: checker 'number' needs the field 'answer', which this record does not have"
            in capsys.readouterr().err)
    assert main(["score", "--data", str(data), "--checker", "numbr", "--out", str(out)]) == 2
    assert "unknown checker 'numbr'; known: " in capsys.readouterr().err
    assert main(["score", "--plugin", str(user_file), "--data", str(data), "--out", str(out),
                 "--reward", "user_rewards:short"]) == 2
    assert "reward 'user_rewards:short' returned 1 scores for 4 completions" in capsys.readouterr().err
    _write(data, [{"prompt": "p", "completions": "not a list"}])
    assert main(["score", "--data", str(data), "--checker", "number", "--out", str(out)]) == 2
    assert f"{data} line 1: \"completions\" must be a list of strings" in capsys.readouterr().err
    assert main(["score", "--plugin", "no_such_plugin_mod", "--data", str(data), "--checker", "number",
                 "--out", str(out)]) == 2
    assert "--plugin[0]: cannot import module 'no_such_plugin_mod'" in capsys.readouterr().err
    assert not out.exists()  # nothing was written by any failed run


def test_reward_flag_weights():
    assert parse_reward_flags(["m:f", "m:g=0.5"]) == [{"fn": "m:f"}, {"fn": "m:g", "weight": "0.5"}]


def test_completions_made_by_transformers_score_like_a_direct_call(tmp_path, tiny_model, user_file):
    """Completions sampled by transformers from the tiny model (3 answered by hand, so the checker
    accepts some); `jaxevo score` gives the direct call's scores, checker and reward alike."""
    tok = AutoTokenizer.from_pretrained(tiny_model, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_model, torch_dtype=torch.float32)
    torch.manual_seed(0)
    questions = [f"What is {i} + {i + 1}?" for i in range(8)]
    enc = tok(questions, return_tensors="pt", padding=True)
    gen = model.generate(**enc, do_sample=True, max_new_tokens=10, num_return_sequences=6,
                         pad_token_id=tok.eos_token_id)
    texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    rows = []
    for i, q in enumerate(questions):
        comps = texts[6 * i:6 * i + 6]
        if i < 3:
            comps[0] = f"{i} + {i + 1} = {2 * i + 1}. The answer is {2 * i + 1}."
        rows.append({"prompt": q, "answer": str(2 * i + 1), "id": f"q{i}", "completions": comps})
    data, out = _write(tmp_path / "gen.jsonl", rows), tmp_path / "s.jsonl"
    assert main(["score", "--data", str(data), "--checker", "number", "--out", str(out)]) == 0
    checker = get_checker("number")
    direct = [[checker.check(c, r) for c in r["completions"]] for r in rows]
    assert [r["scores"] for r in _read(out)] == direct and sum(map(sum, direct)) == 3.0
    assert main(["score", "--plugin", str(user_file), "--data", str(data), "--out", str(out),
                 "--reward", "user_rewards:brevity"]) == 0
    brevity = [[1.0 / (1.0 + len(c)) for c in r["completions"]] for r in rows]
    assert [r["scores"] for r in _read(out)] == brevity


def test_a_checker_registered_by_a_plugin(tmp_path):
    CHECKERS.add("test_upper", Checker("test_upper", extract=lambda t, r: t,
                                       check=lambda t, r: float(t == r["answer"].upper()),
                                       well_formatted=lambda t, r: t.isupper()))
    try:
        data, out = _write(tmp_path / "c.jsonl", [{"prompt": "p", "answer": "ab", "completions": ["AB", "ab"]}]), \
            tmp_path / "o.jsonl"
        assert main(["score", "--data", str(data), "--checker", "test_upper", "--out", str(out)]) == 0
        assert _read(out)[0]["scores"] == [1.0, 0.0]
    finally:
        CHECKERS.remove("test_upper")
