"""`jaxevo generate --model M --prompts in.jsonl --out out.jsonl [...]`: sample completions.

Each input line is a JSON object with "prompt" (a string, or a list of {"role", "content"} chat
messages) or "messages" (a chat, system turn included), and optionally "system" (a system turn
before a string prompt). Each output line keeps the input fields and adds "completions" (n strings) and
"logprobs" (per completion, the sum of its tokens' log-probs under the model — raw logits,
temperature 1 — stop token included when it ended on one). With --refine-steps / --best-of
(`jaxevo.strategies`) "completions" holds the one selected final answer and "strategy" every
chain (answers, self-feedback, the step it stopped at) and the selected index. The output is written to a temporary
file and renamed at the end, so a killed run never leaves a truncated file.
"""

from __future__ import annotations

import json
import os
import sys

from jaxevo.commands import positive_int
from jaxevo.commands.eval import add_strategy_arguments, selectors, strategy_of
from jaxevo.data.loaders import read_jsonl_rows
from jaxevo.data.records import chat_of, check_messages
from jaxevo.errors import JaxevoError
from jaxevo.outputs import check_writable


def add_arguments(p):
    p.add_argument("--model", required=True,
                   help="HF directory, .gguf file, jaxevo checkpoint, or embedded name (smollm2-135m-instruct)")
    p.add_argument("--prompts", required=True, help="input JSONL, one {\"prompt\": ...} per line")
    p.add_argument("--out", required=True, help="output JSONL")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--n", type=int, default=1, help="completions per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--no-chat", action="store_true", help="feed prompts as raw text (no chat template)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="compute dtype (bfloat16: fast; float32: exact f32 log-probs)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="max rows (prompt x sample) in flight")
    p.add_argument("--lanes", type=positive_int, default=None,
                   help="batches decoded at once by host threads, each of batch-size/lanes rows (default: 2 "
                        "on a CPU when the rows fill more than one batch, else 1; see docs/benchmarks.md)")
    p.add_argument("--continuous", action="store_true",
                   help="refill finished rows with waiting prompts instead of decoding batch by batch "
                        "(same completions to float rounding; no faster on the demo's workloads, see "
                        "docs/benchmarks.md)")
    p.add_argument("--max-length", type=int, default=None,
                   help="context limit for prompt + new tokens (default: the model's)")
    p.add_argument("--truncate", action="store_true",
                   help="left-truncate prompts that do not fit instead of failing")
    p.add_argument("--mesh", default=None,
                   help="data,fsdp,tensor mesh shape over all devices, e.g. 1,-1,1 (default: one device)")
    add_strategy_arguments(p)
    p.add_argument("--reward-model", metavar="DIR", help="with --select reward_model: the reward model")
    p.add_argument("--judge", metavar="J", help="with --select judge: the judge model")
    p.add_argument("--judge-max-new-tokens", type=int, default=256, help="with --judge: tokens before its verdict")


def read_prompts(path: str) -> list[dict]:
    rows = []
    for lineno, row in read_jsonl_rows(path):  # missing file / bad JSON: clear ConfigErrors
        if "prompt" not in row and "messages" in row:
            check_messages(row["messages"], f"{path}:{lineno}")
            rows.append(row)
            continue
        if "prompt" not in row:
            raise JaxevoError(f"{path}:{lineno}: no \"prompt\" field, nor chat \"messages\" (keys: {sorted(row)})")
        prompt = row["prompt"]
        ok = isinstance(prompt, str) or (isinstance(prompt, list) and all(
            isinstance(m, dict) and "role" in m and "content" in m for m in prompt))
        if not ok:
            raise JaxevoError(f"{path}:{lineno}: \"prompt\" must be a string or a list of "
                              "{\"role\", \"content\"} messages")
        rows.append(row)
    if not rows:
        raise JaxevoError(f"{path} has no prompts")
    return rows


def run(args) -> int:
    # Here, not at the top: the sampler and the mesh import jax, which `jaxevo generate --help`
    # needs neither (docs/benchmarks.md, CLI start-up).
    import jax

    from jaxevo.sampling import Sampler, SamplingParams
    from jaxevo.sharding import make_mesh

    strategy = strategy_of(args)
    if strategy.active and args.n != 1:
        raise JaxevoError("--n with --refine-steps/--best-of: the output has one (selected) completion "
                          "per prompt; give --best-of N for N samples")
    rows = read_prompts(args.prompts)
    out = check_writable(args.out)  # before sampling: a bad --out must not cost the completions
    chat = not args.no_chat
    inputs = [r["prompt"] if isinstance(r.get("prompt"), list) else chat_of(r) for r in rows]
    if not chat and any(not isinstance(p, str) for p in inputs):
        raise JaxevoError("--no-chat needs string prompts (got chat messages or a system turn)")
    # As `jaxevo eval`: N greedy samples would be one answer N times.
    temperature = 1.0 if strategy.best_of > 1 and args.temperature == 0 else args.temperature
    sp = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=temperature,
                        top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
                        repetition_penalty=args.repetition_penalty, n=max(args.n, strategy.best_of), seed=args.seed,
                        stop=tuple(args.stop))
    mesh = None
    if args.mesh:
        try:
            shape = tuple(int(x) for x in args.mesh.split(","))
        except ValueError:
            raise JaxevoError(f"--mesh {args.mesh!r}: give three integers, e.g. 1,-1,1") from None
        mesh = make_mesh(shape)
    sampler = Sampler.load(args.model, dtype=args.dtype, mesh=mesh, max_batch=args.batch_size,
                           max_length=args.max_length, continuous=args.continuous, lanes=args.lanes)
    outs = sampler.generate(inputs, sp, chat=chat, truncate=args.truncate)
    chains = chosen = None
    if strategy.active:  # refine each sample, keep one (jaxevo/strategies.py)
        from jaxevo.checkers import checker_for
        from jaxevo.strategies import run_strategy
        chains, chosen = run_strategy(sampler, inputs, rows, outs, strategy, [checker_for(r) for r in rows],
                                      max_new_tokens=args.max_new_tokens, chat=chat, stop=tuple(args.stop),
                                      **selectors(args, strategy))

    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")  # two runs on one --out never mix lines
    with tmp.open("w", encoding="utf-8") as f:
        for i, (row, comps) in enumerate(zip(rows, outs)):
            rec = dict(row)
            rec["completions"] = [c.text for c in comps]
            rec["logprobs"] = [c.logprob for c in comps]
            if chains is not None:  # the selected final answer; every chain beside it
                kept = chains[i][chosen[i]]
                rec["completions"], rec["logprobs"] = [kept.final], [kept.logprob]
                rec["strategy"] = {"chains": [c.as_dict() for c in chains[i]], "selected": chosen[i]}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    st = sampler.last_stats
    print(f"jaxevo generate: {len(rows)} prompts x {sp.n} -> {out} ({st.new_tokens} tokens in "
          f"{st.seconds:.1f}s, {st.tokens_per_second:.0f} tok/s"
          + (f"; CPU path {sampler.cpu_choice.label}" if jax.devices()[0].platform == "cpu" else "")
          + (f"; {st.truncated_prompts} prompts truncated" if st.truncated_prompts else "") + ")",
          file=sys.stderr)
    return 0
