"""Keep what a run's reported figures rest on, small enough for the repository: every evaluation's
per-item verdicts (`results.jsonl` anywhere under the run, reduced to ids, verdicts and extracted
answers) and the manifest (every stage's info). The copy is a run folder `jaxevo compare` reads,
so a later run can be paired item by item with this one after the run folder itself is gone.

    python scripts/keep_evals.py runs/self19 docs/runs/self19
"""

import argparse
import json
import shutil
from pathlib import Path

# The fields a paired comparison or a re-count needs; the texts stay in the run folder.
KEEP = ("id", "kind", "correct", "prediction", "formatted", "finish", "refined_correct", "refined_prediction")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a `jaxevo evolve` run folder")
    ap.add_argument("dest", type=Path, help="where to write the reduced copy")
    args = ap.parse_args()
    if not (args.run / "manifest.json").exists():
        raise SystemExit(f"{args.run}: not a `jaxevo evolve` run folder (no manifest.json)")
    args.dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.run / "manifest.json", args.dest / "manifest.json")
    n = 0
    for path in sorted(args.run.glob("round_[0-9][0-9][0-9]/**/results.jsonl")):
        if any(part.endswith(".partial") for part in path.parts):
            continue  # an unfinished stage
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out = args.dest / path.relative_to(args.run)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps({k: r[k] for k in KEEP if k in r}) + "\n" for r in rows))
        n += 1
    print(f"{args.dest}: manifest and {n} evaluations")


if __name__ == "__main__":
    main()
