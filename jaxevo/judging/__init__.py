"""Judging open-ended answers: LLM judges (pointwise and pairwise), reward models, and the
win-rate statistics of `jaxevo eval` against a baseline (AlpacaEval-format files)."""
