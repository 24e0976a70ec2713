"""The built-in stages, registered in `jaxevo.evolve.recipe.STAGES` when this package is imported.

    stage       reads                          writes (into its folder round_NNN/<stage>/)
    prompts                                    prompts.jsonl   this round's slice of the prompt source
    generate    prompts.jsonl                  groups.jsonl    n sampled answers per prompt (y0)
    feedback    groups.jsonl                   groups.jsonl    + the model's critique of each (SELF)
    refine      groups.jsonl                   groups.jsonl    + chains of k self-refinements
    logged      groups.jsonl                   groups.jsonl    + each prompt's logged answer (DPSE, logs)
    score       groups.jsonl                   scored.jsonl    the scorer's scores
    expand      scored.jsonl                   scored.jsonl    + DPSE's generated prompts, answered, scored
    data        scored.jsonl                   sft.jsonl, pairs.jsonl, control.jsonl
    sft         sft.jsonl                      model           phase 1 training (train/final)
    preference  pairs.jsonl                    model           phase 2, reference log-probs once
    control     control.jsonl                  eval.json       format-only control arm, evaluated
    eval                                       results.jsonl   held-out accuracy of the round's model
    gate                                                       keep the round's model only if not worse
    meta                                       meta.jsonl ...  SELF's meta-skill round (round 0)
    grpo        prompts.jsonl                  model           online RL steps (GRPO family; evolve/online.py)
"""

from jaxevo.evolve.stages import dpse, evaluation, online, sampling, scoring, training

__all__ = ["dpse", "evaluation", "online", "sampling", "scoring", "training"]
