"""DPSE's generative expansions: new prompts written by the model on the worst topics and around
well-received exchanges, filtered (malformed, near-duplicates) and answered; ROUGE-L by hand."""

import dataclasses
import types

import pytest

from jaxevo.evolve import expansion
from jaxevo.evolve.rundir import read_jsonl, write_jsonl
from jaxevo.evolve.scorers import SCORERS
from jaxevo.evolve.stages.dpse import expand_stage, logged_stage


def test_rouge_l_by_hand():
    # LCS("the cat sat on the mat", "the cat lay on the mat") = the cat on the mat = 5 of 6 each.
    assert expansion.rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # LCS = "a c" = 2; P = 2/3, R = 2/2 -> F = 0.8.
    assert expansion.rouge_l("a b c", "a c") == pytest.approx(0.8)
    assert expansion.rouge_l("x y", "p q") == 0.0 and expansion.rouge_l("", "a") == 0.0


def test_deduper_against_pool_and_itself():
    d = expansion.Deduper(["One pen costs $2. How many dollars for 3 pens?"], max_overlap=0.7)
    assert not d.keep("One pen costs $2. How many dollars for 4 pens?")  # near copy of the pool
    assert d.keep("My train leaves at 9 and the trip takes 3 hours. When do I arrive?")
    assert not d.keep("My train leaves at 9 and the trip takes 3 hours. When do I arrive?")  # of itself


@pytest.mark.parametrize("text, out", [
    ("New message: How many minutes are in 3 hours?\nextra line", "How many minutes are in 3 hours?"),
    ('"I bought 4 apples at $2 each, what did I pay?"', "I bought 4 apples at $2 each, what did I pay?"),
    ("Hi", None), ("", None), (None, None), ("1 2 3 4 5", None),
    ("Write one new message a user might send about travel.", None),  # the instruction echoed
    ("word " * 81, None),
])
def test_parse_generated(text, out):
    assert expansion.parse_generated(text) == out


class FakeSampler:
    """Writes new prompts for expansion requests and 'The answer is 5.' for anything else."""

    def __init__(self, topic_prompts, variants=()):
        self.texts = {"Here are messages": list(topic_prompts), "A user sent": list(variants)}
        self.requests = []

    def generate(self, prompts, sp, chat=True, progress=None):
        out = []
        for p in prompts:
            text = p if isinstance(p, str) else p[-1]["content"]
            self.requests.append(text)
            kind = next((k for k in self.texts if text.startswith(k)), None)
            if kind is not None:
                texts = [self.texts[kind].pop(0) if self.texts[kind] else "" for _ in range(sp.n)]
            else:
                texts = ["The answer is 5."] * sp.n
            out.append([types.SimpleNamespace(text=t, logprob=-1.0, length=4, finish_reason="stop") for t in texts])
        return out


def _ctx(tmp_path, groups, pool, sampler, **censor):
    from jaxevo.evolve.config import EvolveConfig
    cfg = EvolveConfig()
    cfg = dataclasses.replace(cfg, censor=dataclasses.replace(cfg.censor, **censor),
                              sample=dataclasses.replace(cfg.sample, n=2))
    (tmp_path / "scored.jsonl").parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(tmp_path / "scored.jsonl", groups)
    ctx = types.SimpleNamespace(cfg=cfg, seed=1, progress=False, scorer=SCORERS.get("censor"),
                                input=lambda f: tmp_path / f, prompt_pool=lambda: pool,
                                sampler=lambda model=None: sampler,
                                sampling=lambda *a, **k: types.SimpleNamespace(n=k.get("n", 1)))
    ctx.scoring = SCORERS.get("censor").prepare(ctx)
    return ctx


def _group(i, topic, score):
    item = {"id": f"p{i}", "prompt": f"Question {i} about {topic}: what is {i} plus {i}?", "topic": topic}
    return {"item": item, "prompt": item["prompt"], "responses": [{"text": "x", "kind": "sample", "score": score}]}


def test_expand_stage_generates_new_prompts(tmp_path):
    groups = [_group(0, "travel", 0.1), _group(1, "travel", 0.2), _group(2, "shopping", 0.9),
              _group(3, "shopping", 0.95)]
    pool = [g["item"] for g in groups] + [{"id": "q", "prompt": "How long is a flight from Oslo to Rome in hours?"}]
    new = ["How long is a flight from Oslo to Rome in hours?",           # a pool prompt: duplicate
           "My bus leaves at 7:15 and takes 40 minutes. When do I arrive?",
           "ok",                                                           # malformed
           "My bus leaves at 7:15 and takes 45 minutes. When do I arrive?",  # near-duplicate of the 2nd
           "I have 12 stickers and buy 30 more for my album, how many now?"]  # the variant
    sampler = FakeSampler(new[:4], new[4:])
    ctx = _ctx(tmp_path / "in", groups, pool, sampler, expand_topics=1, expand_per_topic=4,
               expand_variants=1, expand_min_score=0.9, quality="self_consistency")
    out = tmp_path / "out"
    out.mkdir()
    info = expand_stage(ctx, out)
    # The worst-satisfied topic is travel; its request shows travel's logged prompts as seeds.
    assert info["expanded_topics"] == ["travel"]
    topic_req = next(r for r in sampler.requests if r.startswith("Here are messages"))
    assert "about travel" in topic_req and "Question 0 about travel" in topic_req
    # The variant is of the best-received exchange (score 0.95).
    assert any(r.startswith("A user sent") and "Question 3 about shopping" in r for r in sampler.requests)
    assert (info["generated"], info["malformed"], info["duplicates"]) == (5, 1, 2)
    assert (info["expanded_prompts"], info["variant_prompts"]) == (1, 1)
    rows = read_jsonl(out / "scored.jsonl")
    assert rows[:4] == read_jsonl(tmp_path / "in" / "scored.jsonl")  # the round's groups unchanged
    added = rows[4:]
    assert [g["item"]["prompt"] for g in added] == [new[1], new[4]]
    assert [g["expanded"] for g in added] == ["topic", "variant"]
    assert added[0]["item"]["topic"] == "travel" and "answer" not in added[0]["item"]
    # Answered with sample.n answers and scored by the Censor's quality signal (both agree: 1.0).
    assert all(len(g["responses"]) == 2 and all(r["score"] == 1.0 for r in g["responses"]) for g in added)


def test_expand_stage_off_passes_groups_through(tmp_path):
    groups = [_group(0, "travel", 0.1)]
    sampler = FakeSampler([])
    ctx = _ctx(tmp_path / "in", groups, [], sampler, expand_topics=0, expand_variants=0)
    (tmp_path / "out").mkdir()
    info = expand_stage(ctx, tmp_path / "out")
    assert info["generated"] == 0 and not sampler.requests
    assert read_jsonl(tmp_path / "out" / "scored.jsonl") == groups


def test_logged_stage_adds_the_logged_answer(tmp_path):
    item = {"id": "s/t0", "prompt": "hi", "logged": {"text": "hello", "rating": 4, "thumb": None,
                                                     "next_user": "thanks"}}
    write_jsonl(tmp_path / "groups.jsonl", [{"item": item, "prompt": "hi", "responses": []},
                                            {"item": {"id": "x", "prompt": "y"}, "prompt": "y", "responses": []}])
    ctx = types.SimpleNamespace(input=lambda f: tmp_path / f)
    (tmp_path / "out").mkdir()
    assert logged_stage(ctx, tmp_path / "out") == {"logged_answers": 1}
    g = read_jsonl(tmp_path / "out" / "groups.jsonl")
    assert g[0]["responses"] == [{"text": "hello", "kind": "logged", "chain": -1, "step": 0, "finish": "stop",
                                  "reaction": {"next_user": "thanks", "rating": 4, "thumb": None}}]
    assert g[1]["responses"] == []


def test_deduper_pruning_matches_brute_force():
    from jaxevo.data import load_source

    texts = [it["prompt"] for it in load_source({"type": "simulated_logs", "n": 12})]
    for threshold in (0.5, 0.7):
        d, kept = expansion.Deduper([], threshold), []
        for t in texts:
            brute = all(expansion.rouge_l(t, k) < threshold for k in kept)
            assert d.keep(t) == brute, t
            if brute:
                kept.append(t)
        assert 0 < len(kept) < len(texts)  # the check saw both outcomes
