"""SELF's meta-skill feedback as language critiques: what is wrong in an answer and why.

Two sources (`meta.critique.source`):

    template  built from facts that can be checked: the calculation steps the answer writes
              ("5 + 8 = 12": recomputed exactly, a wrong one named with its right value), whether
              it states a final answer in the task's format, whether it was cut off, and (when the
              label comes from the item's answer checker) the stated final answer against the
              reference answer. A judge's or reward model's label adds only what it says: the
              score and the threshold it fell below.
    model     a model (`meta.critique.model`, e.g. a stronger one, as the papers' GPT-4) writes
              the critique given the question, the answer, the reference answer and the label.
              A critique that contradicts the label (states the opposite verdict, calls a rejected
              answer right or an accepted one wrong, names a final result other than the
              reference) is dropped and the template critique used instead (`honest`).

Either way the critique ends with the verdict line of the label ("Judgement: correct" /
"Judgement: incorrect"), which the feedback stage asks for and the `self_judge` scorer reads: the
verdict is the label's, never the critique writer's.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction
from typing import Any, Mapping

from jaxevo.checkers import checker_for
from jaxevo.data.answers import normalize_number
from jaxevo.evolve import verdict

Item = Mapping[str, Any]

# "a op b (op c ...) = d": the calculation steps of a worked answer. "x" is not an operator here
# (it is a letter of words and variables too often).
_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"  # "1,200"; a comma after a number ends it
_STEP = re.compile(rf"(?<![\w.])((?:{_NUM}\s*[-+*/×÷]\s*)+{_NUM})\s*=\s*(-?{_NUM})(?![\d])")
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}
MAX_STEP_ERRORS = 3  # named in one critique; more are summarised as a count


def _value(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return Fraction(str(node.value))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError("not arithmetic")


def _fmt(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    return f"{float(x):.6g}"


def calculation_steps(text: str | None) -> list[dict[str, Any]]:
    """The calculation steps `a op b ... = c` written in `text`, each recomputed exactly (with
    operator precedence): [{"step": "5 + 8 = 12", "expr": "5 + 8", "stated": "12", "value": "13",
    "right": False}, ...]. Steps that cannot be evaluated (division by zero) are left out."""
    out = []
    for m in _STEP.finditer(text or ""):
        expr, stated = m.group(1).strip(), m.group(2)
        src = expr.replace("×", "*").replace("÷", "/").replace(",", "")
        try:
            value = _value(ast.parse(src, mode="eval").body)
        except (ValueError, SyntaxError, ZeroDivisionError):
            continue
        s = normalize_number(stated)
        if s is None:
            continue
        right = Fraction(s) == value
        out.append({"step": f"{expr} = {stated}", "expr": expr, "stated": stated, "value": _fmt(value),
                    "right": right})
    return out


def verdict_line(correct: bool) -> str:
    return "Judgement: correct" if correct else "Judgement: incorrect"


def template_critique(item: Item, response: Mapping[str, Any], correct: bool, *, label: str = "checker",
                      score: float | None = None, min_score: float | None = None,
                      reveal_reference: bool = True) -> str:
    """A critique of `response` (a group response: "text", "finish") to `item` from checkable
    facts, ending with the verdict line of the label `correct`.

    label: "checker" (the item's answer checker against its reference answer: the final answer is
      compared with it), or the name of the judge / reward model that gave `score` (then nothing is
      said about the reference; the critique cites the score and `min_score`).
    reveal_reference: name the reference answer when the final answer does not match it.
    """
    text = response.get("text") or ""
    checker = checker_for(item)
    stated = checker.extract(text, item)
    steps = calculation_steps(text)
    wrong = [s for s in steps if not s["right"]]
    lines = []
    if response.get("finish") == "length":
        lines.append("The answer was cut off before it finished.")
    for s in wrong[:MAX_STEP_ERRORS]:
        lines.append(f"The step \"{s['step']}\" is wrong: {s['expr']} is {s['value']}, not {s['stated']}.")
    if len(wrong) > MAX_STEP_ERRORS:
        lines.append(f"{len(wrong) - MAX_STEP_ERRORS} more calculation steps are wrong.")
    ref = item.get("answer")
    quote = stated is not None and len(stated) <= 80  # a long answer (code, a reply) is not quoted
    if not checker.well_formatted(text, item) or stated is None:
        lines.append("The answer does not state a final answer in the required format.")
    elif label == "checker":
        if correct:
            lines.append(f"The final answer {stated} is right." if quote else "The final answer is right.")
        elif reveal_reference and ref is not None and quote and len(str(ref)) <= 80:
            lines.append(f"The final answer {stated} does not match the correct answer, {ref}.")
        else:
            lines.append(f"The final answer {stated} is wrong." if quote else "The final answer is wrong.")
    if label != "checker" and score is not None:
        rel = "at or above" if correct else "below"
        bound = f" {min_score:g}" if min_score is not None else ""
        lines.append(f"The {label} scored this answer {score:.3g}, {rel} the acceptance threshold{bound}.")
    if steps and not wrong:
        n = len(steps)
        lines.insert(0, f"The calculation{'s' if n > 1 else ''} "
                        f"({'; '.join(s['step'] for s in steps[:MAX_STEP_ERRORS])}"
                        f"{'; ...' if n > MAX_STEP_ERRORS else ''}) {'are' if n > 1 else 'is'} right.")
    if not lines:
        lines.append("The reasoning and the final answer are right." if correct else "The answer is wrong.")
    return "\n".join(lines) + "\n" + verdict_line(correct)


# A stated verdict opposite to the label: "the answer is correct" in a critique of a rejected one.
_SAYS_RIGHT = re.compile(r"\b(?:answer|solution|result|response|it|this)\s+(?:is|was)\s+(?:entirely\s+|fully\s+"
                         r"|completely\s+)?(?:correct|right)\b", re.I)
_SAYS_WRONG = re.compile(r"\b(?:is|was|are)\s+(?:incorrect|wrong)\b|\bmistakes?\b|\berrors?\b|\bmiscalculat", re.I)
_CLAIMED = re.compile(rf"(?:correct|right|actual|true|expected)\s+(?:final\s+)?(?:answer|result|value|total)"
                      rf"\s+(?:is|should be|would be|=|:)\s*\$?(-?{_NUM})|should\s+be\s+\$?(-?{_NUM})", re.I)


def honest(critique: str, item: Item, correct: bool, label: str = "checker") -> str | None:
    """Why a written critique must not be used for this label (None: nothing found against it).

    Refused: an empty critique; a verdict line or "Score: k/n" other than the label's; a critique of
    a rejected answer that calls it right, or of an accepted one that speaks of errors or mistakes;
    a critique that names a correct result other than the reference answer (checker labels). This
    catches what the critique states outright, not every false claim it could make."""
    text = (critique or "").strip()
    if not text:
        return "empty"
    v = verdict.parse_verdict(text)
    if v is not None and (v >= 0.5) != correct:
        return "states the opposite verdict"
    if not correct and _SAYS_RIGHT.search(_without_negations(text)):
        return "calls a rejected answer right"
    if correct and _SAYS_WRONG.search(_without_negations(text)):
        return "finds errors in an accepted answer"
    ref = item.get("answer")
    if label == "checker" and ref is not None and normalize_number(str(ref)) is not None:
        for m in _CLAIMED.finditer(text):
            claimed = normalize_number(m.group(1) or m.group(2))
            if claimed is not None and claimed != normalize_number(str(ref)):
                return f"claims the correct result is {claimed}, the reference is {ref}"
    return None


_NEGATED = re.compile(r"\b(?:not|no|never|isn't|wasn't|aren't|without)\b[^.;\n]*", re.I)


def _without_negations(text: str) -> str:
    """The text with each negated clause removed ("is not wrong", "no errors" say nothing)."""
    return _NEGATED.sub(" ", text)


def finish_model_critique(written: str, correct: bool) -> str:
    """A model-written critique as feedback: its text without any verdict line of its own, then
    the label's verdict line."""
    body = "\n".join(ln for ln in written.strip().splitlines()
                     if verdict.parse_verdict(ln) is None).strip()
    return body + "\n" + verdict_line(correct)
