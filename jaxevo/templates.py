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
