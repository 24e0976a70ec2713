"""Interaction logs: the JSONL schema DPSE learns from, its loader, and the `interaction_logs` source.

One line = one session (docs/interaction_logs.md has the full description and an example):

    {"session": "s-17",                     required, unique in the file
     "user": "u-3",                         optional; links the sessions of one user (history)
     "started_at": "2026-05-01T10:00:00Z",  optional ISO 8601; orders a user's sessions
     "topic": "shopping",                   optional; a turn's own topic wins
     "turns": [                             required; user and assistant alternate, user first
       {"role": "user", "text": "...", "ts": "...", "topic": "...", "labels": {...}},
       {"role": "assistant", "text": "...", "ts": "...", "rating": 4, "thumb": "up"}, ...]}

`rating` (1-5) and `thumb` ("up"/"down") are the user's explicit feedback on an assistant turn,
both optional. `labels` on a user turn are fields for evaluation only (a gold ``answer``, a
``kind``...): real logs have none; the simulated ones (`jaxevo.data.simulated_logs`) carry them so
the verifier ablation and the held-out evaluation can check answers. They reach training only
through scorers that read gold answers (the verifier), never as data.

`exchanges(sessions, history)` turns the sessions into records, one per assistant turn that
answers a user turn: the user turn is the `prompt`, the conversation before it the chat
`messages`, and the logged answer with the user's reaction (the next user turn, the rating, the
thumb) is `logged`, which the DPSE `logged` stage adds to the round's groups and the Censor reads.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from jaxevo.data.base import Source, register_source
from jaxevo.errors import ConfigError

__all__ = ["load_interaction_logs", "check_session", "exchanges", "write_interaction_logs", "HISTORY"]

HISTORY = ("none", "session", "user")
_SESSION_KEYS = {"session", "user", "started_at", "topic", "turns"}
_TURN_KEYS = {"role", "text", "ts", "topic", "rating", "thumb", "labels"}


def _ts(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be an ISO 8601 string like \"2026-05-01T10:00:00Z\", got {value!r}")
    try:
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not ISO 8601 (write e.g. \"2026-05-01T10:00:00Z\")") from None
    return value


def check_session(raw: Any, where: str) -> dict[str, Any]:
    """One session checked against the schema; `where` ("logs.jsonl:3") prefixes every error.
    Returns the session with its turns as plain dicts (unknown keys are errors: a typo such as
    "ratng" would otherwise drop a signal silently)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a session is a JSON object with \"session\" and \"turns\", got {type(raw).__name__}")
    unknown = set(raw) - _SESSION_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown session keys {sorted(unknown)}; allowed: {sorted(_SESSION_KEYS)}")
    sid = raw.get("session")
    if not isinstance(sid, str) or not sid:
        raise ConfigError(f"{where}: \"session\" (a non-empty string id) is required")
    for key in ("user", "topic"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise ConfigError(f"{where}: \"{key}\" must be a string, got {raw[key]!r}")
    if raw.get("started_at") is not None:
        _ts(raw["started_at"], f"{where}: started_at")
    turns = raw.get("turns")
    if not isinstance(turns, list) or not turns:
        raise ConfigError(f"{where}: \"turns\" must be a non-empty list of {{\"role\", \"text\"}} objects")
    out = []
    for i, t in enumerate(turns):
        tw = f"{where}: turns[{i}]"
        if not isinstance(t, dict):
            raise ConfigError(f"{tw}: a turn is an object {{\"role\": ..., \"text\": ...}}, got {t!r}")
        unknown = set(t) - _TURN_KEYS
        if unknown:
            raise ConfigError(f"{tw}: unknown keys {sorted(unknown)}; allowed: {sorted(_TURN_KEYS)}")
        role = t.get("role")
        want = "user" if i % 2 == 0 else "assistant"
        if role not in ("user", "assistant"):
            raise ConfigError(f"{tw}: role must be \"user\" or \"assistant\", got {role!r}")
        if role != want:
            raise ConfigError(f"{tw}: expected a {want} turn (turns alternate, user first); merge "
                              f"consecutive {role} turns into one")
        if not isinstance(t.get("text"), str):
            raise ConfigError(f"{tw}: \"text\" (a string) is required")
        if t.get("ts") is not None:
            _ts(t["ts"], f"{tw}: ts")
        if role == "user" and ("rating" in t or "thumb" in t):
            raise ConfigError(f"{tw}: rating/thumb belong on the assistant turn they rate")
        if t.get("rating") is not None:
            r = t["rating"]
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 1 <= r <= 5:
                raise ConfigError(f"{tw}: rating must be a number from 1 to 5, got {r!r}")
        if t.get("thumb") is not None and t["thumb"] not in ("up", "down"):
            raise ConfigError(f"{tw}: thumb must be \"up\" or \"down\", got {t['thumb']!r}")
        if t.get("labels") is not None and (role != "user" or not isinstance(t["labels"], dict)):
            raise ConfigError(f"{tw}: labels must be an object on a user turn")
        out.append(dict(t))
    return {**raw, "turns": out}


def load_interaction_logs(path: str | Path) -> list[dict[str, Any]]:
    """Every session of a JSONL log file, checked (a ConfigError names file:line and the fix)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"interaction log {str(p)!r} not found (prompts.source.path)")
    sessions, seen = [], {}
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); one session per line") from None
            s = check_session(raw, where)
            if s["session"] in seen:
                raise ConfigError(f"{where}: session id {s['session']!r} repeats line {seen[s['session']]}; ids must be unique")
            seen[s["session"]] = lineno
            sessions.append(s)
    if not sessions:
        raise ConfigError(f"{p}: no sessions (an empty log)")
    return sessions


def write_interaction_logs(path: str | Path, sessions: Iterable[Mapping[str, Any]]) -> int:
    """Write sessions as JSONL (each checked first); returns how many."""
    rows = [check_session(dict(s), f"session {i}") for i, s in enumerate(sessions)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for s in rows:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    return len(rows)


def _by_user(sessions: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A user's sessions in time order (started_at, then file order); no user: its own."""
    users: dict[str, list[tuple[int, dict]]] = {}
    for i, s in enumerate(sessions):
        users.setdefault(s.get("user") or f"\0{s['session']}", []).append((i, s))
    return {u: [s for _, s in sorted(v, key=lambda x: (x[1].get("started_at") or "", x[0]))]
            for u, v in users.items()}


def exchanges(sessions: list[dict[str, Any]], history: str = "user") -> list[dict[str, Any]]:
    """One record per logged (user turn, assistant turn), in log order.

    history: what conversation comes before the user turn in `messages`: "none", the earlier
      turns of the "session", or the earlier sessions of the same "user" too (their turns in time
      order). A memory probe's fact is then in an earlier session's turn, never in the probe.

    Record: ``id`` "<session>/t<k>", ``prompt`` (the user turn), ``messages``, ``topic``,
    ``session``, ``user``, ``turn``, the user turn's ``labels`` as fields, and ``logged``:
    ``{"text", "rating", "thumb", "next_user"}`` (next_user None: the session ended there).
    """
    if history not in HISTORY:
        raise ConfigError(f"interaction_logs: history must be one of {HISTORY}, got {history!r}")
    records = []
    for user_sessions in _by_user(sessions).values():
        earlier: list[dict[str, str]] = []  # turns of the user's earlier sessions
        for s in user_sessions:
            turns = s["turns"]
            for k in range(0, len(turns) - 1, 2):
                u, a = turns[k], turns[k + 1]
                before = [{"role": t["role"], "content": t["text"]} for t in turns[:k]]
                context = {"none": [], "session": before, "user": earlier + before}[history]
                nxt = turns[k + 2]["text"] if k + 2 < len(turns) else None
                rec = {**(u.get("labels") or {}),
                       "id": f"{s['session']}/t{k // 2}", "prompt": u["text"],
                       "messages": context + [{"role": "user", "content": u["text"]}],
                       "topic": u.get("topic") or s.get("topic"), "session": s["session"],
                       "user": s.get("user"), "turn": k // 2,
                       "logged": {"text": a["text"], "rating": a.get("rating"), "thumb": a.get("thumb"),
                                  "next_user": nxt}}
                records.append(rec)
            # A session's closing user turn (a reaction nobody answered) is left out of later
            # history: chat templates want user and assistant turns to alternate.
            closed = turns[:-1] if turns[-1]["role"] == "user" else turns
            earlier = earlier + [{"role": t["role"], "content": t["text"]} for t in closed]
    order = {s["session"]: i for i, s in enumerate(sessions)}
    records.sort(key=lambda r: (order[r["session"]], r["turn"]))
    return records


@register_source("interaction_logs", keys=("path", "history", "kinds"))
def interaction_logs_source(spec: Mapping[str, Any]) -> Source:
    """``{"type": "interaction_logs", "path": "logs.jsonl", "history": "user"}``: one record per
    logged exchange; ``kinds`` keeps only records whose ``kind`` label is listed (simulated logs)."""
    if "path" not in spec:
        raise ConfigError("interaction_logs source needs path: (a JSONL file, docs/interaction_logs.md)")
    items = exchanges(load_interaction_logs(spec["path"]), str(spec.get("history", "user")))
    return Source.from_records(f"interaction logs ({spec['path']})", _kinds(items, spec.get("kinds")))


def _kinds(items: list[dict[str, Any]], kinds: Any) -> list[dict[str, Any]]:
    if kinds is None:
        return items
    keep = set(kinds)
    return [it for it in items if it.get("kind") in keep]
