"""The prompt templates of a round, each defined once. Slots: ``{prompt}`` the task as asked,
``{previous}`` an earlier answer to it.

(The task prompts of the built-in verifiable data sets live with their data, in
`jaxevo.data.prompts`.)
"""

from __future__ import annotations

# The model rewrites an answer of its own: a round's refine stage, the refine views of training
# (EVOLVE, SELF) and `jaxevo eval --self-refine`.
REFINE_TEMPLATE = (
    "{prompt}\n\nHere is a previous answer:\n{previous}\n\n"
    "Improve this answer. Give the complete improved answer.")

# A round's feedback stage: the model checks its answer and ends with the verdict line that the
# `self_judge` scorer reads. A round's training phases use it for their feedback views too.
FEEDBACK_TEMPLATE = (
    "Question: {prompt}\n\nAnswer: {previous}\n\nCheck the answer step by step. Then write "
    "'Judgement: correct' or 'Judgement: incorrect'.")

# The feedback view of a training phase run on its own (`jaxevo train`, objective self_meta):
# free-form feedback, no verdict line.
TRAIN_FEEDBACK_TEMPLATE = (
    "{prompt}\n\nHere is an answer:\n{previous}\n\n"
    "Give feedback on this answer: what is right and what is wrong.")

# SELF's meta-skill data written by a model (`meta.critique.source: model`): a critique of an
# answer given the reference answer and the label; the label's verdict line is appended to it.
CRITIQUE_TEMPLATE = (
    "Question: {prompt}\n\nAnswer: {previous}\n\nReference answer: {reference}\n"
    "This answer has been checked and is {label}. Explain briefly, step by step, what is wrong in "
    "it and why, or, if it is correct, why it is right. Do not write a verdict line.")

# Self-Instruct (`prompts.self_instruct`): the model writes one new question from example ones.
# {examples}: "1. question" lines ({next}, the number after them, may be used too). At 135M a
# one-problem request of this form (configs/self.yaml words it for math word problems) gave 6
# usable questions from 32 requests where a bare numbered list to continue gave none
# (docs/results.md).
SELF_INSTRUCT_TEMPLATE = (
    "Here are some example questions:\n\n{examples}\n\n"
    "Write one new question of the same kind, with different numbers and names. Write only the question.")
