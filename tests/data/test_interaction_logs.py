"""Interaction logs: the schema's loader (errors name file:line and the fix), the exchanges a log
gives with their conversation history, and the simulator as a producer of the same schema."""

import json

import pytest

from jaxevo.data import load_source
from jaxevo.data.interaction_logs import exchanges, load_interaction_logs, write_interaction_logs
from jaxevo.data.simulated_logs import simulate_sessions
from jaxevo.errors import ConfigError

S1 = {"session": "a", "user": "u1", "started_at": "2026-05-01T10:00:00Z", "topic": "pets", "turns": [
    {"role": "user", "text": "My dog is called Rex."},
    {"role": "assistant", "text": "Noted!", "ts": "2026-05-01T10:00:05Z"},
    {"role": "user", "text": "Thanks. What is 2 + 3?"},
    {"role": "assistant", "text": "The answer is 5.", "rating": 5, "thumb": "up"},
    {"role": "user", "text": "Great, bye."}]}
S2 = {"session": "b", "user": "u1", "started_at": "2026-05-03T10:00:00Z", "turns": [
    {"role": "user", "text": "What is my dog's name?", "topic": "memory"},
    {"role": "assistant", "text": "Your dog is Rex."}]}


def _write(tmp_path, rows):
    p = tmp_path / "logs.jsonl"
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def test_exchanges_with_history(tmp_path):
    p = _write(tmp_path, [S2, S1])  # out of time order in the file: history follows started_at
    recs = {r["id"]: r for r in exchanges(load_interaction_logs(p), history="user")}
    assert set(recs) == {"a/t0", "a/t1", "b/t0"}
    probe = recs["b/t0"]
    assert probe["prompt"] == "What is my dog's name?" and probe["topic"] == "memory"
    # The fact is in the earlier session's turns, not in the probe; the closing user turn of
    # session a ("Great, bye.") is left out so roles alternate.
    assert [m["content"] for m in probe["messages"]] == [
        "My dog is called Rex.", "Noted!", "Thanks. What is 2 + 3?", "The answer is 5.", "What is my dog's name?"]
    assert "Rex" not in probe["prompt"]
    t1 = recs["a/t1"]
    assert t1["logged"] == {"text": "The answer is 5.", "rating": 5, "thumb": "up", "next_user": "Great, bye."}
    assert recs["b/t0"]["logged"]["next_user"] is None  # the log ends after the answer
    assert len(exchanges(load_interaction_logs(p), history="session")[0]["messages"]) == 1  # b/t0 first
    assert [r["id"] for r in exchanges([S1, S2], history="none")] == ["a/t0", "a/t1", "b/t0"]
    assert all(len(r["messages"]) == 1 for r in exchanges([S1, S2], history="none"))
    items = list(load_source({"type": "interaction_logs", "path": str(p), "history": "session"}))
    assert len(items) == 3 and items[0]["id"] == "b/t0"


@pytest.mark.parametrize("row, message", [
    ("{not json", r"logs.jsonl:2: not valid JSON"),
    ({"turns": [{"role": "user", "text": "hi"}]}, r"logs.jsonl:2: \"session\" .* is required"),
    ({"session": "x", "turns": []}, r"logs.jsonl:2: \"turns\" must be a non-empty list"),
    ({"session": "x", "turns": [{"role": "assistant", "text": "hi"}]}, r"turns\[0\]: expected a user turn"),
    ({"session": "x", "turns": [{"role": "user", "text": "a"}, {"role": "user", "text": "b"}]},
     r"turns\[1\]: expected a assistant turn .* merge consecutive user turns"),
    ({"session": "x", "turns": [{"role": "user", "text": "a"}, {"role": "assistant", "text": "b", "rating": 7}]},
     r"turns\[1\]: rating must be a number from 1 to 5"),
    ({"session": "x", "turns": [{"role": "user", "text": "a"}, {"role": "assistant", "text": "b", "ratng": 4}]},
     r"turns\[1\]: unknown keys \['ratng'\]"),
    ({"session": "x", "turns": [{"role": "user", "text": "a", "thumb": "up"}]}, r"rating/thumb belong on the assistant"),
    ({"session": "x", "turns": [{"role": "user", "text": "a"}, {"role": "assistant", "text": "b", "thumb": "+1"}]},
     r"thumb must be \"up\" or \"down\""),
    ({"session": "x", "started_at": "yesterday", "turns": [{"role": "user", "text": "a"}]}, r"started_at: 'yesterday' is not ISO 8601"),
    ({"session": "a", "turns": [{"role": "user", "text": "a"}]}, r"logs.jsonl:2: session id 'a' repeats line 1"),
])
def test_loader_errors_name_line_and_fix(tmp_path, row, message):
    p = _write(tmp_path, [S1, row])
    with pytest.raises(ConfigError, match=message):
        load_interaction_logs(p)


def test_loader_missing_and_empty(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_interaction_logs(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="no sessions"):
        load_interaction_logs(_write(tmp_path, []))
    with pytest.raises(ConfigError, match="needs path"):
        load_source({"type": "interaction_logs"})
    with pytest.raises(ConfigError, match="history must be one of"):
        exchanges([S1], history="all")


def test_simulator_writes_the_schema(tmp_path):
    sessions = simulate_sessions(6, seed=3, accuracy=0.5, rating_prob=0.5)
    p = tmp_path / "sim.jsonl"
    assert write_interaction_logs(p, sessions) == len(sessions)
    back = load_interaction_logs(p)  # the loader accepts what the simulator writes
    assert back == sessions
    assert simulate_sessions(6, seed=3, accuracy=0.5, rating_prob=0.5) == sessions  # deterministic
    recs = exchanges(back, history="user")
    probes = [r for r in recs if r.get("kind") == "probe"]
    assert probes
    for r in probes:
        # Never in the probe's own turn; stated in an earlier session of the same user.
        assert r["answer"] not in r["question"]
        earlier = [m["content"] for m in r["messages"][:-1]]
        assert any(r["answer"] in t for t in earlier), r["id"]
        assert all(a["role"] != b["role"] for a, b in zip(r["messages"], r["messages"][1:]))
    ratings = [t.get("rating") for s in sessions for t in s["turns"] if t["role"] == "assistant"]
    assert any(x is None for x in ratings) and any(x is not None for x in ratings)


def test_simulated_logs_source_items():
    items = list(load_source({"type": "simulated_logs", "n": 4, "history": "none"}))
    assert {it["kind"] for it in items} <= {"question", "probe"}
    assert all(it["messages"][0]["role"] == "system" and len(it["messages"]) == 2 for it in items)
    assert all("logged" in it and it["logged"]["next_user"] for it in items)
