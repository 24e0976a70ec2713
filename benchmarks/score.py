"""`jaxevo score` on 1,000 completions made by transformers, against a direct call in the same run.

    python benchmarks/score.py [--prompts 100] [--n 10] [--max-new-tokens 48] [--work /tmp/score_bench]

Makes the completions once (SmolLM2-135M-Instruct, the embedded model, sampled by transformers
at temperature 0.8 on held-out arithmetic problems; cached in --work), then times, each best of
3: the `jaxevo score` command as a user runs it (a fresh process: start-up, reading, scoring,
writing) with the `number` checker and with a reward function from a user file, and the direct
in-process loop over the same completions (`checker.check`, the reward called once). It checks
that the command's scores equal the direct ones and prints the ratio command / direct.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REWARD = '''
def mentions_gold(prompts, completions, answer, **columns):
    return [float(str(a) in c) for c, a in zip(completions, answer)]
'''


def make_completions(path: Path, prompts: int, n: int, max_new_tokens: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jaxevo.data import load_source
    from jaxevo.weights.load import hf_dir_for

    model_dir = hf_dir_for("smollm2-135m-instruct")  # the embedded GGUF as a Hugging Face directory
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    items = load_source({"type": "arithmetic", "split": "test", "n": prompts, "levels": [1, 2]}).to_list()
    # One thread: torch's OpenMP threads busy-wait, and on a shared, loaded machine one descheduled
    # thread stalls the others (docs/benchmarks.md, Sampler).
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows, t0 = [], time.perf_counter()
    for k in range(0, len(items), 25):
        chunk = items[k:k + 25]
        texts = [tok.apply_chat_template([{"role": "user", "content": it["prompt"]}], add_generation_prompt=True,
                                         tokenize=False) for it in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=0.8, max_new_tokens=max_new_tokens,
                                 num_return_sequences=n, pad_token_id=tok.eos_token_id)
        outs = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for j, it in enumerate(chunk):
            rows.append({"prompt": it["prompt"], "answer": it["answer"], "id": it["id"],
                         "completions": outs[n * j:n * j + n]})
        print(f"  generated {len(rows) * n} completions ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--work", default="/tmp/score_bench")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"completions_{args.prompts}x{args.n}_{args.max_new_tokens}.jsonl"
    if not data.exists():
        make_completions(data, args.prompts, args.n, args.max_new_tokens)
    (work / "bench_reward.py").write_text(REWARD)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    total = sum(len(r["completions"]) for r in rows)

    from jaxevo.checkers import get_checker
    from jaxevo.plugins import load_plugins

    checker = get_checker("number")
    reward = load_plugins([str(work / "bench_reward.py")])[0].mentions_gold
    direct_checker = [[checker.check(c, r) for c in r["completions"]] for r in rows]
    flat = [(c, r["answer"]) for r in rows for c in r["completions"]]
    t_direct_checker = best_of(lambda: [[checker.check(c, r) for c in r["completions"]] for r in rows])
    t_direct_reward = best_of(lambda: reward(prompts=[None] * len(flat), completions=[c for c, _ in flat],
                                             answer=[a for _, a in flat]))
    cmd = [sys.executable, "-m", "jaxevo.cli", "score", "--data", str(data), "--out", str(work / "scored.jsonl")]
    runs = {"checker number": cmd + ["--checker", "number"],
            "reward (user file)": cmd + ["--plugin", str(work / "bench_reward.py"), "--reward", "bench_reward:mentions_gold"]}
    times = {}
    for name, c in runs.items():
        times[name] = best_of(lambda: subprocess.run(c, check=True, capture_output=True))
        got = [json.loads(line)["scores"] for line in (work / "scored.jsonl").read_text().splitlines()]
        if name.startswith("checker"):
            assert got == direct_checker, "jaxevo score's checker scores differ from the direct call"
        else:
            want = reward(prompts=[None] * len(flat), completions=[c for c, _ in flat], answer=[a for _, a in flat])
            assert [s for row in got for s in row] == want, "jaxevo score's reward scores differ"
    acc = sum(map(sum, direct_checker)) / total
    print(f"{total} completions ({len(rows)} prompts x {args.n}, transformers, SmolLM2-135M-Instruct); "
          f"number-checker accuracy {acc:.1%}; scores equal the direct call")
    print(f"direct checker loop: {t_direct_checker * 1e3:.1f} ms; direct reward call: {t_direct_reward * 1e3:.1f} ms")
    for name, t in times.items():
        base = t_direct_checker if name.startswith("checker") else t_direct_reward
        print(f"jaxevo score, {name}: {t:.2f} s (whole command, fresh process) = {t / base:.0f}x the direct call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
