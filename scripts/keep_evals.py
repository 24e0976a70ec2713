"""Keep what a run's reported figures rest on, small enough for the repository: every evaluation's
per-item verdicts (`results.jsonl` anywhere under the run, reduced to ids, verdicts and extracted
answers) and the manifest (every stage's info). The copy is a run folder `jaxevo compare` reads,
so a later run can be paired item by item with this one after the run folder itself is gone.

    python scripts/keep_evals.py runs/self19 docs/runs/self19
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

# The fields a paired comparison or a re-count needs; the texts stay in the run folder, their
# lengths ("chars") come along (`jaxevo compare` reports the answers' median length).
KEEP = ("id", "kind", "correct", "prediction", "formatted", "finish", "refined_correct", "refined_prediction")


def reduced(row: dict) -> dict:
    out = {k: row[k] for k in KEEP if k in row}
    if isinstance(row.get("completion"), str):
        out["chars"] = len(row["completion"])
    return out


def fail(message: str) -> None:
    """Bad input: say which file and why, exit 2 (the project's exit code for bad input)."""
    print(f"keep_evals: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a `jaxevo evolve` run folder")
    ap.add_argument("dest", type=Path, help="where to write the reduced copy")
    args = ap.parse_args()
    if not (args.run / "manifest.json").exists():
        fail(f"{args.run}: not a `jaxevo evolve` run folder (no manifest.json)")
    args.dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.run / "manifest.json", args.dest / "manifest.json")
    n = 0
    for path in sorted(args.run.glob("round_[0-9][0-9][0-9]/**/results.jsonl")):
        if any(part.endswith(".partial") for part in path.parts):
            continue  # an unfinished stage
        try:
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            kept = "".join(json.dumps(reduced(r)) + "\n" for r in rows)
        except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
            fail(f"{path}: not an evaluation's results ({e}); nothing was written for it")
        out = args.dest / path.relative_to(args.run)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(kept)
        n += 1
    print(f"{args.dest}: manifest and {n} evaluations")


if __name__ == "__main__":
    main()
