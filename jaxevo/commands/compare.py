"""`jaxevo compare RUN CONTROL [--round N] [--control-round M]`.

A run against its format-only control run (the same recipe rewarded for the answer format only):
each round's held-out accuracy of both, and at the chosen rounds (by default each run's last
evaluated round) the paired comparison on the same items: the difference, the items only one of
them gets right (wins / losses) and the exact sign test of that split, on the seen templates and,
where the runs have it, on unseen phrasings. Then what the compared rounds' answers look like
(the share in the checker's format, the median length), because a format-only control can reach
the format by dropping its working ("The answer is 2." and nothing else): when its answers are
under half as long as the run's and it scores no better than the start model, the report says
that the lead is partly that collapse. Reads `round_NNN/eval/results.jsonl` (and `eval/unseen/`);
writes `comparison.md` and `comparison.json` into RUN. Loads no model.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from jaxevo.errors import ConfigError
from jaxevo.stats import sign_test, wilson

SETS = {"seen templates": "eval", "unseen phrasings": "eval/unseen"}


def add_arguments(p):
    p.add_argument("run", help="a `jaxevo evolve` run folder (the recipe)")
    p.add_argument("control", help="the run folder of its format-only control")
    p.add_argument("--round", type=int, help="RUN's round to compare (default: its last evaluated one)")
    p.add_argument("--control-round", type=int, help="CONTROL's round (default: its last evaluated one)")


def _results(run: Path, r: int, sub: str) -> dict[str, dict] | None:
    """{item id: its result row} of round r's evaluation (each row has "correct"), or None when
    the round has none."""
    path = run / f"round_{r:03d}" / sub / "results.jsonl"
    if not path.exists():
        return None
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not rows:
            raise ValueError("no items")
        return {row["id"]: dict(row, correct=bool(row["correct"])) for row in rows}
    except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{path}: not an evaluation's results ({e}); rerun `jaxevo evolve` on "
                          f"{run} to redo that round's evaluation") from e


def _rounds(run: Path) -> dict[int, dict[str, dict[str, dict]]]:
    """Every evaluated round of a run: {round: {set name: {id: result row}}}."""
    if not (run / "manifest.json").exists():
        raise ConfigError(f"{run}: not a `jaxevo evolve` run folder (no manifest.json)")
    out = {}
    for d in sorted(run.glob("round_[0-9][0-9][0-9]")):
        r = int(d.name[6:])
        sets = {name: res for name, sub in SETS.items() if (res := _results(run, r, sub)) is not None}
        if "seen templates" in sets:
            out[r] = sets
    if not out:
        raise ConfigError(f"{run}: no round has an evaluation (round_NNN/eval/results.jsonl) yet")
    return out


def _correct(rows: dict[str, dict]) -> dict[str, bool]:
    return {i: row["correct"] for i, row in rows.items()}


def answer_shape(rows: dict[str, dict]) -> dict[str, float | None]:
    """The share of answers in the checker's format ("formatted") and their median length in
    characters ("median_chars": of "completion", or of a kept copy's "chars"); None where the
    rows do not say."""
    fmt = [row["formatted"] for row in rows.values() if "formatted" in row]
    chars = [len(row["completion"]) if isinstance(row.get("completion"), str) else row.get("chars")
             for row in rows.values()]
    chars = [c for c in chars if isinstance(c, int)]
    return {"formatted": sum(map(bool, fmt)) / len(fmt) if len(fmt) == len(rows) else None,
            "median_chars": statistics.median(chars) if len(chars) == len(rows) else None}


def collapsed(run: dict, control: dict, start: dict | None) -> bool:
    """A control that reached the format by dropping its working: its answers (control's rows)
    under half as long as the run's by median, and its accuracy no better than the start model's
    (`start`: the run's round-0 rows; without them, False)."""
    a, b = answer_shape(run)["median_chars"], answer_shape(control)["median_chars"]
    if start is None or a is None or b is None:
        return False
    return b <= a / 2 and _accuracy(control) <= _accuracy(start)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _accuracy(rows: dict[str, dict]) -> float:
    return sum(row["correct"] for row in rows.values()) / len(rows)


def _acc(rows: dict[str, dict]) -> str:
    lo, hi = wilson(sum(row["correct"] for row in rows.values()), len(rows))
    return f"{_pct(_accuracy(rows))} ({_pct(lo)}-{_pct(hi)})"


def paired(a: dict[str, bool], b: dict[str, bool]) -> dict[str, float]:
    """a against b on the same items: accuracies, difference, wins (a right, b wrong), losses and
    the sign test's two-sided p."""
    wins = sum(a[i] and not b[i] for i in a)
    losses = sum(b[i] and not a[i] for i in a)
    n = len(a)
    return {"n": n, "accuracy": sum(a.values()) / n, "control_accuracy": sum(b.values()) / n,
            "difference": (sum(a.values()) - sum(b.values())) / n, "wins": wins, "losses": losses,
            "p": sign_test(wins, losses)}


def _shape_row(s: str, name: str, shape: dict) -> list[str]:
    """The table row of `answer_shape`'s figures, or none where the rows said nothing."""
    fmt, chars = shape["formatted"], shape["median_chars"]
    if fmt is None and chars is None:
        return []
    return [f"| {s} | {name} | {'-' if fmt is None else _pct(fmt)} | {'-' if chars is None else f'{chars:g}'} |"]


def compare(run: Path, control: Path, r: int | None = None, rc: int | None = None) -> tuple[str, dict]:
    """The comparison as markdown and as a dict (what `comparison.md` / `.json` hold)."""
    a, b = _rounds(run), _rounds(control)
    r = max(a) if r is None else r
    rc = max(b) if rc is None else rc
    for run_, rounds, k in ((run, a, r), (control, b, rc)):
        if k not in rounds:
            raise ConfigError(f"{run_}: round {k} has no evaluation; evaluated rounds: {sorted(rounds)}")
    md = [f"# `{run.name}` against its format-only control `{control.name}`", "",
          "| round | " + " | ".join(f"{x} ({s})" for s in SETS for x in (run.name, control.name)) + " |",
          "|---" * (1 + 2 * len(SETS)) + "|"]
    for k in sorted(set(a) | set(b)):
        cells = [_acc(x[k][s]) if k in x and s in x[k] else "-" for s in SETS for x in (a, b)]
        md.append(f"| {k} | " + " | ".join(cells) + " |")
    md += ["", f"`{run.name}` round {r} against `{control.name}` round {rc}, paired on the same items "
           "(wins: items only the first gets right; p: two-sided exact sign test):", "",
           "| | items | run | control | difference | wins / losses | p |", "|---|---|---|---|---|---|---|"]
    summary = {"run": str(run), "control": str(control), "round": r, "control_round": rc}
    shapes = []
    for s in SETS:
        if r != 0 and s in a.get(0, {}):  # the start model's answers, for reference
            shapes += _shape_row(s, f"{run.name} round 0", answer_shape(a[0][s]))
        x, y = a[r].get(s), b[rc].get(s)
        if x is None or y is None:
            continue
        if x.keys() != y.keys():
            raise ConfigError(f"{run} and {control}: the {s} evaluations are not of the same items; "
                              "compare runs with the same eval sources")
        p = summary[s] = paired(_correct(x), _correct(y))
        md.append(f"| {s} | {p['n']} | {_acc(x)} | {_acc(y)} | {100 * p['difference']:+.1f} pt | "
                  f"{p['wins']} / {p['losses']} | {p['p']:.2g} |")
        for name, rows, key in ((f"{run.name} round {r}", x, ""), (f"{control.name} round {rc}", y, "control_")):
            shape = answer_shape(rows)
            p.update({key + field: v for field, v in shape.items()})
            shapes += _shape_row(s, name, shape)
    if shapes:
        md += ["", "What those rounds' answers look like (the share in the checker's format; the median "
               "length in characters):", "", "| | run | formatted | median characters |", "|---|---|---|---|", *shapes]
    start = a.get(0, {}).get("seen templates")
    summary["control_collapsed"] = collapsed(a[r]["seen templates"], b[rc]["seen templates"], start)
    if summary["control_collapsed"]:
        md += ["", f"**The control collapsed:** on the seen templates its answers are under half as long "
               f"as `{run.name}`'s and it scores no better than the start model (round 0): it reached "
               "the format by dropping its working. The lead above is then partly that collapse, not "
               "the reward's signal alone; a control that keeps its working is the fairer comparison "
               "(docs/results.md)."]
    return "\n".join(md) + "\n", summary


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(args) -> int:
    run_dir, control = Path(args.run), Path(args.control)
    md, summary = compare(run_dir, control, args.round, args.control_round)
    _write(run_dir / "comparison.md", md)
    _write(run_dir / "comparison.json", json.dumps(summary, indent=2))
    print(md, end="")
    print(f"written: {run_dir / 'comparison.md'}")
    return 0
