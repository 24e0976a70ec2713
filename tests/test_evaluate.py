"""The evaluation harness (pass@k, majority@k, self-refinement, probes, Wilson CI) and `jaxevo eval`."""

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from jaxevo.evaluate import evaluate
from jaxevo.stats import wilson


class ScriptedSampler:
    """Returns scripted completions; records what it was asked (the harness logic is under test)."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def generate(self, prompts, sp, chat=True, progress=None):
        self.calls.append((list(prompts), sp))
        return [[SimpleNamespace(text=t, finish_reason="eos") for t in self.script(p, sp)] for p in prompts]


ITEMS = [{"id": "a", "prompt": "2+2?", "answer": "4"}, {"id": "b", "prompt": "3+3?", "answer": "6"}]


def test_greedy_accuracy_counts_only_strict_answers():
    s = ScriptedSampler(lambda p, sp: ["The answer is 4."] if p == "2+2?" else ["3+3 is 6"])
    rows, summary = evaluate(s, ITEMS)
    assert [r["correct"] for r in rows] == [True, False]
    assert summary["accuracy"] == 0.5 and summary["formatted"] == 0.5
    assert s.calls[0][1].temperature == 0.0


def test_pass_and_majority_at_k():
    answers = {"2+2?": ["The answer is 5.", "The answer is 4.", "The answer is 4."],
               "3+3?": ["The answer is 7.", "The answer is 7.", "The answer is 6."]}
    s = ScriptedSampler(lambda p, sp: answers[p])
    rows, summary = evaluate(s, ITEMS, k=3, temperature=0.8)
    assert summary["accuracy"] == 0.0  # the first sample of each is wrong
    assert summary["pass@3"] == 1.0 and summary["majority@3"] == 0.5
    assert rows[0]["majority"] == "4"


def test_online_self_refinement_is_reported_beside_the_plain_answer():
    def script(p, sp):
        if p.startswith("2+2?\n\nHere is a previous answer"):
            return ["Let me fix it. The answer is 4."]
        return ["The answer is 5."] if p == "2+2?" else ["The answer is 6."]
    s = ScriptedSampler(script)
    rows, summary = evaluate(s, ITEMS, self_refine=True)
    assert summary["accuracy"] == 0.5 and summary["refined/accuracy"] == 1.0
    assert rows[0]["refined_correct"] and not rows[0]["correct"]
    assert "The answer is 5." in s.calls[1][0][0]  # the refine prompt carries the first answer


def test_probe_items_are_checked_as_facts():
    item = {"prompt": "What is my dog called?", "answer": "Rex", "kind": "probe", "distractors": ["Max"]}
    s = ScriptedSampler(lambda p, sp: ["Your dog is called Rex."])
    assert evaluate(s, [item])[1]["accuracy"] == 1.0
    s = ScriptedSampler(lambda p, sp: ["Rex or Max, I think."])
    assert evaluate(s, [item])[1]["accuracy"] == 0.0


def test_mixed_items_report_accuracy_and_format_per_kind():
    """Dialogue turns mix arithmetic questions ('The answer is N.') and memory probes (one short
    sentence): each is judged by its own format, and the summary splits accuracy by kind."""
    probe = {"prompt": "What is my dog called?", "answer": "Rex", "kind": "probe", "distractors": []}
    question = {"prompt": "2+2?", "answer": "4", "kind": "question"}
    s = ScriptedSampler(lambda p, sp: ["Your dog is called Rex."] if "dog" in p else ["It is 5."])
    rows, summary = evaluate(s, [probe, question, dict(question, prompt="3+1?")])
    assert [r["formatted"] for r in rows] == [True, False, False]
    assert summary["by_kind"]["probe"]["accuracy"] == 1.0 and summary["by_kind"]["question"]["n"] == 2
    assert "by_kind" not in evaluate(s, ITEMS)[1]  # one kind: nothing to split


def test_wilson_interval():
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and 0.1 < hi < 0.2
    lo, hi = wilson(10, 20)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * (0.5 - lo))


def test_eval_command_on_a_jsonl_file(tmp_path, tiny_model):
    data = tmp_path / "items.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"What is {i}+1?", "answer": str(i + 1)}) for i in range(3)))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "jaxevo.cli", "eval", "--model", tiny_model, "--data", str(data),
                        "--max-new-tokens", "4", "--out", str(out), "--dtype", "float32"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "accuracy 0.0% (0/3" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 3 and len((out / "results.jsonl").read_text().splitlines()) == 3
    # the CPU paths the sampler ran on, measured once per machine or read back
    (dots,) = [v for k, v in summary["cpu_paths"].items() if k.startswith("sampler dots and weights (E32 F64 ")]
    assert re.fullmatch(r"(xla|ynnpack):float32 \((measured|cached)\)", dots)


def test_eval_command_rejects_items_without_answers(tmp_path, tiny_model):
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps({"prompt": "hi"}) + "\n")
    r = subprocess.run([sys.executable, "-m", "jaxevo.cli", "eval", "--model", tiny_model, "--data", str(data)],
                       capture_output=True, text=True, timeout=600)
    # The file, the line and the field the item's checker needs.
    assert r.returncode == 2 and f"{data} line 1: checker 'number' needs the field 'answer'" in r.stderr


def test_end_of_answer_patterns_reach_every_sampling_call():
    s = ScriptedSampler(lambda p, sp: ["The answer is 4."])
    pattern = r"(?i)the answer is [^\n]*?\d\.(?=\s)"
    evaluate(s, ITEMS, self_refine=True, stop_after=[pattern])
    assert [sp.stop_after for _, sp in s.calls] == [(pattern,), (pattern,)]


def test_eval_command_batch_size_sets_the_rows_a_call(tmp_path, tiny_model, monkeypatch):
    """`jaxevo eval --batch-size N` decodes in batches of up to N rows; the answers do not depend
    on it (f32)."""
    from jaxevo.cli import main
    from jaxevo.sampling import api

    samplers = []
    load = api.Sampler.load.__func__

    def spy(cls, model, **kw):
        samplers.append(load(cls, model, **kw))
        return samplers[-1]
    monkeypatch.setattr(api.Sampler, "load", classmethod(spy))
    data = tmp_path / "items.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"What is {i}+1?", "answer": str(i + 1)}) for i in range(3)))
    answers = []
    for rows in ("2", "64"):
        out = tmp_path / f"out{rows}"
        assert main(["eval", "--model", tiny_model, "--data", str(data), "--max-new-tokens", "4", "--out", str(out),
                     "--dtype", "float32", "--batch-size", rows]) == 0
        answers.append([json.loads(x)["completion"] for x in (out / "results.jsonl").read_text().splitlines()])
    assert [s.max_batch for s in samplers] == [2, 64]
    assert {shape[0] for shape in samplers[0].last_stats.shapes} == {2, 1}  # 3 items: batches of 2 and 1
    assert {shape[0] for shape in samplers[1].last_stats.shapes} == {4}  # one batch (3 rows, bucketed)
    assert answers[0] == answers[1]
