"""The sampler: jitted prefill + on-device `while_loop` decode over a KV cache (see `sampler`),
logit processors as pure functions (`processors`), and the Python API (`api`).

    from jaxevo.sampling import Sampler, SamplingParams
    sampler = Sampler.load("smollm2-135m-instruct")
    completions = sampler.generate(prompts, SamplingParams(temperature=0.8, n=4, max_new_tokens=128))
"""

from jaxevo.sampling.api import Completion, RunStats, Sampler, SamplingParams, generate

__all__ = ["Completion", "RunStats", "Sampler", "SamplingParams", "generate"]
