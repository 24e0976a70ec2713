"""`number`: a final number in a strict format ("The answer is N", "#### N", ``\\boxed{N}``,
"Answer: N"), compared after normalisation — `jaxevo.data.answers`, unchanged, so runs made before
the checker registry score the same. `probe`: a dialogue memory probe's one short sentence that
must state the remembered fact (`check_probe`)."""

from __future__ import annotations

import re

from jaxevo.checkers.base import Checker, Record, register_checker
from jaxevo.data.answers import answers_match, check_probe, extract_answer, follows_format

__all__ = ["NUMBER", "PROBE"]


def _number_check(text: str | None, record: Record) -> float:
    return float(answers_match(extract_answer(text), record.get("answer")))


NUMBER = register_checker(Checker(
    name="number",
    extract=lambda text, record: extract_answer(text),
    check=_number_check,
    # follows_format, not is_well_formatted: a probe record checked as a number keeps the
    # one-short-sentence rule it had before checkers existed.
    well_formatted=lambda text, record: follows_format(text, record),
    description="a final number in a strict format (The answer is N, #### N, \\boxed{N}, Answer: N)",
))


def _probe_extract(text: str | None, record: Record) -> str | None:
    # The reply itself is the answer; lower-cased with runs of space collapsed so that votes
    # count "Rex." and "rex." as one.
    if not text or not text.strip():
        return None
    return re.sub(r"\s+", " ", text.strip()).lower()


PROBE = register_checker(Checker(
    name="probe",
    extract=_probe_extract,
    check=lambda text, record: float(check_probe(text, str(record["answer"]),
                                                 record.get("distractors") or ())),
    well_formatted=lambda text, record: follows_format(text, {"kind": "probe"}),
    description="a dialogue memory probe: one short sentence naming the remembered fact",
))
