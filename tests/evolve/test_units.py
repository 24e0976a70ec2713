"""Pure parts of the round driver: scorers, selection, the Censor, the run directory."""

import json

import jaxlib
import pytest

from jaxevo import cpu_store
from jaxevo.errors import ConfigError
from jaxevo.evolve import censor, select
from jaxevo.evolve.config import EvolveConfig
from jaxevo.evolve.driver import _record_cpu_paths
from jaxevo.evolve.report import write_report
from jaxevo.evolve.rundir import RunDir, config_hash
from jaxevo.evolve.scorers import SCORERS
from jaxevo.evolve.stages.evaluation import win_rate
from jaxevo.evolve.verdict import parse_verdict


def group(texts, answer="12", finish="eos", **item):
    return {"item": {"id": "q1", "answer": answer, **item}, "prompt": "What is 5+7?",
            "responses": [{"text": t, "finish": finish, "kind": "sample", "chain": i, "step": 0,
                           "logp": -float(i), "length": 5} for i, t in enumerate(texts)]}


def test_verifier_counts_only_strict_format():
    g = group(["5+7=12. The answer is 12.", "It is 12", "The answer is 13.", "12 + 0. The answer is 12"])
    assert SCORERS.get("verifier")(g, {}) == [1.0, 0.0, 0.0, 1.0]


def test_verifier_needs_gold():
    with pytest.raises(ConfigError, match="needs a gold"):
        SCORERS.get("verifier")(group(["The answer is 1."], answer=None), {})


def test_self_consistency_ignores_unformatted_and_copied_numbers():
    # Two unformatted answers mention 5 (copied from the question): they must not vote.
    g = group(["The answer is 12.", "The answer is 12.", "5 and 7", "5", "The answer is 11."])
    assert SCORERS.get("self_consistency")(g, {}) == [0.4, 0.4, 0.0, 0.0, 0.2]


def test_verdict_parser():
    assert parse_verdict("Step 1 ok. Judgement: correct") == 1.0
    assert parse_verdict("judgment - Incorrect, 5+7 is 12") == 0.0
    assert parse_verdict("Score: 7/10") == 0.7
    assert parse_verdict("Looks fine to me") is None


def test_self_judge_rejects_unformatted_even_if_judged_correct():
    g = group(["The answer is 12.", "twelve"])
    g["responses"][0]["feedback"] = "Judgement: correct"
    g["responses"][1]["feedback"] = "Judgement: correct"
    assert SCORERS.get("self_judge")(g, {}) == [1.0, 0.0]


def test_build_sft_takes_best_distinct_complete_answers():
    g = group(["The answer is 12.", "The answer is 12.", "So... The answer is 12.", "The answer is 12."])
    for r, s in zip(g["responses"], [1.0, 1.0, 1.0, 0.0]):
        r["score"] = s
    g["responses"][2]["finish"] = "length"  # cut off: never trained on
    out = select.build_sft([g], min_score=1.0, max_per_prompt=2)
    assert [r["response"] for r in out] == ["The answer is 12."]


def test_probe_answers_are_judged_by_the_probe_format():
    """A dialogue probe asks for one short sentence, not 'The answer is N': a Censor-satisfied
    probe answer is SFT data and a control candidate (it used to be dropped for lacking the
    arithmetic format, which left DPSE's SFT with its arithmetic turns only)."""
    long = "Your dog is called Rex. " + "I remember everything you told me about him. " * 4
    g = group(["Your dog is called Rex.", long, "Your dog is called Rex"], answer="Rex", kind="probe")
    for r, s in zip(g["responses"], [1.0, 1.0, 0.9]):
        r["score"] = s
    out = select.build_sft([g], min_score=0.7, max_per_prompt=3)
    assert [r["response"] for r in out] == ["Your dog is called Rex.", "Your dog is called Rex"]
    ctrl = select.format_control([g], 1, seed=0)
    assert ctrl[0]["response"] in {"Your dog is called Rex.", "Your dog is called Rex"}
    # The same replies to an arithmetic question have no final answer: not usable.
    q = group(["Your dog is called Rex."])
    q["responses"][0]["score"] = 1.0
    assert select.build_sft([q], min_score=0.7) == [] and select.format_control([q], 1, seed=0) == []


def test_build_pairs_by_score_and_by_rule():
    g = group(["The answer is 12.", "The answer is 10."])
    for r, s in zip(g["responses"], [1.0, 0.0]):
        r["score"] = s
    (p,) = select.build_pairs([g], mode="score", min_margin=0.5)
    assert (p["chosen"], p["rejected"], p["margin"]) == ("The answer is 12.", "The answer is 10.", 1.0)
    # Rule: chosen = last refinement of chain 0, rejected = its start — unless the scorer disagrees.
    g2 = group(["The answer is 10."])
    g2["responses"].append({"text": "The answer is 12.", "finish": "eos", "kind": "refine", "chain": 0,
                            "step": 1, "logp": 0.0, "length": 5})
    for r, s in zip(g2["responses"], [0.0, 1.0]):
        r["score"] = s
    (p,) = select.build_pairs([g2], mode="rule", min_margin=0.0)
    assert (p["chosen"], p["rejected"]) == ("The answer is 12.", "The answer is 10.")
    g2["responses"][0]["score"], g2["responses"][1]["score"] = 1.0, 0.0
    assert select.build_pairs([g2], mode="rule", min_margin=0.0) == []


def test_refine_views_are_evolve_sft():
    pairs = [{"prompt": "Q", "chosen": "good", "rejected": "bad", "id": "1"}]
    out = select.refine_views(pairs, "{prompt}|{previous}")
    assert [(r["prompt"], r["response"]) for r in out] == [("Q", "good"), ("Q|bad", "good")]


def test_format_control_ignores_scores_and_matches_count():
    gs = [group([f"The answer is {i}.", "no answer"]) for i in range(5)]
    for i, g in enumerate(gs):
        g["item"]["id"] = f"q{i}"
        for r in g["responses"]:
            r["score"] = 0.0
    out = select.format_control(gs, 3, seed=0)
    assert len(out) == 3 and all(r["response"].startswith("The answer is") for r in out)
    assert out == select.format_control(gs, 3, seed=0)  # deterministic


def test_meta_tuples_teach_verdicts_and_refine_towards_an_accepted_answer():
    g = group(["5+7=12. The answer is 12.", "The answer is 13.", "I think twelve", "The answer is 12."])
    g["responses"][3]["logp"] = -10.0  # the lower-ranked of the two accepted answers
    for r, s in zip(g["responses"], SCORERS.get("verifier")(g, {})):
        r["score"] = s
    wrong = group(["The answer is 3."])
    wrong["responses"][0]["score"] = 0.0
    t = select.meta_tuples([g, wrong], min_score=1.0)
    for x in t:  # every refinement may end in a parseable verdict the self_judge scorer reads
        assert parse_verdict(x["feedback"]) in (0.0, 1.0)
    assert len(t) == 4  # the second prompt has no accepted answer: nothing to refine towards
    by = {x["response"]: x for x in t}
    assert parse_verdict(by["5+7=12. The answer is 12."]["feedback"]) == 1.0
    assert by["5+7=12. The answer is 12."]["refined"] == "5+7=12. The answer is 12."
    assert "The final answer 13 does not match the correct answer, 12." in by["The answer is 13."]["feedback"]
    assert by["The answer is 13."]["refined"] == "5+7=12. The answer is 12."  # the best accepted
    assert "does not state a final answer" in by["I think twelve"]["feedback"]
    assert parse_verdict(by["I think twelve"]["feedback"]) == 0.0
    assert [x["correct"] for x in t] == [True, False, False, True]
    # reveal_reference=false: the gold answer never enters the critique of a rejected answer.
    hidden = select.meta_tuples([g, wrong], min_score=1.0, reveal_reference=False)
    assert all("12" not in x["feedback"] for x in hidden if not x["correct"])
    assert "The final answer 13 is wrong." in hidden[1]["feedback"]


def test_win_rate_pairs_items_by_id():
    before = [{"id": i, "correct": c} for i, c in enumerate([1, 1, 0, 0, 0])]
    after = [{"id": i, "correct": c} for i, c in enumerate([1, 0, 1, 1, 0])] + [{"id": 9, "correct": 1}]
    assert win_rate(before, after) == {"win_rate": (2 + 2 / 2) / 5, "wins": 2, "losses": 1, "items": 5}


def test_censor_satisfaction_orders_answers():
    # A simulated user's turn (its labels: kind, question, gold): the simulator writes the next user
    # turn for each fresh answer and the Censor reads that text.
    item = {"id": "d/s0/t0", "prompt": "One pen costs $2. How many dollars for 3 pens?", "answer": "6",
            "kind": "question", "topic": "shopping", "question": "One pen costs $2. How many dollars for 3 pens?"}
    g = {"item": item, "prompt": item["prompt"], "responses": [
        {"text": "3 pens cost $6. The answer is 6.", "kind": "sample"},
        {"text": "The answer is 5.", "kind": "sample"},
        {"text": "", "kind": "sample"}]}
    s = censor.satisfaction_scores(g, {"quality": "none"})
    assert s[0] > s[1] and s[0] > s[2]
    assert set(g["responses"][0]["signals"]) >= {"sentiment", "correction", "rephrase", "continuation"}
    with pytest.raises(ConfigError, match="unknown signals"):
        censor.satisfaction({"explicit": 1.0}, {"explicitt": 1.0})


def test_topic_stats_and_weights():
    gs = [{"item": {"topic": t}, "responses": [{"score": s}]} for t, s in
          [("a", 1.0), ("a", 0.0), ("a", 0.0), ("b", 1.0)]]
    st = censor.topic_stats(gs)
    assert st["a"]["freq"] == 0.75 and st["a"]["mean_s"] == pytest.approx(1 / 3)
    assert censor.worst_topics(st, 1) == ["a"]
    w = censor.pair_weights(["a", "a", "a", "b"], alpha=1.0)
    assert sum(w) / 4 == pytest.approx(1.0) and w[0] == pytest.approx(3 * w[3])
    assert censor.pair_weights(["a", "b"], alpha=0.0) == [1.0, 1.0]


def test_rundir_stage_lifecycle_and_resume_checks(tmp_path):
    cfg = {"run": {"rounds": 2, "dir": "x"}, "sample": {"n": 4}}
    run = RunDir(tmp_path, cfg).open()
    tmp = run.begin_stage(1, "generate")
    (tmp / "groups.jsonl").write_text("{}\n")
    assert not run.is_done(1, "generate")
    run.finish_stage(1, "generate", {"responses": 3})
    assert run.is_done(1, "generate") and (tmp_path / "round_001" / "generate" / "groups.jsonl").exists()
    assert json.loads((tmp_path / "manifest.json").read_text())["rounds"]["1"]["stages"]["generate"]["responses"] == 3
    RunDir(tmp_path, {**cfg, "run": {"rounds": 5, "dir": "x"}}).open()  # more rounds: fine
    with pytest.raises(ConfigError, match=r"sample.n: 4 -> 8"):
        RunDir(tmp_path, {**cfg, "sample": {"n": 8}}).open()
    assert config_hash(cfg) == config_hash({**cfg, "run": {"rounds": 9, "dir": "x"}})
    # A key added to jaxevo after the run started resumes at its default, not at another value.
    defaults = {"sample": {"n": 4, "top_k": 0}}
    RunDir(tmp_path, {**cfg, "sample": {"n": 4, "top_k": 0}}, defaults=defaults).open()
    with pytest.raises(ConfigError, match=r"sample.top_k: None -> 5"):
        RunDir(tmp_path, {**cfg, "sample": {"n": 4, "top_k": 5}}, defaults=defaults).open()
    with pytest.raises(ConfigError, match=r"sample.n: 4 -> 8"):  # an old key changed: still refused
        RunDir(tmp_path, {**cfg, "sample": {"n": 8, "top_k": 0}}, defaults={"sample": {"n": 8, "top_k": 0}}).open()


def test_report_stops_at_run_rounds(tmp_path):
    """A run started with more rounds and finished with fewer (run.rounds is resume-safe) reports
    only the rounds it was finished with."""
    import dataclasses

    from jaxevo.evolve.config import EvolveConfig
    from jaxevo.evolve.report import write_report

    cfg = EvolveConfig()
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, rounds=1))
    run = RunDir(tmp_path / "run", {"a": 1}).open()
    ev = {"accuracy": 0.5, "ci95_low": 0.4, "ci95_high": 0.6, "n": 10}
    for r in (0, 1):
        run.begin_stage(r, "eval")
        run.finish_stage(r, "eval", ev)
    run.begin_stage(2, "prompts")
    run.finish_stage(2, "prompts", {"prompts": 4})
    text = write_report(run, cfg)
    assert "| 1 | 50.0%" in text and "| 2 |" not in text
    # Columns no round has (no control arm, preference phase or gate here) are left out.
    head = next(line for line in text.splitlines() if line.startswith("| round"))
    assert head == "| round | accuracy (95% CI) | vs start |", head


def test_report_does_not_show_round_one_as_the_start_when_the_start_was_not_evaluated(tmp_path):
    """With `eval.before=false` there is no round-0 evaluation: the header must not call round 1's
    accuracy the start's, and a run without a control arm gets no paragraph about one."""
    from jaxevo.evolve.config import EvolveConfig
    from jaxevo.evolve.report import write_report

    run = RunDir(tmp_path / "run", {"a": 1}).open()
    run.begin_stage(1, "eval")
    run.finish_stage(1, "eval", {"accuracy": 0.28, "ci95_low": 0.2, "ci95_high": 0.35, "n": 150})
    text = write_report(run, EvolveConfig())
    assert "start model was not evaluated" in text and "28.0% (20.0%-35.0%) at the start" not in text
    assert "`control` is the format-only control arm" not in text
    run.begin_stage(0, "eval")
    run.finish_stage(0, "eval", {"accuracy": 0.07, "ci95_low": 0.04, "ci95_high": 0.12, "n": 150})
    assert "held-out items: 7.0% (4.0%-12.0%) at the start." in write_report(run, EvolveConfig())


def test_the_run_records_each_cpu_path_it_ran_on_once_and_a_changed_one_beside_it(tmp_path):
    """A resume that chooses differently (another machine, an emptied cache) is told apart in the
    manifest and the report; choosing the same again adds nothing."""
    run = RunDir(tmp_path / "run", {"a": 1}).open()
    cpu_store.forget()
    try:
        cpu_store.note("k1", "train step dots (E8 F16 bfloat16)", "xla", "measured", 100.0)
        _record_cpu_paths(run, "1/sft")
        cpu_store.forget()  # the resumed process reads the same choice back
        cpu_store.note("k1", "train step dots (E8 F16 bfloat16)", "xla", "cached", 100.0)
        _record_cpu_paths(run, "1/grpo")
        assert [(e["choice"], e["source"], e["stage"]) for e in run.manifest()["cpu_paths"]] == [
            ("xla", "measured", "1/sft")]
        cpu_store.forget()  # ... or measures again and chooses the other path
        cpu_store.note("k1", "train step dots (E8 F16 bfloat16)", "ynnpack_dot", "measured", 200.0)
        _record_cpu_paths(run, "2/sft")
        rec = run.manifest()["cpu_paths"]
        assert [(e["choice"], e["measured"], e["stage"]) for e in rec] == [
            ("xla", 100.0, "1/sft"), ("ynnpack_dot", 200.0, "2/sft")]
        machine = rec[0]["machine"]
        assert machine == f"{cpu_store.cpu_key()}, jaxlib {jaxlib.__version__}"
        assert (f"- {machine}: train step dots (E8 F16 bfloat16) `xla` (measured 1970-01-01 00:01 UTC); "
                f"train step dots (E8 F16 bfloat16) `ynnpack_dot` (measured 1970-01-01 00:03 UTC)\n"
                ) in write_report(run, EvolveConfig())
    finally:
        cpu_store.forget()


def test_scorer_setup_hooks_carry_what_a_scorer_asks_of_the_round():
    """The judge's feedback model and the Censor's weights and topic expansions come from the
    scorers' set-up hooks (no stage reads a scorer's name); `score.params` and the seed win."""
    import dataclasses
    import types

    from jaxevo.evolve.config import EvolveConfig

    base = EvolveConfig()

    def ctx(**score):
        cfg = dataclasses.replace(base, score=dataclasses.replace(base.score, **score),
                                  feedback=dataclasses.replace(base.feedback, enabled=True))
        return types.SimpleNamespace(cfg=cfg, seed=1001, round=1)

    s = SCORERS.get("verifier").prepare(ctx(scorer="verifier", params={"x": 1}))
    assert (s.params, s.feedback_model, s.expand_topics, s.topic_alpha) == ({"x": 1, "seed": 1001}, None, 0, 0.0)
    assert SCORERS.get("judge").prepare(ctx(scorer="judge", judge_model="m/j")).feedback_model == "m/j"
    with pytest.raises(ConfigError, match="needs score.judge_model"):
        SCORERS.get("judge").prepare(ctx(scorer="judge"))
    c = SCORERS.get("censor").prepare(ctx(scorer="censor", params={"quality": "verifier"}))
    assert c.params == {"weights": base.censor.weights, "quality": "verifier", "seed": 1001,
                        "rating_prob": base.censor.rating_prob, "engagement_words": base.censor.engagement_words}
    assert (c.expand_topics, c.topic_alpha) == (base.censor.expand_topics, base.censor.topic_alpha)
    assert c.expansion["per_topic"] == base.censor.expand_per_topic
    assert c.expansion["variants"] == base.censor.expand_variants
    bad = dataclasses.replace(base, censor=dataclasses.replace(base.censor, quality="oracle"))
    with pytest.raises(ConfigError, match=r"unknown censor.quality 'oracle'; known: self_judge, verifier"):
        SCORERS.get("censor").prepare(types.SimpleNamespace(cfg=bad, seed=0, round=1))
