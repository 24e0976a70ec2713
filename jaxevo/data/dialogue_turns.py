"""Turn-level items of the multi-session dialogues: what DPSE trains and evaluates on.

Every `question` or `probe` step of a dialogue becomes one item whose prompt carries the facts the
user stated in earlier turns (the assistant's memory of the conversation so far) followed by the
user's message. Probes test long-term memory: their gold answer is a fact from an earlier session
(`kind="probe"`, checked with `check_probe`); questions are arithmetic (`kind="question"`).
"""

from __future__ import annotations

from typing import Any, Mapping

from jaxevo.data.base import Source, register_source
from jaxevo.data.dialogues import generate_dialogues

MEMORY_HEADER = "Things I told you in our earlier conversations:"
QUESTION_SUFFIX = "\nAnswer briefly and finish with 'The answer is N.'"
PROBE_SUFFIX = "\nAnswer in one short sentence."


def dialogue_turns(dialogue: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The question/probe items of one dialogue, each with the facts stated before it."""
    facts: list[str] = []
    items = []
    for session in dialogue["sessions"]:
        for step in session:
            if step["kind"] in ("fact", "update"):
                facts.append(step["prompt"])
                continue
            memory = ("\n".join([MEMORY_HEADER] + [f"- {f}" for f in facts]) + "\n\n") if facts else ""
            suffix = PROBE_SUFFIX if step["kind"] == "probe" else QUESTION_SUFFIX
            items.append({**{k: v for k, v in step.items() if k != "prompt"},
                          "prompt": memory + step["prompt"] + suffix, "question": step["prompt"],
                          "dialogue": dialogue["id"]})
    return items


@register_source("dialogue_turns", keys=("split", "n", "seed", "sessions", "kinds", "test_fraction"))
def dialogue_turns_source(spec: Mapping[str, Any]) -> Source:
    """``{"type": "dialogue_turns", "split": "train", "n": 100, "kinds": ["question", "probe"]}``:
    the items of `n` dialogues (so about n x 6 items)."""
    dialogues = generate_dialogues(int(spec.get("n", 100)), split=spec.get("split", "train"),
                                   seed=int(spec.get("seed", 0)), sessions=int(spec.get("sessions", 3)),
                                   test_fraction=float(spec.get("test_fraction", 0.2)))
    kinds = set(spec.get("kinds", ("question", "probe")))
    items = [it for d in dialogues for it in dialogue_turns(d) if it["kind"] in kinds]
    return Source.from_records(f"dialogue turns ({spec.get('split', 'train')})", items)
