"""Inference strategies (jaxevo/strategies.py) through `evaluate`: a chain of K self-refinement steps
(with and without self-feedback, stopping when the feedback accepts), best-of-N selection by
majority, checker, reward model and judge, and the report of each; then `jaxevo eval` and
`jaxevo generate` on a tiny model, checked against direct sampler calls."""

import json
from types import SimpleNamespace

import pytest

from jaxevo.errors import ConfigError
from jaxevo.evaluate import evaluate
from jaxevo.judging.judge import Judge
from jaxevo.strategies import Strategy
from jaxevo.templates import FEEDBACK_TEMPLATE, REFINE_TEMPLATE
from jaxevo.train.objectives import self_refine_prompt

ITEMS = [{"id": "a", "prompt": "2+2?", "answer": "4"}, {"id": "b", "prompt": "3+3?", "answer": "6"},
         {"id": "c", "prompt": "5+5?", "answer": "10"}]
FIRST = {"2+2?": "The answer is 4.", "3+3?": "The answer is 5.", "5+5?": "The answer is 7."}
GOLD = {it["prompt"]: it["answer"] for it in ITEMS}


class ScriptedSampler:
    """Answers by `script(prompt, sp)`; records every call (prompts, sampling params)."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def generate(self, prompts, sp, chat=True, progress=None):
        self.calls.append((list(prompts), sp))
        return [[SimpleNamespace(text=t, finish_reason="eos", logprob=-1.0) for t in self.script(p, sp)]
                for p in prompts]


def _task(p: str) -> str:
    return next(q for q in GOLD if p.startswith(q) or f"Question: {q}" in p)


def chain_script(p, sp):
    """Direct answers from FIRST; a critique that accepts exactly the right answer; refinements
    that fix 3+3 (to 6) and never 5+5 (always 9)."""
    if p in GOLD:
        return [FIRST[p]] * sp.n
    q = _task(p)
    if p.startswith("Question:"):  # the feedback template
        previous = p.split("Answer: ", 1)[1]
        ok = f"is {GOLD[q]}." in previous.split("\n\nCheck")[0]
        return ["Looks fine. Judgement: correct" if ok else "The sum is off. Judgement: incorrect"]
    return ["The answer is 6."] if q == "3+3?" else ["The answer is 9."]


def test_self_feedback_chain_stops_when_the_feedback_accepts():
    s = ScriptedSampler(chain_script)
    rows, summary = evaluate(s, ITEMS, strategy=Strategy(refine_steps=3, self_feedback=True))
    st = summary["strategy"]
    assert st["accuracy_by_step"] == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert st["stopped_at"] == {"0": 1, "1": 1, "never": 1}
    assert st["final"]["accuracy"] == pytest.approx(2 / 3) and summary["accuracy"] == pytest.approx(1 / 3)
    a, b, c = (r["strategy"]["chains"][0] for r in rows)
    assert a == {"answers": ["The answer is 4."], "feedback": ["Looks fine. Judgement: correct"], "stopped": 0}
    assert b["answers"] == ["The answer is 5.", "The answer is 6."] and b["stopped"] == 1
    assert c["answers"] == ["The answer is 7."] + ["The answer is 9."] * 3 and c["stopped"] is None
    assert len(c["feedback"]) == 3
    # Batched: per step one call for the running chains' critiques, one for their refinements.
    assert [len(p) for p, _ in s.calls] == [3, 3, 2, 2, 1, 1, 1]
    assert s.calls[1][0][0] == FEEDBACK_TEMPLATE.format(prompt="2+2?", previous="The answer is 4.")
    # The refinement is conditioned on the critique, as SELF's training view is.
    assert s.calls[2][0][0] == self_refine_prompt(REFINE_TEMPLATE, "3+3?", "The answer is 5.",
                                                  "The sum is off. Judgement: incorrect")
    assert "\n\nFeedback:\n" in s.calls[2][0][0]
    assert all(sp.temperature == 0.0 for _, sp in s.calls[1:])


def test_chain_without_feedback_refines_every_answer_k_times():
    s = ScriptedSampler(chain_script)
    rows, summary = evaluate(s, ITEMS, strategy=Strategy(refine_steps=2))
    st = summary["strategy"]
    # 2+2 is "refined" away from its right answer: EVOLVE's chain has no stop signal.
    assert st["accuracy_by_step"] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert "stopped_at" not in st and st["selection"] is None
    assert [len(p) for p, _ in s.calls] == [3, 3, 3]
    assert s.calls[1][0][1] == REFINE_TEMPLATE.format(prompt="3+3?", previous="The answer is 5.")
    assert all("Feedback:" not in p for p in s.calls[1][0])


def test_stop_strings_and_patterns_end_refinements_not_critiques():
    """A refinement is an answer: `--stop` strings and `stop_after` patterns apply to it as to the
    first completion; a critique runs to its own length."""
    from jaxevo.strategies import refine_chains

    s = ScriptedSampler(chain_script)
    first = [SimpleNamespace(text=FIRST[q]) for q in GOLD]
    refine_chains(s, list(GOLD), first, Strategy(refine_steps=1, self_feedback=True), max_new_tokens=32,
                  stop=("\n\nQuestion",), stop_after=(r"answer is \d+\.",))
    (_, feedback_sp), (_, refine_sp) = s.calls
    assert (refine_sp.stop, refine_sp.stop_after) == (("\n\nQuestion",), (r"answer is \d+\.",))
    assert (feedback_sp.stop, feedback_sp.stop_after) == ((), ())


SAMPLES = {"2+2?": ["The answer is 5.", "The answer is 4.", "The answer is 4."],
           "3+3?": ["The answer is 7.", "The answer is 7.", "The answer is 6."],
           "5+5?": ["no idea", "The answer is 10.", "The answer is 11."]}


@pytest.mark.parametrize("method,selected,final", [
    ("majority", [1, 0, 1], [True, False, True]),  # ties go to the earliest sample
    ("checker", [1, 2, 1], [True, True, True]),    # the reference picks: the pass@N upper bound
])
def test_best_of_n_selection_without_a_model(method, selected, final):
    s = ScriptedSampler(lambda p, sp: SAMPLES[p][: sp.n])
    rows, summary = evaluate(s, ITEMS, temperature=0.0, strategy=Strategy(best_of=3, select=method))
    assert s.calls[0][1].n == 3 and s.calls[0][1].temperature == 1.0  # N greedy samples would be equal
    assert [r["strategy"]["selected"] for r in rows] == selected
    assert [r["strategy"]["final_correct"] for r in rows] == final
    st = summary["strategy"]
    assert st["selection"] == method and st["pass@3"] == 1.0 and st["chains"] == 9
    assert st["final"]["accuracy"] == pytest.approx(sum(final) / 3)


class FakeRewardModel:
    def __init__(self):
        self.calls = []

    def score(self, prompts, completions):
        self.calls.append((list(prompts), list(completions)))
        return [float(len(c)) for c in completions]  # the longest answer wins


def test_best_of_n_with_refinement_selected_by_reward_model_and_judge():
    def script(p, sp):
        if p in SAMPLES:
            return SAMPLES[p][: sp.n]
        return ["Refined: " + p.split("previous answer:\n", 1)[1].split("\n\n")[0]]

    s, rm = ScriptedSampler(script), FakeRewardModel()
    rows, summary = evaluate(s, ITEMS, strategy=Strategy(refine_steps=1, best_of=3, select="reward_model"),
                             reward_model=rm)
    assert len(rm.calls) == 1 and len(rm.calls[0][1]) == 9  # every final, one batched call
    assert rm.calls[0][1][0] == "Refined: The answer is 5." and rm.calls[0][0][0] == "2+2?"
    assert [r["strategy"]["selected"] for r in rows] == [0, 0, 1]  # longest; ties to the earliest
    assert summary["strategy"]["accuracy_by_step"] == pytest.approx([4 / 9, 4 / 9])

    grades = {"The answer is 4.": 9, "The answer is 6.": 8, "The answer is 10.": 7}

    def judge_script(p, sp):
        answer = p.split("[The Start of Assistant's Answer]\n", 1)[1].split("\n[The End", 1)[0]
        return [f"Rating: [[{grades.get(answer, 2)}]]" if answer != "no idea" else "no verdict"]

    j = Judge(ScriptedSampler(judge_script))
    rows, summary = evaluate(ScriptedSampler(lambda p, sp: SAMPLES[p][: sp.n]), ITEMS,
                             strategy=Strategy(best_of=3, select="judge"), judge=j)
    assert [r["strategy"]["selected"] for r in rows] == [1, 2, 1]
    assert summary["strategy"]["final"]["accuracy"] == 1.0
    with pytest.raises(ConfigError, match="needs --reward-model"):
        evaluate(ScriptedSampler(lambda p, sp: SAMPLES[p][: sp.n]), ITEMS,
                 strategy=Strategy(best_of=3, select="reward_model"))


def test_strategy_settings_are_checked():
    with pytest.raises(ConfigError, match="--self-feedback"):
        Strategy(self_feedback=True)
    with pytest.raises(ConfigError, match="--best-of 0"):
        Strategy(best_of=0)
    with pytest.raises(ConfigError, match="choose one of"):
        Strategy(best_of=2, select="vote")


def test_eval_and_generate_commands_on_a_tiny_model(tmp_path, tiny_model, capsys):
    from jaxevo.cli import main
    from jaxevo.sampling.api import Sampler, SamplingParams

    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in ITEMS[:2]))
    out = tmp_path / "ev"
    flags = ["--refine-steps", "2", "--self-feedback", "--feedback-max-new-tokens", "5", "--max-new-tokens", "6",
             "--dtype", "float32"]
    assert main(["eval", "--model", tiny_model, "--data", str(data), "--out", str(out), *flags]) == 0
    summary = json.loads((out / "summary.json").read_text())
    st = summary["strategy"]
    assert st["refine_steps"] == 2 and st["self_feedback"] and len(st["accuracy_by_step"]) == 3
    assert sum(st["stopped_at"].values()) == 2 and "by refinement step" in capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    # Recompute row 0's chain with direct greedy calls of the sampler.
    s = Sampler.load(tiny_model, dtype="float32")
    chain = rows[0]["strategy"]["chains"][0]
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0)
    assert chain["answers"][0] == rows[0]["completion"] == s.generate(["2+2?"], greedy)[0][0].text
    fb = s.generate([FEEDBACK_TEMPLATE.format(prompt="2+2?", previous=chain["answers"][0])],
                    SamplingParams(max_new_tokens=5, temperature=0.0))[0][0].text
    assert chain["feedback"][0] == fb
    if chain["stopped"] != 0:
        refined = s.generate([self_refine_prompt(REFINE_TEMPLATE, "2+2?", chain["answers"][0], fb)], greedy)
        assert chain["answers"][1] == refined[0][0].text

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "2+2?", "answer": "4"}) + "\n")
    gen = tmp_path / "gen.jsonl"
    assert main(["generate", "--model", tiny_model, "--prompts", str(prompts), "--out", str(gen),
                 "--best-of", "2", "--refine-steps", "1", "--select", "checker", "--max-new-tokens", "6",
                 "--dtype", "float32"]) == 0
    rec = json.loads(gen.read_text())
    assert len(rec["completions"]) == 1 and len(rec["strategy"]["chains"]) == 2
    kept = rec["strategy"]["chains"][rec["strategy"]["selected"]]
    assert rec["completions"][0] == kept["answers"][-1] and len(kept["answers"]) == 2


@pytest.mark.parametrize("argv,message", [
    (["eval", "--model", "m", "--data", "d.jsonl", "--best-of", "2", "--select", "judge"], "--select judge needs --judge J"),
    (["eval", "--model", "m", "--data", "d.jsonl", "--select", "reward_model", "--reward-model", "rm"],
     "give N >= 2"),
    (["eval", "--model", "m", "--data", "d.jsonl", "--self-feedback"], "give --refine-steps K >= 1"),
    (["generate", "--model", "m", "--prompts", "p.jsonl", "--out", "o.jsonl", "--n", "2", "--best-of", "2"],
     "give --best-of N for N samples"),
])
def test_bad_strategy_flags_exit_2_before_any_model_loads(argv, message, capsys):
    from jaxevo.cli import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err
