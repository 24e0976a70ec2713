"""Simulated interaction logs: the generated multi-session dialogues played out as logged sessions.

The simulated user (`jaxevo.data.user_sim`) is one producer of logs in the schema of
`jaxevo.data.interaction_logs`, as a deployed assistant's users would be: each dialogue step is a
user turn, a scripted assistant answers it, and the user's reaction (`simulate_user_reaction`)
opens the next user turn ("Thanks, that helps." + the next question). A reaction that abandons
ends the session; the rest of that session is never asked, and later probes of facts it would
have stated are dropped. A rating is logged with probability `rating_prob` (real users rarely
rate), so the Censor mostly reads texts.

The scripted assistant is right with probability `accuracy` ("The answer is 47.", "Your dog is
called Rex.") and otherwise wrong in the ways the simulator tells apart (another number, an
outdated or other value, an off-topic reply). Each user turn carries `labels` (kind, gold answer,
fact slot, value, distractors) for the verifier ablation and the held-out evaluation only.

Sessions of one dialogue share a `user`, so with ``history: user`` a probe's fact is in an
earlier session's turn of the conversation history, never in the probe's own turn.
"""

from __future__ import annotations

import datetime
import random
from typing import Any, Mapping

from jaxevo.data.base import Source, register_source
from jaxevo.data.dialogues import FACT_SLOTS, generate_dialogues
from jaxevo.data.interaction_logs import _kinds, exchanges
from jaxevo.data.records import stable_hash
from jaxevo.data.user_sim import simulate_user_reaction

__all__ = ["simulate_sessions", "scripted_answer", "SYSTEM"]

# What the assistant is told; the users' turns carry no answer-format instructions (real users
# do not write them), so the format the checkers read is asked for here.
SYSTEM = ("You are a helpful assistant with a memory of earlier conversations with this user. "
          "For a calculation, answer briefly and finish with 'The answer is N.'. For a question "
          "about the user, answer in one short sentence.")
_LABELS = ("kind", "answer", "slot", "value", "distractors", "fact_session")
_START = datetime.datetime(2026, 1, 5, 9, 0, tzinfo=datetime.timezone.utc)


def scripted_answer(step: Mapping[str, Any], r: random.Random, accuracy: float) -> str:
    """The scripted assistant's reply to a dialogue step: right with probability `accuracy`."""
    kind, good = step["kind"], r.random() < accuracy
    if kind in ("fact", "update"):
        return r.choice(("Noted, I'll remember that.", "Got it, thanks for telling me.")) if good \
            else "Interesting! Anything else?"
    if kind == "probe":
        slot_values = FACT_SLOTS[step["slot"]][3]
        value = step["answer"] if good else r.choice([v for v in slot_values if v != step["answer"]])
        return f"You told me it is {value}." if good or r.random() < 0.7 else "I'm sorry, I don't remember."
    gold = int(float(step["answer"]))
    return f"The answer is {gold if good else gold + r.choice((-10, -2, -1, 1, 3, 12))}."


def _dialogue_sessions(d: Mapping[str, Any], r: random.Random, accuracy: float, rating_prob: float,
                       day: int) -> list[dict[str, Any]]:
    sessions, dropped = [], set()  # slots whose statement was never made (abandoned session)
    for s, steps in enumerate(d["sessions"]):
        turns: list[dict[str, Any]] = []
        lead = ""  # the user's reaction to the previous answer opens the next turn
        t0 = _START + datetime.timedelta(days=day + 2 * s)
        kept = [st for st in steps if not (st["kind"] == "probe" and st.get("slot") in dropped)]
        for k, step in enumerate(kept):
            labels = {key: step[key] for key in _LABELS if step.get(key) is not None}
            # What the simulated user asks without the lead, and asks next: the Censor's simulated
            # reactions to fresh answers open the same next turn as the logged one.
            labels["question"] = step["prompt"]
            if k + 1 < len(kept):
                labels["followup"] = kept[k + 1]["prompt"]
            ts = (t0 + datetime.timedelta(minutes=2 * k)).isoformat().replace("+00:00", "Z")
            turns.append({"role": "user", "text": (lead + " " + step["prompt"]).strip(), "ts": ts,
                          "labels": labels})
            answer = scripted_answer(step, r, accuracy)
            turn = {"role": "assistant", "text": answer, "ts": ts}
            reaction = simulate_user_reaction(step, answer, r)
            if r.random() < rating_prob:
                turn["rating"] = reaction["rating"]
            turns.append(turn)
            lead = reaction["text"]
            if reaction["abandon"]:
                break
        # The facts this session never got to (abandoned): later probes of them are dropped.
        asked = {t["labels"].get("slot") for t in turns if t["role"] == "user" and t.get("labels")}
        dropped |= {st.get("slot") for st in steps if st["kind"] in ("fact", "update")} - asked
        turns.append({"role": "user", "text": lead})  # the reaction to the session's last answer
        sessions.append({"session": f"{d['id']}/s{s}", "user": d["id"],
                         "started_at": t0.isoformat().replace("+00:00", "Z"), "topic": d["topic"],
                         "turns": turns})
    return sessions


def simulate_sessions(n: int, *, split: str = "train", seed: int = 0, accuracy: float = 0.5,
                      rating_prob: float = 0.2, sessions: int = 3) -> list[dict[str, Any]]:
    """The logged sessions of `n` simulated users (one generated dialogue each), deterministic in
    (n, split, seed, accuracy, rating_prob, sessions)."""
    dialogues = generate_dialogues(n, split=split, seed=seed, sessions=sessions)
    out = []
    for i, d in enumerate(dialogues):
        r = random.Random(int(stable_hash("simulated_logs", seed, d["id"], accuracy)[:16], 16))
        out.extend(_dialogue_sessions(d, r, accuracy, rating_prob, day=i))
    return out


@register_source("simulated_logs", keys=("split", "n", "seed", "accuracy", "rating_prob", "sessions",
                                         "history", "kinds", "system"))
def simulated_logs_source(spec: Mapping[str, Any]) -> Source:
    """``{"type": "simulated_logs", "split": "train", "n": 100, "history": "user"}``: the exchanges
    of `simulate_sessions` (as `interaction_logs` reads a file of them), each with the `SYSTEM`
    turn first unless ``system: null``; ``kinds`` (default question and probe) filters by label."""
    sessions = simulate_sessions(int(spec.get("n", 100)), split=spec.get("split", "train"),
                                 seed=int(spec.get("seed", 0)), accuracy=float(spec.get("accuracy", 0.5)),
                                 rating_prob=float(spec.get("rating_prob", 0.2)),
                                 sessions=int(spec.get("sessions", 3)))
    items = exchanges(sessions, str(spec.get("history", "user")))
    system = spec.get("system", SYSTEM)
    if system:
        for it in items:
            it["messages"] = [{"role": "system", "content": system}] + it["messages"]
    return Source.from_records(f"simulated logs ({spec.get('split', 'train')})",
                               _kinds(items, spec.get("kinds", ("question", "probe"))))
