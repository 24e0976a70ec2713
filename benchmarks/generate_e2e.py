"""End to end, as a user runs it: `jaxevo generate` against a transformers `generate` script on the
same chat prompts, each a whole process (start-up, imports, model load, compilation, sampling).

    python benchmarks/generate_e2e.py                       # 256 chat prompts x <= 128 new tokens, greedy
    python benchmarks/generate_e2e.py --prompts 32 --new-tokens 16    # a smoke run
    python benchmarks/generate_e2e.py --out benchmarks/results/generate_e2e.json

Arms, one after the other, each timed from process start to exit:
- `jaxevo generate` with a fresh (empty) XLA compilation cache: a user's first run;
- the same command again on that cache: every later run;
- transformers `generate` in f32 and in bf16 (batches of `--batch-size` rows, left-padded, greedy,
  stopping at the end-of-turn token), with torch's default thread count.

Greedy on both sides, so both write (nearly) the same answers and the token counts match; each
arm's throughput is its own generated tokens (end-of-turn included) over its wall time. The model
is converted from its GGUF once, before the timed arms (a user pays that once, on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampler import MODEL, make_questions  # noqa: E402  (the sampler benchmark's prompts)

ROOT = Path(__file__).resolve().parent.parent


def cpu_facts() -> dict:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", text)
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split()) if "flags" in text else set()
    return {"cpu": model.group(1) if model else platform.processor(), "cores": os.cpu_count(),
            "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags}


def write_prompts(path: Path, n: int) -> None:
    with path.open("w") as f:
        for q in make_questions(n):
            f.write(json.dumps({"prompt": q}) + "\n")


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{cmd[:4]} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return wall, proc.stderr


def jaxevo_arm(args, prompts: Path, out: Path, env: dict) -> dict:
    cmd = [str(Path(sys.executable).with_name("jaxevo")), "generate", "--model", args.model, "--prompts", str(prompts),
           "--out", str(out), "--max-new-tokens", str(args.new_tokens), "--temperature", "0",
           "--batch-size", str(args.batch_size), "--dtype", args.jaxevo_dtype]
    wall, err = timed(cmd, env)
    m = re.search(r"\((\d+) tokens in ([\d.]+)s", err)
    tokens = int(m.group(1))
    return {"wall_s": wall, "tokens": tokens, "tok_s": tokens / wall, "sampling_s": float(m.group(2))}


def worker_transformers(args) -> None:
    """The transformers arm, as a user's script would do it; writes tokens to --worker-out."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jaxevo.weights.load import hf_dir_for

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.worker]
    d = hf_dir_for(args.model) if not Path(args.model).is_dir() else args.model
    tok = AutoTokenizer.from_pretrained(d, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype).eval()
    rows = [json.loads(line)["prompt"] for line in Path(args.prompts_file).read_text().splitlines()]
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    tokens = 0
    with torch.inference_mode():
        for i in range(0, len(rows), args.batch_size):
            texts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True) for q in rows[i:i + args.batch_size]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, do_sample=False, max_new_tokens=args.new_tokens, eos_token_id=eos,
                                 pad_token_id=tok.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            for row in new.tolist():  # tokens up to and including the end of turn, as jaxevo counts
                tokens += row.index(eos) + 1 if eos in row else len(row)
    Path(args.worker_out).write_text(json.dumps({"tokens": tokens, "threads": torch.get_num_threads()}))


def transformers_arm(args, prompts: Path, dtype: str, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / "r.json"
        cmd = [sys.executable, __file__, "--worker", dtype, "--worker-out", str(res), "--prompts-file",
               str(prompts), "--model", args.model, "--new-tokens", str(args.new_tokens),
               "--batch-size", str(args.batch_size)]
        wall, _ = timed(cmd, env)
        r = json.loads(res.read_text())
    return {"wall_s": wall, "tokens": r["tokens"], "tok_s": r["tokens"] / wall, "threads": r["threads"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=MODEL)
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--jaxevo-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--skip", action="append", default=[], help="skip an arm: jaxevo, transformers-f32, ...")
    p.add_argument("--out", default=None, help="write the results as JSON")
    p.add_argument("--worker", choices=["float32", "bfloat16"], help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker_transformers(args)

    res = {"machine": cpu_facts(), "prompts": args.prompts, "new_tokens": args.new_tokens,
           "batch_size": args.batch_size, "arms": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompts = tmp / "prompts.jsonl"
        write_prompts(prompts, args.prompts)
        env = dict(os.environ, PYTHONPATH=str(ROOT), JAXEVO_XLA_CACHE=str(tmp / "xla"))
        # Convert the GGUF (once per machine, cached) outside the timed arms.
        subprocess.run([sys.executable, "-c", f"from jaxevo.weights.load import hf_dir_for; hf_dir_for({args.model!r})"],
                       check=True, env=env, cwd=ROOT)
        arms = res["arms"]
        if "jaxevo" not in args.skip:
            arms["jaxevo, first run (empty compilation cache)"] = jaxevo_arm(args, prompts, tmp / "a.jsonl", env)
            arms["jaxevo, later runs (compilation cache)"] = jaxevo_arm(args, prompts, tmp / "b.jsonl", env)
        for dtype, short in (("float32", "f32"), ("bfloat16", "bf16")):
            if f"transformers-{short}" not in args.skip:
                arms[f"transformers {short}"] = transformers_arm(args, prompts, dtype, env)
    for name, a in arms.items():
        print(f"{name:48s} {a['wall_s']:7.1f} s  {a['tokens']:6d} tokens  {a['tok_s']:6.1f} tok/s")
    peers = [a["tok_s"] for n, a in arms.items() if n.startswith("transformers")]
    if peers:
        best = max(peers)
        for name, a in arms.items():
            if name.startswith("jaxevo"):
                a["ratio_vs_best_transformers"] = a["tok_s"] / best
                print(f"{name}: {a['tok_s'] / best:.2f}x the best transformers arm")
    print(json.dumps(res["machine"]))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
