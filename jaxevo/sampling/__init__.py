"""The sampler: prompts in, completions out, on the model's decode forward (`jaxevo.models.decode`).

`api` (the `Sampler`), `params` (its value types), `loop` (the jitted decode loop: prefill, then a
`while_loop` over a KV cache, batch at a time or with continuous batching), `processors` (logit
processors as pure functions), `placement` (compiler options, shardings).

    from jaxevo.sampling import Sampler, SamplingParams
    sampler = Sampler.load("smollm2-135m-instruct")
    completions = sampler.generate(prompts, SamplingParams(temperature=0.8, n=4, max_new_tokens=128))
"""

from jaxevo.models.transformer import teacher_forced_logprobs
from jaxevo.sampling.api import Sampler, generate
from jaxevo.sampling.params import Completion, RunStats, SamplingParams, batch_bucket, length_bucket

__all__ = ["Completion", "RunStats", "Sampler", "SamplingParams", "batch_bucket", "generate",
           "length_bucket", "teacher_forced_logprobs"]
