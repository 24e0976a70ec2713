"""Data layer: prompt sources, built-in verifiable tasks, answer and constraint checking.

Importing this package is cheap: `datasets` and `tensorflow_datasets` load only when an ``hf`` or
``tfds`` source is built.
"""

from jaxevo.data.answers import (
    answers_match,
    check_probe,
    extract_answer,
    follows_format,
    is_well_formatted,
    normalize_answer,
    normalize_number,
)
from jaxevo.data.arithmetic import generate_arithmetic
from jaxevo.data.constraints import check_constraint, check_constraints, constraint_score
from jaxevo.data.dialogues import generate_dialogues
from jaxevo.data.instructions import generate_instructions
from jaxevo.data.loaders import read_jsonl
from jaxevo.data.prompts import DEFAULT_ARITHMETIC_TEMPLATE, format_prompt, solution_to_response
from jaxevo.data.records import FieldMap, Record
from jaxevo.data.sources import Source, load_source, register_source, source_types
from jaxevo.data.user_sim import answer_quality, simulate_user_reaction

__all__ = [
    "DEFAULT_ARITHMETIC_TEMPLATE",
    "FieldMap",
    "Record",
    "Source",
    "answer_quality",
    "answers_match",
    "check_constraint",
    "check_constraints",
    "check_probe",
    "constraint_score",
    "extract_answer",
    "follows_format",
    "format_prompt",
    "generate_arithmetic",
    "generate_dialogues",
    "generate_instructions",
    "is_well_formatted",
    "load_source",
    "normalize_answer",
    "normalize_number",
    "read_jsonl",
    "register_source",
    "simulate_user_reaction",
    "solution_to_response",
    "source_types",
]
