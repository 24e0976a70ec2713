"""Round reports: a table row per round on the terminal, `report.md` + `accuracy.svg` at the end.

Everything is read back from the manifest, so a report can be rebuilt from any run directory.
"""

from __future__ import annotations

import time
from typing import Any

from jaxevo.evolve.rundir import RunDir, atomic_write_text

COLUMNS = ("round", "accuracy (95% CI)", "vs start", "win vs prev", "control", "unseen (95% CI)", "unseen vs start",
           "control unseen", "refined", "gate", "data", "sft loss", "pref acc", "gen s", "train s", "eval s",
           "total s")


def round_row(m: dict[str, Any], r: int) -> dict[str, str]:
    rd = m["rounds"].get(str(r), {})
    st = rd.get("stages", {})
    ev = st.get("eval", {})
    start = m["rounds"].get("0", {}).get("stages", {}).get("eval", {})

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    def with_ci(e):
        return "-" if e.get("accuracy") is None else \
            f"{pct(e['accuracy'])} ({pct(e['ci95_low'])}-{pct(e['ci95_high'])})"

    def gain(e, e0):
        return "-" if e.get("accuracy") is None or e0.get("accuracy") is None or r == 0 \
            else f"{100 * (e['accuracy'] - e0['accuracy']):+.1f} pt"
    # `eval.unseen_source`: the same models on problems whose templates training never saw.
    unseen, ctrl = ev.get("unseen", {}), st.get("control", {}).get("eval", {})
    row = {
        "round": str(r),
        "accuracy (95% CI)": with_ci(ev),
        "vs start": gain(ev, start),
        "win vs prev": pct(ev.get("vs_previous", {}).get("win_rate")),
        "control": pct(ctrl.get("accuracy")),
        "unseen (95% CI)": with_ci(unseen),
        "unseen vs start": gain(unseen, start.get("unseen", {})),
        "control unseen": pct(ctrl.get("unseen", {}).get("accuracy")),
        "refined": pct(ev.get("refined/accuracy")),
        "gate": _gate(st.get("gate", {}), pct),
        "data": "-" if "data" not in st else f"{st['data']['sft_examples']} sft / {st['data']['pairs']} pairs",
        "sft loss": _fmt(st.get("sft", {}).get("final", {}).get("loss")),
        "pref acc": _fmt(st.get("preference", {}).get("final", {}).get("rewards/accuracies")),
        "gen s": _secs(st, ("generate", "feedback", "refine", "score")),
        "train s": _secs(st, ("sft", "preference", "control")),
        "eval s": _secs(st, ("eval", "gate")),
        "total s": _secs(st, tuple(st)),
    }
    return row


def _gate(g: dict, pct) -> str:
    """'kept 23.0% vs 20.5%': the round gate's verdict, validation accuracy vs the kept model's."""
    if "accepted" not in g:
        return "-"
    return f"{'kept' if g['accepted'] else 'rejected'} {pct(g['accuracy'])} vs {pct(g['start_accuracy'])}"


def round_metrics(m: dict[str, Any], r: int) -> dict[str, float]:
    """The round's numbers as flat scalars (for metrics.jsonl / TensorBoard, step = round)."""
    st = m["rounds"].get(str(r), {}).get("stages", {})
    ev = st.get("eval", {})
    out = {f"eval/{k}": v for k, v in ev.items() if isinstance(v, (int, float)) and k != "seconds"}
    out.update({f"eval/vs_previous/{k}": v for k, v in ev.get("vs_previous", {}).items() if v is not None})
    out.update({f"eval/{kind}/accuracy": s["accuracy"] for kind, s in ev.get("by_kind", {}).items()})
    out.update({f"eval/unseen/{k}": v for k, v in ev.get("unseen", {}).items()
                if k in ("accuracy", "ci95_low", "ci95_high", "formatted")})
    # The chain of self-refinement of `eval.refine_steps`: accuracy after each step.
    out.update({f"eval/refine_step_{k}/accuracy": a
                for k, a in enumerate(ev.get("strategy", {}).get("accuracy_by_step", []))})
    ctrl = st.get("control", {}).get("eval", {})
    if "accuracy" in ctrl:
        out["control/accuracy"] = ctrl["accuracy"]
    out.update({f"control/{kind}/accuracy": s["accuracy"] for kind, s in ctrl.get("by_kind", {}).items()})
    if "accuracy" in ctrl.get("unseen", {}):
        out["control/unseen/accuracy"] = ctrl["unseen"]["accuracy"]
    for name, keys in (("score", ("mean_score", "accepted_samples", "judge_agreement")),
                       ("data", ("sft_examples", "pairs", "yield_per_prompt")),
                       ("gate", ("accepted", "accuracy", "start_accuracy"))):
        out.update({f"{name}/{k}": st[name][k] for k in keys if k in st.get(name, {})})
    for phase in ("sft", "preference"):
        out.update({f"{phase}/{k}": v for k, v in st.get(phase, {}).get("final", {}).items()
                    if k in ("loss", "rewards/accuracies", "rewards/margins")})
    out["time/round_s"] = sum(x.get("seconds", 0.0) for x in st.values())
    return out


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _secs(st: dict, names: tuple[str, ...]) -> str:
    s = sum(st.get(n, {}).get("seconds", 0.0) for n in names)
    return f"{s:.0f}" if s else "-"


def table(rows: list[dict[str, str]]) -> str:
    """A Markdown table of the rows, leaving out the columns no row has (a recipe without a
    preference phase, a control arm or a gate)."""
    cols = [c for c in COLUMNS if c == "round" or any(r[c] != "-" for r in rows)]
    head = "| " + " | ".join(cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    return "\n".join([head, sep] + ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows])


def print_round(run: RunDir, r: int) -> None:
    row = round_row(run.manifest(), r)
    print("  ".join(f"{c}={row[c]}" for c in COLUMNS if row[c] != "-"), flush=True)


def accuracy_svg(points: list[tuple[int, float, float, float]], control: list[tuple[int, float]],
                 width: int = 520, height: int = 300) -> str:
    """A line plot of accuracy per round with 95% CI bars; control arm as hollow dots."""
    pad, top = 50, 20
    rounds = [p[0] for p in points] or [0]
    xmax = max(max(rounds), 1)
    ymax = min(1.0, max([p[3] for p in points] + [c[1] for c in control] + [0.1]) * 1.15)

    def x(r):
        return pad + (width - 2 * pad) * r / xmax

    def y(v):
        return height - pad - (height - pad - top) * v / ymax
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="{top}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
             f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle">round</text>',
             f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" '
             f'text-anchor="middle">held-out accuracy</text>']
    for k in range(5):
        v = ymax * k / 4
        parts.append(f'<text x="{pad - 6}" y="{y(v) + 4}" text-anchor="end">{100 * v:.0f}%</text>')
    for r in rounds:
        parts.append(f'<text x="{x(r)}" y="{height - pad + 16}" text-anchor="middle">{r}</text>')
    if points:
        path = " ".join(f"{'M' if i == 0 else 'L'}{x(r):.1f},{y(a):.1f}" for i, (r, a, _, _) in enumerate(points))
        parts.append(f'<path d="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
        for r, a, lo, hi in points:
            parts.append(f'<line x1="{x(r)}" y1="{y(lo):.1f}" x2="{x(r)}" y2="{y(hi):.1f}" stroke="#1f77b4"/>')
            parts.append(f'<circle cx="{x(r):.1f}" cy="{y(a):.1f}" r="4" fill="#1f77b4"/>')
    for r, a in control:
        parts.append(f'<circle cx="{x(r):.1f}" cy="{y(a):.1f}" r="4" fill="white" stroke="#d62728" stroke-width="2"/>')
    parts.append(f'<text x="{width - pad}" y="{top + 4}" text-anchor="end" fill="#1f77b4">recipe</text>')
    if control:
        parts.append(f'<text x="{width - pad}" y="{top + 18}" text-anchor="end" fill="#d62728">'
                     'format-only control</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _meta_lines(m: dict[str, Any]) -> list[str]:
    """SELF's meta-skill round, when the run had one."""
    meta = m["rounds"].get("0", {}).get("stages", {}).get("meta")
    if not meta:
        return []
    ev = meta.get("eval", {})
    acc = "not evaluated" if "accuracy" not in ev else (
        f"{100 * ev['accuracy']:.1f}% ({100 * ev['ci95_low']:.1f}-{100 * ev['ci95_high']:.1f}%)")
    return [f"Meta-skill round (round 0, before the start model's evaluation): {meta.get('tuples', 0)} "
            f"tuples ({meta.get('incorrect_tuples', 0)} with an incorrect answer) from "
            f"{meta.get('prompts', 0)} prompts, {meta.get('steps', 0)} training steps; the meta-skill "
            f"model scores {acc}. Rounds 1+ start from it.", ""]


def _cpu_lines(m: dict[str, Any]) -> list[str]:
    """The CPU paths the run's stages ran on (`cpu_paths` in the manifest), by machine: runs whose
    choices differ sum in different orders and can differ in their greedy completions."""
    by_machine: dict[str, list[str]] = {}
    for e in m.get("cpu_paths", []):
        when = "" if e["measured"] is None else time.strftime(" %Y-%m-%d %H:%M UTC", time.gmtime(e["measured"]))
        by_machine.setdefault(e["machine"], []).append(f"{e['what']} `{e['choice']}` ({e['source']}{when})")
    if not by_machine:
        return []
    return ["CPU paths (chosen once per machine and kept in `$JAXEVO_CACHE/cpu_paths.json`; `cpu_paths` "
            "in manifest.json says which stage first ran on each):",
            *(f"- {machine}: {'; '.join(choices)}" for machine, choices in by_machine.items()), ""]


def _spec(spec: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in spec.items())


def _sampling_line(cfg) -> str:
    """What a round samples and what scores it: an online round's steps x prompts x group, or the
    round recipes' prompts x samples."""
    if "grpo" in cfg.stages:
        g = cfg.grpo
        rewards = ", ".join(f"{k} x {v:g}" for k, v in g.rewards.items())
        return (f"rewards: {rewards}; {g.steps} online steps x {g.prompts_per_step} prompts x "
                f"{g.group_size} samples per round")
    return f"scorer: `{cfg.score.scorer}`; {cfg.prompts.per_round} prompts x {cfg.sample.n} samples per round"


def _start_line(rows: list[dict[str, str]], rounds: list[int], cfg) -> str:
    """The start model's held-out accuracy: round 0's evaluation, which `eval.before=false` skips
    (then round 1's figure is not the start's and must not be shown as it)."""
    if not rounds or rounds[0] != 0 or rows[0].get("accuracy (95% CI)", "-") == "-":
        return "the start model was not evaluated (`eval.before=false`)."
    unseen = f" (unseen phrasings: {rows[0]['unseen (95% CI)']})" if cfg.eval.unseen_source else ""
    return f"held-out items: {rows[0]['accuracy (95% CI)']}{unseen} at the start."


def write_report(run: RunDir, cfg) -> str:
    m = run.manifest()
    # Rounds beyond run.rounds can exist when a run was started with more and finished with fewer.
    rounds = sorted(int(r) for r in m["rounds"] if int(r) <= cfg.run.rounds)
    rows = [round_row(m, r) for r in rounds]
    points, control = [], []
    for r in rounds:
        st = m["rounds"][str(r)].get("stages", {})
        ev = st.get("eval", {})
        if "accuracy" in ev:
            points.append((r, ev["accuracy"], ev["ci95_low"], ev["ci95_high"]))
        c = st.get("control", {}).get("eval", {})
        if "accuracy" in c:
            control.append((r, c["accuracy"]))
    atomic_write_text(run.root / "accuracy.svg", accuracy_svg(points, control))
    md = [f"# jaxevo run `{run.root.name}` ({cfg.run.recipe})", "",
          f"Start model: `{cfg.model.path}`; {_sampling_line(cfg)}; {_start_line(rows, rounds, cfg)}", "",
          "![accuracy per round](accuracy.svg)", "", table(rows), "", *_meta_lines(m),
          *(["`control` is the format-only control arm: SFT on the same number of well-formatted "
             "self-samples chosen without the scorer, from the same round start. The gain of the "
             "recipe over the control is what the scorer adds beyond formatting.", ""] if control else []),
          *([f"`unseen`: greedy accuracy on `eval.unseen_source` ({_spec(cfg.eval.unseen_source)}), problems "
             "whose templates or phrasings never appear in training; `accuracy` is on new items of the "
             "training templates, so the gain that carries over to new wording is the `unseen` one.", ""]
            if cfg.eval.unseen_source else []),
          *(["`gate`: greedy accuracy of the round's model on the labelled validation items of "
             "`rounds.gate` against the kept model's; a rejected round's model is dropped and the "
             "next round starts from the kept one (labels choose models, never training data).", ""]
            if cfg.rounds.gate else []),
          *_cpu_lines(m),
          f"Final model (Hugging Face format): `{run.root / 'final_model'}`"]
    text = "\n".join(md) + "\n"
    atomic_write_text(run.root / "report.md", text)
    print(table(rows))
    return text
