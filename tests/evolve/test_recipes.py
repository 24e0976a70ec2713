"""End to end: two rounds of every shipped recipe on a tiny random model, asserting the artifacts,
manifest and metrics of every stage."""

import json
from pathlib import Path

import pytest

from jaxevo.evolve import select
from jaxevo.evolve.config import ROUND_STAGES
from jaxevo.evolve.driver import run_evolve
from jaxevo.evolve.rundir import read_jsonl
from tests.evolve.conftest import recipe

TRAIN_OVERRIDES = {  # tiny phases: 2 optimizer steps each
    "demo": ["sft.epochs=1", "sft.batch_size=4", "sft.micro_batch_size=2"],
    # A random model is never verifiably right, so score-chosen pairs would be empty: use the rule.
    "evolve": ["sft.batch_size=4", "preference.batch_size=2", "select.pairs=rule", "select.min_margin=0.0"],
    "self": ["sft.epochs=1", "sft.batch_size=4", "meta.enabled=true", "meta.prompts=4", "meta.n=2",
             "meta.min_score=0.0", "meta.epochs=1", "rounds.gate.n=4",
             "prompts.self_instruct.max_new_tokens=8", "prompts.self_instruct.attempts=1"],
    "dpse": ["sft.batch_size=4", "preference.batch_size=2", "select.min_margin=0.05",
             "select.min_score=0.0", "prompts.source.n=6", "eval.source.n=2", "run.keep_checkpoints=true",
             # Short contexts on 2 cores: the users' histories are tested in tests/data.
             "prompts.source.history=session", "eval.source.history=session",
             "sft.data.max_length=384", "preference.data.max_length=384", "censor.expand_per_topic=2",
             "censor.expand_variants=2"],
}


# self and dpse take 1-2 minutes each on 2 cores: heavy (`bash scripts/test.sh -m heavy`). So does
# evolve; its round of every stage, preference phase included, is in the default suite through
# tests/evolve/test_resume.py, and two chained rounds through the demo recipe here.
@pytest.mark.parametrize("name", ["demo", pytest.param("evolve", marks=pytest.mark.heavy),
                                  pytest.param("self", marks=pytest.mark.heavy),
                                  pytest.param("dpse", marks=pytest.mark.heavy)])
def test_two_rounds(name, tmp_path, tiny_model):
    cfg, raw = recipe(name, tmp_path / name, tiny_model, *TRAIN_OVERRIDES[name])
    m = run_evolve(cfg, raw)
    root = tmp_path / name
    assert (root / "config.yaml").exists() and (root / "report.md").exists()
    assert (root / "accuracy.svg").read_text().startswith("<svg")
    assert (root / "final_model" / "config.json").exists()
    # The CPU paths the stages ran on, each with the first stage that used it, and in the report.
    noted = {e["what"].split(" (")[0]: e for e in m["cpu_paths"]}
    assert {"sampler dots and weights", "train step dots"} <= set(noted)
    meta = cfg.meta.enabled  # SELF's meta-skill stage (round 0) samples and trains first
    assert noted["sampler dots and weights"]["stage"] == ("0/meta" if meta else "0/eval")
    assert noted["train step dots"]["stage"] == ("0/meta" if meta else "1/sft")
    assert all(f"{e['what']} `{e['choice']}`" in (root / "report.md").read_text() for e in m["cpu_paths"])
    n_eval = m["rounds"]["0"]["stages"]["eval"]["n"]
    assert n_eval == len(read_jsonl(root / "round_000" / "eval" / "results.jsonl")) > 0
    for r in (1, 2):
        rd = m["rounds"][str(r)]
        assert rd["done"] and rd["model"]
        assert list(rd["stages"]) == list(cfg.stages)  # every stage ran, in order
        # DPSE adds its log and expansion stages to the common ones.
        assert [s for s in cfg.stages if s not in ("logged", "expand")] == list(ROUND_STAGES)
        for stage in cfg.stages:
            assert (root / f"round_{r:03d}" / stage).is_dir()
        groups = read_jsonl(root / f"round_{r:03d}" / "score" / "scored.jsonl")
        assert len(groups) >= cfg.prompts.per_round
        assert all("score" in resp for g in groups for resp in g["responses"])
        st = rd["stages"]
        assert st["generate"]["responses"] == cfg.prompts.per_round * cfg.sample.n
        assert 0 <= st["eval"]["accuracy"] <= 1 and st["eval"]["ci95_low"] <= st["eval"]["ci95_high"]
        assert st["sft"].get("steps", 0) >= 1 or st["sft"].get("skipped")
        eval_rows = read_jsonl(root / f"round_{r:03d}" / "eval" / "results.jsonl")
        assert len(eval_rows) == st["eval"]["n"]
        # The round's model is a loadable checkpoint directory.
        model = root / rd["model"]
        assert (model / "jaxevo.json").exists(), model
    # A finished training stage keeps its exported model; its Orbax train state (disk) only
    # when asked to (dpse's overrides).
    assert bool(list(root.glob("round_*/*/train/checkpoints/*"))) == cfg.run.keep_checkpoints
    assert list(root.glob("round_*/*/train/final/jaxevo.json"))
    # Round metrics: one metrics.jsonl line per round (and TensorBoard), win rate vs the round before.
    rows = [json.loads(x) for x in (root / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and all("eval/accuracy" in r for r in rows)
    assert "eval/vs_previous/win_rate" in rows[2] and (root / "tensorboard").is_dir()
    vs = m["rounds"]["2"]["stages"]["eval"]["vs_previous"]
    assert vs["items"] == m["rounds"]["2"]["stages"]["eval"]["n"] and 0 <= vs["win_rate"] <= 1
    # Round 2 starts from round 1's model.
    cfg2 = json.loads((root / "round_002" / "sft" / "train" / "final" / "jaxevo.json").read_text()) \
        if (root / "round_002" / "sft" / "train" / "final").exists() else None
    if cfg2 and not cfg.rounds.restart_from_base:
        assert "round_001" in cfg2["base_model"]
    if name in ("evolve", "dpse"):
        assert m["rounds"]["1"]["stages"]["data"]["pairs"] >= 1
        assert m["rounds"]["1"]["stages"]["preference"]["steps"] >= 1
    if name == "evolve":
        assert m["rounds"]["1"]["stages"]["refine"]["refinements"] == cfg.prompts.per_round * cfg.sample.n * 2
        sft = read_jsonl(root / "round_001" / "data" / "sft.jsonl")
        assert {r["view"] for r in sft} == {"direct", "refine"}
    if name == "self":
        groups = read_jsonl(root / "round_001" / "score" / "scored.jsonl")
        assert all("feedback" in resp for g in groups for resp in g["responses"])
        # The meta-skill round ran first; its model is where every round restarts from, and its
        # direct-answer data is mixed into every round's SFT data.
        meta = m["rounds"]["0"]["stages"]["meta"]
        assert meta["tuples"] == 4 * 2 and meta["steps"] >= 1 and 0 <= meta["eval"]["accuracy"] <= 1
        tuples = read_jsonl(root / "round_000" / "meta" / "meta.jsonl")
        assert {"prompt", "response", "feedback", "refined"} <= set(tuples[0])
        assert (root / "round_000" / "meta" / meta["model"] / "jaxevo.json").exists()
        for r in (1, 2):
            info = json.loads((root / f"round_{r:03d}" / "sft" / "train" / "final" / "jaxevo.json").read_text())
            assert "round_000/meta/" in info["base_model"], info["base_model"]
        qa = {x["response"] for x in read_jsonl(root / "round_000" / "meta" / "qa.jsonl")}
        sft2 = read_jsonl(root / "round_002" / "data" / "sft.jsonl")
        assert qa <= {x["refined"] for x in sft2}
        # Restart training keeps every meta-skill view: the meta tuples whole (has_meta 1), and
        # round 1's and round 2's own answers as direct answers (has_meta 0), with self_meta.
        assert [x for x in sft2 if x["has_meta"] == 1] == [{**t, "has_meta": 1} for t in tuples]
        own1 = select.own_data(read_jsonl(root / "round_001" / "data" / "sft.jsonl"))
        assert own1 and ({(x["prompt"], x["response"]) for x in own1}
                         <= {(x["prompt"], x["response"]) for x in sft2 if x["has_meta"] == 0})
        assert {"feedback", "refine", "direct"} <= set(m["rounds"]["2"]["stages"]["sft"]["final"])
        # Round 2 asks the model for new questions (a random model's are all cut off or filtered:
        # the pool fills in); round 1 takes the pool's.
        si = m["rounds"]["2"]["stages"]["prompts"]
        oversample = cfg.prompts.self_instruct.oversample  # one attempt (the overrides)
        assert si["wanted"] == cfg.prompts.per_round and si["requests"] == round(oversample * si["wanted"])
        assert "wanted" not in m["rounds"]["1"]["stages"]["prompts"]
    if name == "dpse":
        pairs = read_jsonl(root / "round_001" / "data" / "pairs.jsonl")
        assert all("weight" in p for p in pairs)
        groups = read_jsonl(root / "round_001" / "expand" / "scored.jsonl")
        assert all("signals" in resp for g in groups for resp in g["responses"])
        # Every prompt of the simulated log brings its logged answer; expansion ran on the model.
        st1 = m["rounds"]["1"]["stages"]
        assert st1["logged"]["logged_answers"] == cfg.prompts.per_round
        assert sum(r["kind"] == "logged" for g in groups for r in g["responses"]) == cfg.prompts.per_round
        ex = st1["expand"]
        assert ex["expanded_topics"] and ex["generated"] == 2 * len(ex["expanded_topics"]) + ex["variant_requests"]
        assert "judge_agreement_by_checker" in st1["score"]
        # Dialogue turns are scored apart: arithmetic questions and memory probes.
        ev = m["rounds"]["1"]["stages"]["eval"]
        assert set(ev["by_kind"]) == {"probe", "question"}
        assert sum(s["n"] for s in ev["by_kind"].values()) == ev["n"]
        assert {"eval/probe/accuracy", "eval/question/accuracy"} <= set(rows[1])
    if name == "demo":  # a random model writes no well-formatted answer: the control arm is empty
        # The held-out phrasings are evaluated every round (see test_unseen_phrasings_...).
        assert all(0 <= r["eval/unseen/accuracy"] <= 1 for r in rows)
        assert "unseen (95% CI)" in (root / "report.md").read_text()
        st = m["rounds"]["1"]["stages"]
        assert st["data"]["control_examples"] == 0 and st["control"]["skipped"] == "no training data"


def test_self_refinements_are_rejudged(tmp_path, tiny_model, monkeypatch):
    """SELF refines the answers its feedback rejects and judges every refinement again, so the
    self_judge scorer has a verdict for each (a random model's feedback never parses: force
    'incorrect' so that every sample is refined)."""
    from jaxevo.evolve import verdict

    monkeypatch.setattr(verdict, "parse_verdict", lambda text: 0.0)
    cfg, raw = recipe("self", tmp_path / "self", tiny_model, *TRAIN_OVERRIDES["self"], "run.rounds=1",
                      "meta.enabled=false")
    m = run_evolve(cfg, raw)
    assert m["rounds"]["1"]["stages"]["refine"]["refinements"] == cfg.prompts.per_round * cfg.sample.n
    groups = read_jsonl(tmp_path / "self" / "round_001" / "score" / "scored.jsonl")
    refined = [r for g in groups for r in g["responses"] if r["kind"] == "refine"]
    assert refined and all("feedback" in r and "score" in r for r in refined)


GATE = ["rounds.gate.type=arithmetic", "rounds.gate.split=train", "rounds.gate.seed=1", "rounds.gate.n=4"]


@pytest.mark.parametrize("name,min_gain", [("demo", -1.0), pytest.param("self", 0.5, marks=pytest.mark.heavy)])
def test_round_gate_keeps_or_drops_a_round(name, min_gain, tmp_path, tiny_model):
    """The gate keeps a round's model only if its validation accuracy is at least the kept model's
    + gate_min_gain. A random model scores 0 everywhere, so -1.0 keeps every round and 0.5 drops
    every round: the next round then starts from the kept model, SELF's restart leaves the dropped
    round's data out, and the final model is the kept one."""
    # SELF: the restart mixing only the meta QA pairs (the views path is test_two_rounds').
    views = ["meta.restart_views=false"] if name == "self" else []
    cfg, raw = recipe(name, tmp_path / name, tiny_model, *TRAIN_OVERRIDES[name], *GATE,
                      f"rounds.gate_min_gain={min_gain}", *views)
    m = run_evolve(cfg, raw)
    root = tmp_path / name
    g1, g2 = (m["rounds"][r]["stages"]["gate"] for r in ("1", "2"))
    keep = min_gain < 0
    assert g1["accepted"] is keep and g2["accepted"] is keep
    assert g1["start_accuracy"] == g1["accuracy"] == 0.0
    # Round 1 measures the start model on the validation items; round 2 reuses the kept accuracy.
    assert len(read_jsonl(root / "round_001" / "gate" / "start" / "results.jsonl")) == 4
    assert not (root / "round_002" / "gate" / "start").exists()
    assert len(read_jsonl(root / "round_002" / "gate" / "round" / "results.jsonl")) == 4
    sft2 = json.loads((root / "round_002" / "sft" / "train" / "final" / "jaxevo.json").read_text())
    final = json.loads((root / "final_model" / "config.json").read_text())
    assert final["hidden_size"] == 32
    rows = [json.loads(x) for x in (root / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["gate/accepted"] == keep and "gate/accuracy" in rows[2]
    report = (root / "report.md").read_text()
    if keep:
        assert m["rounds"]["2"]["model"] == "round_002/sft/train/final"
        assert "round_001" in sft2["base_model"]
        assert report.count("kept 0.0% vs 0.0%") == 2
    else:  # SELF: every round restarts from the meta-skill model, which stays the kept model
        meta = str(root / "round_000" / "meta" / m["rounds"]["0"]["stages"]["meta"]["model"])
        assert m["rounds"]["1"]["model"] == m["rounds"]["2"]["model"] == str(Path(meta).relative_to(root))
        assert report.count("rejected 0.0% vs 0.0%") == 2
        # Round 2's restart data: the meta QA pairs and round 2's own data, not round 1's.
        r1 = {x["prompt"] for x in read_jsonl(root / "round_001" / "data" / "sft.jsonl")}
        qa = {x["prompt"] for x in read_jsonl(root / "round_000" / "meta" / "qa.jsonl")}
        r2 = {x["prompt"] for x in read_jsonl(root / "round_002" / "data" / "sft.jsonl")}
        assert r1 - qa and not (r1 - qa) & r2 and qa <= r2
        # The exported final model has the meta-skill model's weights.
        from safetensors.numpy import load_file

        from jaxevo.weights.load import hf_dir_for

        a = load_file(next((root / "final_model").glob("*.safetensors")))
        b = load_file(next(hf_dir_for(meta).glob("*.safetensors")))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


class Killed(Exception):
    pass


def test_unseen_phrasings_evaluated_each_round_and_for_the_control(tmp_path, tiny_model, monkeypatch):
    """The demo's `eval.unseen_source`: the start model, the round's model and the control arm's
    model are each evaluated on the held-out phrasings too (files, manifest, metrics, report); a
    run killed during that second evaluation resumes without sampling the first one again."""
    from jaxevo.data import load_source
    from jaxevo.data.arithmetic_phrasings import UNSEEN_TEMPLATES
    from jaxevo.sampling.api import Sampler

    real_control = select.format_control

    def any_format(groups, count, seed, allow_truncated=False):  # a random model formats nothing
        groups = list(groups)
        return real_control(groups, count, seed, allow_truncated) or [
            {"prompt": g["prompt"], "response": g["responses"][0]["text"], "id": g["item"]["id"]} for g in groups][:count]
    monkeypatch.setattr(select, "format_control", any_format)
    root = tmp_path / "demo"
    cfg, raw = recipe("demo", root, tiny_model, *TRAIN_OVERRIDES["demo"], "run.rounds=1")
    assert cfg.eval.unseen_source["phrasings"] == "unseen" and cfg.eval.unseen_source["n"] == 6
    run_evolve(cfg, raw, stop_after=(1, "control"))

    calls, real = [], Sampler.generate

    def dies_on_second_call(self, prompts, *a, **kw):
        calls.append(list(prompts))
        if len(calls) == 2:
            raise Killed("killed during the unseen evaluation")
        return real(self, prompts, *a, **kw)
    monkeypatch.setattr(Sampler, "generate", dies_on_second_call)
    with pytest.raises(Killed):
        run_evolve(cfg, raw)
    unseen_items = load_source(cfg.eval.unseen_source).to_list()
    unseen_prompts = [it["prompt"] for it in unseen_items]
    assert calls[1] == unseen_prompts and calls[0] != unseen_prompts
    calls.clear()
    m = run_evolve(cfg, raw)
    assert calls == [unseen_prompts]  # the main evaluation came back from its journal

    names = {t.name for t in UNSEEN_TEMPLATES}
    assert {it["template"] for it in unseen_items} <= names
    rows = [json.loads(x) for x in (root / "metrics.jsonl").read_text().splitlines()]
    for r, folder in ((0, "round_000/eval"), (1, "round_001/eval"), (1, "round_001/control")):
        st = m["rounds"][str(r)]["stages"]
        ev = (st["control"]["eval"] if folder.endswith("control") else st["eval"])["unseen"]
        results = read_jsonl(root / folder / "unseen" / "results.jsonl")
        assert [x["id"] for x in results] == [it["id"] for it in unseen_items]
        correct = sum(bool(x["correct"]) for x in results)
        assert ev["n"] == 6 and ev["accuracy"] == correct / 6 and ev["ci95_low"] <= ev["accuracy"] <= ev["ci95_high"]
        key = "control/unseen/accuracy" if folder.endswith("control") else "eval/unseen/accuracy"
        assert rows[r][key] == ev["accuracy"]
        if key.startswith("eval"):
            assert (rows[r]["eval/unseen/ci95_low"], rows[r]["eval/unseen/ci95_high"]) == (ev["ci95_low"],
                                                                                           ev["ci95_high"])
    assert "control/unseen/accuracy" not in rows[0] and m["rounds"]["1"]["stages"]["control"]["steps"] >= 1
    report = (root / "report.md").read_text()
    head = next(line for line in report.splitlines() if line.startswith("| round"))
    assert {"unseen (95% CI)", "unseen vs start", "control unseen"} <= {c.strip() for c in head.split("|")}
    assert "`unseen`: greedy accuracy on `eval.unseen_source`" in report
