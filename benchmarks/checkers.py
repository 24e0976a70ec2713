"""Answer checkers against their peers, in one run:

    python benchmarks/checkers.py [--n 1000] [--code 40]

  * math: jaxevo's `math` checker vs math-verify called directly (parse + verify of the whole
    completion, as open-r1 does) on the same `n` MATH-style completions; also how often they agree;
  * number: jaxevo's `number` checker (today's regexes) vs math-verify on `n` arithmetic completions;
  * code: `--code` runs of a small program in jaxevo's sandbox vs a bare `python -c` subprocess
    (no limits, no isolation): the sandbox's overhead per run; then `check_many` with a thread pool.

Prints seconds and completions per second for each side and the ratio (jaxevo / peer throughput).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from jaxevo.checkers import check_many, get_checker  # noqa: E402
from jaxevo.checkers import maths  # noqa: E402
from jaxevo.checkers.sandbox import network_isolation, run_python  # noqa: E402


def math_cases(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(completion, gold) pairs in the forms MATH answers take; about half right."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 97), rng.randint(2, 99)
        kind = i % 5
        if kind == 0:
            gold, said = f"\\frac{{{a}}}{{{b}}}", f"\\boxed{{\\dfrac{{{a}}}{{{b}}}}}"
        elif kind == 1:
            gold, said = f"{a / b:.6g}", f"The answer is ${a}/{b}$."
        elif kind == 2:
            gold, said = f"({a}, {a + b}]", f"\\boxed{{({a},{a + b}]}}"
        elif kind == 3:
            gold, said = f"{a}\\sqrt{{{b}}}", f"So we get \\boxed{{{a}\\sqrt{{{b}}}}}."
        else:
            gold, said = f"{a}", f"The length is \\boxed{{{a}\\text{{ cm}}}}."
        if rng.random() < 0.5:  # a wrong answer: change the first number
            said = said.replace(str(a), str(a + 1), 1)
        out.append((f"Let me work it out step by step. First, note that {b} is given. {said}", gold))
    return out


def number_cases(n: int, seed: int = 1) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 500), rng.randint(1, 500)
        right = a + b if rng.random() < 0.5 else a + b + 1
        out.append((f"{a} apples plus {b} apples gives {right} apples. The answer is {right}.", str(a + b)))
    return out


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--code", type=int, default=40)
    args = p.parse_args()
    from math_verify import LatexExtractionConfig, parse, verify

    def mv(text: str, gold: str) -> float:
        cfg = [LatexExtractionConfig(boxed_match_priority=0)]
        return float(verify(parse("\\boxed{" + gold + "}", extraction_config=cfg), parse(text)))

    # Warm both (sympy's first parse compiles its grammar), then clear jaxevo's parse caches so
    # the timed run parses every completion once, as the peer does.
    mv("\\boxed{1}", "1")
    get_checker("math").check("\\boxed{1}", {"answer": "1"})
    maths.parse_answer.cache_clear()
    maths.parse_gold.cache_clear()

    checker = get_checker("math")
    cases = math_cases(args.n)
    ours, t_ours = timed(lambda: [checker.check(t, {"answer": g}) for t, g in cases])
    peer, t_peer = timed(lambda: [mv(t, g) for t, g in cases])
    agree = sum(a == b for a, b in zip(ours, peer))
    print(f"math   n={args.n}: jaxevo {t_ours:.2f} s ({args.n / t_ours:.0f}/s, {sum(ours):.0f} right), "
          f"math-verify {t_peer:.2f} s ({args.n / t_peer:.0f}/s, {sum(peer):.0f} right); "
          f"ratio {t_peer / t_ours:.2f}x; agree on {agree}/{args.n}")

    number = get_checker("number")
    cases = number_cases(args.n)
    ours, t_ours = timed(lambda: [number.check(t, {"answer": g}) for t, g in cases])
    peer, t_peer = timed(lambda: [mv(t, g) for t, g in cases])
    agree = sum(a == b for a, b in zip(ours, peer))
    print(f"number n={args.n}: jaxevo {t_ours:.3f} s ({args.n / t_ours:.0f}/s), math-verify {t_peer:.2f} s "
          f"({args.n / t_peer:.0f}/s); ratio {t_peer / t_ours:.1f}x; agree on {agree}/{args.n}")

    program = "def f(x):\n    return x * 2\n\nassert f(21) == 42\n"
    _, t_bare = timed(lambda: [subprocess.run([sys.executable, "-c", program], check=True)
                               for _ in range(args.code)])
    results, t_box = timed(lambda: [run_python(program) for _ in range(args.code)])
    assert all(r.ok for r in results)
    code = {"id": "c", "checker": "code", "test": "assert f(21) == 42"}
    text = "```python\n" + program.split("\n\n")[0] + "\n```"
    scores, t_pool = timed(lambda: check_many([text] * args.code, [code] * args.code))
    assert scores == [1.0] * args.code
    print(f"code   runs={args.code}: sandbox {t_box / args.code * 1000:.0f} ms/run, bare python -c "
          f"{t_bare / args.code * 1000:.0f} ms/run; ratio {t_bare / t_box:.2f}x; check_many "
          f"{t_pool / args.code * 1000:.0f} ms/completion ({network_isolation()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
