"""The default prompts of the LLM judges, each defined once (a config may replace any of them).

Slots: ``{prompt}`` the user's instruction, ``{answer}`` the answer graded (pointwise),
``{answer_a}`` / ``{answer_b}`` the two answers compared (pairwise), ``{rubric}`` what to weigh,
``{low}`` / ``{high}`` the ends of the score range. The verdict formats, ``Rating: [[N]]`` and
``[[A]]`` / ``[[B]]`` / ``[[C]]``, are MT-Bench's (Zheng et al. 2023): double brackets rarely
occur in an explanation by accident, so `parse` can tell a verdict from a number in the text.
"""

from __future__ import annotations

DEFAULT_RUBRIC = (
    "Consider the helpfulness, relevance, accuracy, depth and level of detail of the response, "
    "and whether it follows the user's instruction.")

POINTWISE_TEMPLATE = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question below. {rubric} Begin your evaluation with a short "
    "explanation. Be as objective as possible. After the explanation, rate the response on a scale "
    "of {low} to {high} by strictly following this format: \"Rating: [[N]]\", for example "
    "\"Rating: [[{low}]]\".\n\n"
    "[Question]\n{prompt}\n\n"
    "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]")

PAIRWISE_TEMPLATE = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question below. {rubric} Choose the assistant that answers the user's "
    "question better. Avoid any position bias: the order in which the responses are presented "
    "must not influence your decision, nor must their lengths. Begin your evaluation by comparing "
    "the two responses with a short explanation. After the explanation, output your final verdict "
    "by strictly following this format: \"[[A]]\" if assistant A is better, \"[[B]]\" if "
    "assistant B is better, and \"[[C]]\" for a tie.\n\n"
    "[User Question]\n{prompt}\n\n"
    "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]")

POINTWISE_SLOTS = ("prompt", "answer", "rubric", "low", "high")
PAIRWISE_SLOTS = ("prompt", "answer_a", "answer_b", "rubric")
