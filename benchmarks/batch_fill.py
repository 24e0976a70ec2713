"""How full the decode batches of a finished run were: generated tokens / (rows x steps).

    python benchmarks/batch_fill.py runs/demo [--batch 64]

The decode loop runs a batch until its longest row stops, so a row that stops early idles (its
slot still costs a row of every matmul) until then. This reads the completions a run's sampling
stages wrote (`round_*/*/samples_*.jsonl`) and prints, per stage, the mean completion length and
the fill: sum of lengths / sum over batches of (rows x longest row). Batches are formed here in
file order, 64 rows at a time; the sampler forms them in prompt-length order, which is unrelated
to completion length, so the figure is an estimate. No model is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def lengths(stage_dir: Path) -> list[int]:
    """Token counts of every completion in a stage's sample journals, in file order."""
    out = []
    for f in sorted(stage_dir.glob("samples_*.jsonl")):
        for line in f.open():
            rec = json.loads(line)
            for group in rec.get("completions", []):
                for c in group if isinstance(group, list) else [group]:
                    out.append(len(c["token_ids"]))
    return out


def fill(lens: list[int], batch: int) -> float:
    """sum(lens) / sum over consecutive batches of (rows x longest row)."""
    used = sum(len(b) * max(b) for b in (lens[i:i + batch] for i in range(0, len(lens), batch)))
    return sum(lens) / used if used else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    stages = sorted(d for d in args.run.glob("round_*/*") if d.is_dir() and any(d.glob("samples_*.jsonl")))
    if not stages:
        print(f"no samples_*.jsonl under {args.run}/round_*/", file=sys.stderr)
        return 1
    print(f"{'stage':<28} {'completions':>11} {'mean tokens':>11} {'fill':>6}")
    for d in stages:
        lens = lengths(d)
        if lens:
            print(f"{str(d.relative_to(args.run)):<28} {len(lens):>11} {sum(lens) / len(lens):>11.1f} "
                  f"{fill(lens, args.batch):>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
