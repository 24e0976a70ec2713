"""`jaxevo compare RUN CONTROL`: a run against its format-only control, paired on the same items
(the README demo's last step). Figures are checked against hand-computed values."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from jaxevo.cli import main
from jaxevo.commands.compare import compare
from jaxevo.stats import sign_test, wilson


def _run(root, rounds: dict[int, dict[str, list[bool]]]):
    """A run folder as `jaxevo evolve` leaves it: a manifest and each round's evaluation results."""
    root.mkdir(parents=True)
    (root / "manifest.json").write_text("{}")
    for r, sets in rounds.items():
        for sub, correct in sets.items():
            d = root / f"round_{r:03d}" / sub
            d.mkdir(parents=True)
            (d / "results.jsonl").write_text("".join(
                json.dumps({"id": f"q{i}", "correct": c}) + "\n" for i, c in enumerate(correct)))
    return root


def test_sign_test_and_wilson_against_hand_computed_values():
    assert sign_test(3, 0) == pytest.approx(0.25, abs=1e-12)  # 2 * (1/2)^3
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024, abs=1e-12)
    lo, hi = wilson(10, 20)  # p = 0.5, n = 20: 0.5 -+ 1.96 * sqrt(0.25 / 20 + 1.96^2 / 1600) / (1 + 1.96^2 / 20)
    h = 1.96 * math.sqrt(0.25 / 20 + 1.96 ** 2 / 1600) / (1 + 1.96 ** 2 / 20)
    assert (lo, hi) == pytest.approx((0.5 - h, 0.5 + h), abs=1e-12)


def test_compare_pairs_the_last_rounds_and_writes_its_report(tmp_path, capsys):
    t, f = True, False
    run = _run(tmp_path / "grpo", {0: {"eval": [f, f, f, f]},
                                   2: {"eval": [t, t, t, f], "eval/unseen": [t, f, f, f]}})
    ctrl = _run(tmp_path / "ctrl", {1: {"eval": [f, t, f, t], "eval/unseen": [f, f, f, f]}})
    assert main(["compare", str(run), str(ctrl)]) == 0
    out = json.loads((run / "comparison.json").read_text())
    assert (out["round"], out["control_round"]) == (2, 1)
    seen = out["seen templates"]  # run right on q0-q2, control on q1 and q3: wins q0, q2; loses q3
    assert (seen["wins"], seen["losses"], seen["difference"]) == (2, 1, 0.25)
    assert seen["p"] == pytest.approx(1.0)  # 2 * (1 + 3) / 8, capped at 1
    assert out["unseen phrasings"]["wins"] == 1 and out["unseen phrasings"]["losses"] == 0
    text = capsys.readouterr().out
    assert "| seen templates | 4 | 75.0%" in text and "+25.0 pt | 2 / 1 |" in text
    assert "| 0 | 0.0%" in text and text == (run / "comparison.md").read_text() + f"written: {run / 'comparison.md'}\n"


def test_compare_refuses_runs_of_different_items_or_missing_rounds(tmp_path, capsys):
    run = _run(tmp_path / "a", {1: {"eval": [True, False]}})
    other = _run(tmp_path / "b", {1: {"eval": [True, False, True]}})
    assert main(["compare", str(run), str(other)]) == 2
    assert "not of the same items" in capsys.readouterr().err
    assert main(["compare", str(run), str(run), "--round", "3"]) == 2
    assert "round 3 has no evaluation; evaluated rounds: [1]" in capsys.readouterr().err
    assert main(["compare", str(run), str(tmp_path / "missing")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    (run / "round_001" / "eval" / "results.jsonl").write_text("{not json\n")
    assert main(["compare", str(run), str(run)]) == 2
    assert "results.jsonl: not an evaluation's results" in capsys.readouterr().err
    (run / "round_001" / "eval" / "results.jsonl").write_text("")  # an empty evaluation
    assert main(["compare", str(run), str(run)]) == 2
    assert "not an evaluation's results (no items)" in capsys.readouterr().err
    assert not (run / "comparison.md").exists()  # nothing written on a refusal


def test_a_kept_copy_of_a_run_compares_as_the_run_does(tmp_path):
    """scripts/keep_evals.py: the reduced copy (ids, verdicts, answers; no texts, no unfinished
    stage) pairs exactly as the run folder it came from."""
    t, f = True, False
    run = _run(tmp_path / "run", {0: {"eval": [f, t, f, f]}, 1: {"eval": [t, t, f, t], "eval/unseen": [t, f, f, t]}})
    d = run / "round_001" / "eval"  # add a text, which a kept copy leaves out
    rows = [dict(json.loads(x), completion="The answer is 4.", prediction="4")
            for x in (d / "results.jsonl").read_text().splitlines()]
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "round_002" / "eval.partial").mkdir(parents=True)
    (run / "round_002" / "eval.partial" / "results.jsonl").write_text('{"id": "q0"}\n')
    ctrl = _run(tmp_path / "ctrl", {1: {"eval": [f, t, t, f], "eval/unseen": [f, f, f, f]}})
    script = Path(__file__).parents[1] / "scripts" / "keep_evals.py"
    subprocess.run([sys.executable, str(script), str(run), str(tmp_path / "kept")], check=True)
    kept = tmp_path / "kept"
    row = json.loads((kept / "round_001" / "eval" / "results.jsonl").read_text().splitlines()[0])
    assert row == {"id": "q0", "correct": True, "prediction": "4", "chars": 16}  # len("The answer is 4.")
    assert not (kept / "round_002").exists()
    assert main(["compare", str(run), str(ctrl)]) == 0 and main(["compare", str(kept), str(ctrl)]) == 0
    a, b = (json.loads((d / "comparison.json").read_text()) for d in (kept, run))
    assert a.pop("run") == str(kept) and b.pop("run") == str(run)
    assert a == b and a["seen templates"]["wins"] == 2  # q0, q3 against the control's q2
    assert a["seen templates"]["median_chars"] == 16  # from the kept lengths as from the texts
    (run / "round_001" / "eval" / "results.jsonl").write_text('{"id": "q0", "correct": tr')  # cut off
    bad = subprocess.run([sys.executable, str(script), str(run), str(tmp_path / "kept2")], capture_output=True, text=True)
    assert bad.returncode == 2 and "round_001/eval/results.jsonl: not an evaluation's results" in bad.stderr


def _answers(root, rounds: dict[int, list[tuple[bool, bool, str]]]):
    """A run folder whose seen-template results carry (correct, formatted, completion) per item."""
    root.mkdir(parents=True)
    (root / "manifest.json").write_text("{}")
    for r, rows in rounds.items():
        d = root / f"round_{r:03d}" / "eval"
        d.mkdir(parents=True)
        (d / "results.jsonl").write_text("".join(
            json.dumps({"id": f"q{i}", "correct": c, "formatted": f, "completion": text}) + "\n"
            for i, (c, f, text) in enumerate(rows)))
    return root


def test_compare_shows_what_the_answers_look_like_and_names_a_collapsed_control(tmp_path):
    """A format-only control can reach the format by answering "The answer is 2." and nothing
    else; the report then says its lead is partly that collapse (hand-computed medians)."""
    t, f = True, False
    working = "3 + 4 = 7, so 7 + 2 = 9. The answer is 9."  # 41 characters
    start = [(t, t, "x" * 300), (f, f, "x" * 200), (f, f, "x" * 100), (f, t, "x" * 250)]  # 25%
    run = _answers(tmp_path / "run", {0: start, 1: [(t, t, working), (t, t, working), (f, t, working), (f, f, "x" * 60)]})
    short = "The answer is 2."  # 16 characters: under half of the run's median 41
    ctrl = _answers(tmp_path / "ctrl", {1: [(t, t, short), (f, t, short), (f, t, short), (f, t, short)]})
    md, out = compare(run, ctrl)
    seen = out["seen templates"]
    assert (seen["formatted"], seen["median_chars"]) == (0.75, 41)  # lengths 41, 41, 41, 60
    assert (seen["control_formatted"], seen["control_median_chars"]) == (1.0, 16)
    assert "| seen templates | run round 0 | 50.0% | 225 |" in md  # median of 100, 200, 250, 300
    assert "| seen templates | ctrl round 1 | 100.0% | 16 |" in md
    assert out["control_collapsed"] and "**The control collapsed:**" in md  # 25% <= the start's 25%
    # the same short answers, right more often than the start model: formatting, not a collapse
    better = _answers(tmp_path / "better", {1: [(t, t, short), (t, t, short), (f, t, short), (f, t, short)]})
    md, out = compare(run, better)
    assert not out["control_collapsed"] and "collapsed" not in md
    # answers as long as the run's are no collapse, however wrong
    wordy = _answers(tmp_path / "wordy", {1: [(f, t, working)] * 4})
    assert not compare(run, wordy)[1]["control_collapsed"]
    # without the start model's evaluation there is nothing to say it fell back to
    no_start = _answers(tmp_path / "no_start", {1: [(t, t, working)] * 4})
    md, out = compare(no_start, ctrl)
    assert not out["control_collapsed"] and "round 0" not in md
