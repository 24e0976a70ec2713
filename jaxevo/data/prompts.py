"""Prompt templates for verifiable tasks and the matching answer-style targets.

The required answer format is the contract between the prompt, the extractor
(`jaxevo.data.answers.extract_answer`, strict by default) and the SFT targets: a prompt asks for
"The answer is N.", targets built from worked solutions end with "The answer is N.", and only
completions in that format count.
"""

from __future__ import annotations

import re

from jaxevo.data.records import apply_prompt_template

__all__ = ["DEFAULT_ARITHMETIC_TEMPLATE", "DIRECT_ARITHMETIC_TEMPLATE", "format_prompt", "solution_to_response"]

DEFAULT_ARITHMETIC_TEMPLATE = "{question}\nSolve it step by step, then finish with 'The answer is N.'"
# No reasoning: the shortest prompt, for quick evals of tiny models.
DIRECT_ARITHMETIC_TEMPLATE = "{question}\nReply with 'The answer is N.' where N is the number."


def format_prompt(question: str, template: str | None = None) -> str:
    """Fill `template` (default `DEFAULT_ARITHMETIC_TEMPLATE`); it must contain ``{question}``.
    Only that slot is substituted, so templates may contain other braces (JSON examples)."""
    return apply_prompt_template(question, DEFAULT_ARITHMETIC_TEMPLATE if template is None else template)


_FINAL_RE = re.compile(r"\n?####\s*(\S+)\s*$")


def solution_to_response(solution: str) -> str:
    """A GSM8K-style worked solution ("...\\n#### 7") as a target in the prompted format
    ("...\\nThe answer is 7."). Solutions without a "#### N" line are returned unchanged."""
    m = _FINAL_RE.search(solution)
    if not m:
        return solution
    body = solution[: m.start()].rstrip()
    final = f"The answer is {m.group(1)}."
    return f"{body}\n{final}" if body else final
