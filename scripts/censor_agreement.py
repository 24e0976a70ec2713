"""How often the Censor's text signals agree with the verifier on logged answers: the simulated
logs (`simulated_logs`, the scripted assistant right half the time), each logged answer scored
from its user's next turn alone (no quality signal), accepted at S >= 0.7 as DPSE's SFT selection
does, against the item's checker. Pure Python, no model.

    PYTHONPATH=. python scripts/censor_agreement.py --n 400
"""

import argparse
import collections

from jaxevo.checkers import checker_for
from jaxevo.data import load_source
from jaxevo.evolve import censor
from jaxevo.evolve.config import CensorSection


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="simulated users (dialogues)")
    ap.add_argument("--min-score", type=float, default=0.7)
    args = ap.parse_args()
    items = list(load_source({"type": "simulated_logs", "n": args.n, "history": "none"}))
    weights = {k: v for k, v in CensorSection().weights.items() if k != "quality"}
    stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for it in items:
        logged = it["logged"]
        r = {"text": logged["text"], "reaction": {k: logged[k] for k in ("next_user", "rating", "thumb")}}
        s = censor.satisfaction(censor.signals_for(it, r, "none"), weights)
        right = bool(checker_for(it).check(r["text"], it))
        accepted = s is not None and s >= args.min_score
        st = stats[it["kind"]]
        st.update(n=1, right=right, agree=accepted == right, tp=accepted and right, fp=accepted and not right)
    print("| kind | logged answers | right | agreement | precision | recall |\n|---|---|---|---|---|---|")
    for kind, st in sorted(stats.items()):
        print(f"| {kind} | {st['n']} | {st['right']} | {st['agree'] / st['n']:.1%} | "
              f"{st['tp'] / max(1, st['tp'] + st['fp']):.1%} | {st['tp'] / max(1, st['right']):.1%} |")


if __name__ == "__main__":
    main()
