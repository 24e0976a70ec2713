"""SELF's parts on hand-written samples: language critiques (template and model-written, checked
against the label), self-instructed prompts (ROUGE-L, filters, the prompts stage's mix) and the
restart data with every meta-skill view."""

import dataclasses
import random
import re
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.config import load_config
from jaxevo.errors import ConfigError
from jaxevo.evolve import critique, select, self_instruct
from jaxevo.evolve.config import EvolveConfig
from jaxevo.evolve.rundir import read_jsonl
from jaxevo.evolve.stages.sampling import prompts_stage
from jaxevo.evolve.verdict import parse_verdict
from jaxevo.train.objectives import LossInputs, get_objective
from tests.evolve.conftest import ROOT

ITEM = {"id": "q", "prompt": "Tom has 5 apples and gets 8 more. How many now?", "answer": "13"}


def resp(text, finish="eos"):
    return {"text": text, "finish": finish}


# ----------------------------------------------------------------------------- critiques


def test_calculation_steps_are_recomputed_exactly():
    steps = critique.calculation_steps("1,200 / 4 = 300. Then 2 + 3 * 4 = 20, and 7 × 6 = 40; 3 ÷ 0 = 1.")
    assert [(s["step"], s["value"], s["right"]) for s in steps] == [
        ("1,200 / 4 = 300", "300", True), ("2 + 3 * 4 = 20", "14", False), ("7 × 6 = 40", "42", False)]
    assert critique.calculation_steps("No numbers here.") == []
    assert critique.calculation_steps("1 / 3 = 0.5")[0]["value"] == "0.333333"


def test_template_critique_says_what_is_wrong_and_why():
    wrong = critique.template_critique(ITEM, resp("5 + 8 = 12. The answer is 12."), False)
    assert wrong == ('The step "5 + 8 = 12" is wrong: 5 + 8 is 13, not 12.\n'
                     "The final answer 12 does not match the correct answer, 13.\nJudgement: incorrect")
    right = critique.template_critique(ITEM, resp("5 + 8 = 13. The answer is 13."), True)
    assert right == "The calculation (5 + 8 = 13) is right.\nThe final answer 13 is right.\nJudgement: correct"
    # Right steps, wrong final answer: the critique does not blame the steps.
    c = critique.template_critique(ITEM, resp("5 + 8 = 13. The answer is 14."), False)
    assert "(5 + 8 = 13) is right" in c and "final answer 14 does not match" in c
    unformatted = critique.template_critique(ITEM, resp("I think thirteen", finish="length"), False)
    assert unformatted.splitlines() == ["The answer was cut off before it finished.",
                                        "The answer does not state a final answer in the required format.",
                                        "Judgement: incorrect"]
    hidden = critique.template_critique(ITEM, resp("The answer is 12."), False, reveal_reference=False)
    assert hidden == "The final answer 12 is wrong.\nJudgement: incorrect"


def test_template_critique_of_a_judge_label_claims_only_the_score():
    c = critique.template_critique(ITEM, resp("The answer is 12."), False, label="reward_model",
                                   score=0.25, min_score=0.5)
    assert c == "The reward_model scored this answer 0.25, below the acceptance threshold 0.5.\nJudgement: incorrect"
    assert "13" not in c and "match" not in c  # nothing about the reference the judge never saw


@pytest.mark.parametrize("text,correct", [
    ("5 + 8 = 12. The answer is 12.", False), ("5 + 8 = 13. The answer is 13.", True),
    ("The answer is 12.", False), ("no answer", False), ("5 + 8 = 12. The answer is 13.", True)])
def test_every_template_critique_states_the_label_verdict(text, correct):
    c = critique.template_critique(ITEM, resp(text), correct)
    assert parse_verdict(c) == float(correct) and c.endswith(critique.verdict_line(correct))
    assert c.count("Judgement:") == 1


@pytest.mark.parametrize("text,correct,refused", [
    ("", False, "empty"),
    ("The answer is correct. 5 + 8 is 13.", False, "calls a rejected answer right"),
    ("The answer is not correct: 5 + 8 is 13, not 12.", False, None),
    ("Step 2 has a mistake.", True, "finds errors in an accepted answer"),
    ("There are no mistakes: 5 + 8 is 13.", True, None),
    ("It adds 5 and 8.\nJudgement: correct", False, "states the opposite verdict"),
    ("Score: 9/10", False, "states the opposite verdict"),
    ("5 + 8 was added wrong; the correct answer is 14.", False, "claims the correct result is 14, the reference is 13"),
    ("5 + 8 was added wrong; the correct answer is 13.", False, None),
    ("It should be 15 apples.", False, "claims the correct result is 15, the reference is 13"),
])
def test_a_written_critique_that_contradicts_the_label_is_refused(text, correct, refused):
    assert critique.honest(text, ITEM, correct) == refused


def test_a_written_critique_gets_the_label_verdict_and_loses_its_own():
    out = critique.finish_model_critique("5 + 8 is 13, not 12.\nJudgement: incorrect\n", False)
    assert out == "5 + 8 is 13, not 12.\nJudgement: incorrect"


def test_meta_tuples_refine_towards_an_accepted_answer_without_wrong_steps():
    g = {"item": ITEM, "prompt": ITEM["prompt"], "responses": [
        {"text": t, "finish": "eos", "kind": "sample", "chain": i, "step": 0, "logp": -float(i), "length": 5,
         "score": s} for i, (t, s) in enumerate([("5 + 8 = 14. The answer is 13.", 1.0),
                                                 ("5 + 8 = 13. The answer is 13.", 1.0),
                                                 ("The answer is 12.", 0.0)])]}
    t = select.meta_tuples([g])
    assert [x["correct"] for x in t] == [True, True, False]
    assert t[2]["refined"] == "5 + 8 = 13. The answer is 13."  # ranked second, but every step right
    assert 'The step "5 + 8 = 14" is wrong' in t[0]["feedback"] and parse_verdict(t[0]["feedback"]) == 1.0


# ----------------------------------------------------------------------------- self-instruct


def test_rouge_l_matches_hand_computed_values():
    # LCS("the cat sat on the mat", "the cat lay on the mat") = 5 of 6 and 6 tokens: F = 10/12.
    assert self_instruct.rouge_l("The cat sat on the mat.", "the cat lay on the mat") == pytest.approx(10 / 12)
    assert self_instruct.rouge_l("a b c d", "a c") == pytest.approx(4 / 6)  # P = 2/4, R = 2/2
    assert self_instruct.rouge_l("a b c", "c b a") == pytest.approx(2 / 6)
    assert self_instruct.rouge_l("What's 5+8?", "what s 5 8") == 1.0  # rouge-score's tokens
    assert self_instruct.rouge_l("!!!", "a") == 0.0


def test_rouge_index_prunes_exactly():
    """The multiset bound never hides a near text: same answers as comparing with every text."""
    rng = random.Random(0)
    texts = [" ".join(rng.choice("abcdef") for _ in range(rng.randint(1, 9))) for _ in range(300)]
    for thr in (0.5, 0.7, 0.9):
        idx = self_instruct.RougeIndex(thr, texts[:200])
        for q in texts[200:]:
            brute = next((t for t in texts[:200] if self_instruct.rouge_l(q, t) >= thr), None)
            hit = idx.near(q)
            assert (hit[0] if hit else None) == brute


@pytest.mark.parametrize("q,why", [
    ("", "empty"), ("Add them.", "too_short"), (" ".join(["word"] * 200), "too_long"),
    ("- How many apples are left?", "not_an_instruction"),
    ("Tom has 5 apples. The answer is 5.", "not_an_instruction"),
    ("Question 3: How many apples does Tom have?", "not_an_instruction"),
    ("Prompt: What is 3 * 55?", "not_an_instruction"),
    ("Draw a picture of 5 apples.", "banned_word"),
    ("How many apples does Tom have now?", None), ("12 eggs are shared by 3 friends. How many each?", None),
])
def test_malformed_questions_are_named(q, why):
    assert self_instruct.malformed(q, min_words=3, max_words=150, banned=("picture", "draw")) == why


def test_a_continued_list_gives_its_questions():
    text = " How many pens does Ana have?\n10. Ben reads 5 pages a day. How many in a week?\n\nExtra text\n11) Cut"
    assert self_instruct.parse_continuation(text, truncated=False) == [
        "How many pens does Ana have?", "Ben reads 5 pages a day. How many in a week?", "Cut"]
    assert self_instruct.parse_continuation(text, truncated=True)[-1] == "Ben reads 5 pages a day. How many in a week?"


def test_filter_drops_copies_near_duplicates_and_keeps_new_questions():
    s = SimpleNamespace(min_words=3, max_words=150, banned=("draw",))
    idx = self_instruct.RougeIndex(0.7, ["Tom has 5 apples. He eats 2. How many apples are left?"])
    f = self_instruct.Filtered()
    seeds = ["What is 7 times 8?"]
    offers = ["What is 7 times 8?",  # a copy of its seed
              "Tom has 6 apples. He eats 3. How many apples are left?",  # near the pool's
              "A train travels 60 miles in 2 hours. What is its speed?",  # new
              "A train travels 90 miles in 3 hours. What is its speed?",  # near the one kept
              "Draw 3 circles."]
    assert [f.offer(q, idx, seeds, s) for q in offers] == [False, False, True, False, False]
    assert f.kept == [offers[2]] and len(idx) == 2
    assert dict(f.reasons) == {"copy_of_seed": 1, "near_duplicate": 2, "banned_word": 1}
    held_out = {self_instruct.normal("What is 472 / 8?")}
    assert not f.offer("what is 472/8", idx, seeds, s, held_out)  # a test question, written again
    assert f.reasons["held_out_question"] == 1


def test_pool_shape_asks_what_nearly_every_pool_question_has():
    """Statements a 135M model wrote in place of questions (scripts/self_instruct_yield.py)."""
    shape = self_instruct.Shape.of(["What is 5 + 8?"] * 19 + ["How many are left?"])
    assert shape == self_instruct.Shape(question_mark=True, digit=True)  # 19/20 >= 95%
    assert self_instruct.Shape.of(["What is 5 + 8?"] * 18 + ["How many?"] * 2) == self_instruct.Shape(True, False)
    assert shape.misses("Choose a different question.") and shape.misses("How many are left?")
    assert not shape.misses("Ana has 3 pens. How many now? ")
    s = SimpleNamespace(min_words=3, max_words=150, banned=())
    f = self_instruct.Filtered()
    assert not f.offer("There is only 1 answer for this question", self_instruct.RougeIndex(0.7), [], s, (), shape)
    assert f.reasons == {"unlike_pool": 1}
    assert not self_instruct.Shape().misses("anything")  # pool_shape off


def test_wrapping_and_new_items_keep_the_sources_instructions():
    from jaxevo.data import load_source
    pool = [dict(r) for r in load_source({"type": "arithmetic", "split": "train", "n": 8, "levels": [1, 2]})]
    w = self_instruct.Wrapping.of(pool)
    assert all(w(it["question"]) == it["prompt"] for it in pool)
    item = self_instruct.new_item("How many legs do 3 cats have?", w, 2, {"checker": "number"})
    assert item["prompt"] == w("How many legs do 3 cats have?") and "answer" not in item
    assert item["self_instructed"] and item["checker"] == "number" and item["id"].startswith("si-")


def test_self_instructed_prompts_need_a_scorer_without_reference():
    base = ["prompts.self_instruct.enabled=true"]
    with pytest.raises(ConfigError, match="no reference answer.*verifier"):
        load_config(EvolveConfig, ROOT / "configs" / "self.yaml", [*base, "score.scorer=verifier"])
    cfg = load_config(EvolveConfig, ROOT / "configs" / "self.yaml", base)
    assert cfg.prompts.self_instruct.enabled and cfg.score.scorer == "self_judge"
    with pytest.raises(ConfigError, match="share"):
        load_config(EvolveConfig, ROOT / "configs" / "self.yaml", ["prompts.self_instruct.share=1.5"])


class _Completion:
    def __init__(self, text, finish="eos"):
        self.text, self.finish_reason = text, finish


class _FakeSampler:
    """Answers each request with the next canned continuation; records the requests."""

    def __init__(self, outputs):
        self.outputs, self.requests = iter(outputs), []

    def generate(self, prompts, params, chat=True, progress=False):
        self.requests += prompts
        return [[_Completion(next(self.outputs))] for _ in prompts]


def _ctx(tmp_path, round_, outputs, *overrides):
    cfg = load_config(EvolveConfig, ROOT / "configs" / "self.yaml", [
        "prompts.source.n=40", "prompts.per_round=4", "prompts.self_instruct.enabled=true",
        "prompts.self_instruct.seeds=3", "prompts.self_instruct.machine_seeds=1", *overrides])
    from jaxevo.data import load_source
    pool = [dict(r) for r in load_source(cfg.prompts.source)]
    sampler = _FakeSampler(outputs)
    ctx = SimpleNamespace(cfg=cfg, round=round_, seed=round_, progress=False, prompt_pool=lambda: pool,
                          sampler=lambda model=None: sampler, sampling=lambda *a, **k: None,
                          output=lambda name, r=None: tmp_path / f"round_{r:03d}" / name)
    return ctx, pool, sampler


def test_prompts_stage_mixes_new_and_pool_prompts(tmp_path):
    new = ["A baker makes 12 loaves each hour. How many loaves in 5 hours?",
           "Lena saves 7 coins a week. How many coins after 9 weeks?"]
    outputs = [new[0] + "\n5. " + new[0],  # the second is a duplicate of the first
               "- not a question", new[1], "The answer is 4.", "x"]
    ctx, pool, sampler = _ctx(tmp_path, 2, outputs, "prompts.self_instruct.share=0.75",
                              "prompts.self_instruct.oversample=1.0")
    out = tmp_path / "round_002" / "prompts"
    out.mkdir(parents=True)
    info = prompts_stage(ctx, out)
    rows = read_jsonl(out / "prompts.jsonl")
    # 3 new ones wanted: 3 requests, then 1 more per attempt for the one missing (3 attempts);
    # one short, filled from the pool.
    assert info["wanted"] == 3 and info["self_instructed"] == 2 and info["requests"] == 5
    assert info["filtered"] == {"near_duplicate": 1, "not_an_instruction": 2, "too_short": 1}
    assert [r.get("question") for r in rows[:2]] == new and all(r["self_instructed"] for r in rows[:2])
    assert all("answer" not in r for r in rows[:2]) and rows[0]["prompt"].endswith("'The answer is N.'")
    assert rows[2:] == pool[4:6] and len(rows) == 4  # round 2's slice of the pool fills the rest
    assert all(re.findall(r"^(\d+)\. ", r, re.M) == ["1", "2", "3"] for r in sampler.requests)  # 3 seeds
    # Without filling, the shortfall stays a shortfall.
    ctx, _, _ = _ctx(tmp_path, 2, outputs, "prompts.self_instruct.share=0.75",
                     "prompts.self_instruct.oversample=1.0", "prompts.self_instruct.fill_from_pool=false")
    out2 = tmp_path / "b"
    out2.mkdir()
    assert prompts_stage(ctx, out2)["prompts"] == 3


def test_prompts_stage_round_one_and_earlier_new_questions(tmp_path):
    ctx, pool, sampler = _ctx(tmp_path, 1, [])
    out = tmp_path / "round_001" / "prompts"
    out.mkdir(parents=True)
    assert prompts_stage(ctx, out) == {"prompts": 4, "first_id": pool[0]["id"]}  # the pool only
    assert not sampler.requests
    # A round-2 question is a seed and a dedup target in round 3.
    earlier = "A farmer plants 8 rows of 9 trees. How many trees?"
    r2 = tmp_path / "round_002" / "prompts"
    r2.mkdir(parents=True)
    (r2 / "prompts.jsonl").write_text(
        '{"id": "si-x", "prompt": "p", "question": "%s", "self_instructed": true}\n' % earlier)
    ctx, _, sampler = _ctx(tmp_path, 3, ["A farmer plants 7 rows of 9 trees. How many trees?"] * 8,
                           "prompts.self_instruct.share=0.25", "prompts.self_instruct.attempts=1",
                           "prompts.self_instruct.oversample=2.0")
    out3 = tmp_path / "round_003" / "prompts"
    out3.mkdir(parents=True)
    info = prompts_stage(ctx, out3)
    assert info["self_instructed"] == 0 and info["filtered"] == {"near_duplicate": 2}
    assert all(earlier in r for r in sampler.requests)  # machine_seeds=1: the earlier one is shown


# ----------------------------------------------------------------------------- restart views


def test_restart_data_has_every_meta_view_and_the_rounds_answers_direct_only():
    meta = [{"prompt": "p", "response": "r", "feedback": "f", "refined": "r2", "correct": False, "id": "a"}]
    qa = [{"prompt": "q", "response": "y", "id": "b", "score": 1.0}]
    recs = select.with_meta_views(meta, qa)
    assert recs == [{**meta[0], "has_meta": 1},
                    {"prompt": "q", "response": "y", "id": "b", "score": 1.0, "feedback": "", "refined": "y",
                     "has_meta": 0}]
    assert select.own_data(recs) == qa  # what a later round takes back from this round's data


def test_self_meta_objective_masks_the_views_of_plain_answers():
    """loss = mean_b[has_meta * (NLL_f + NLL_r) + beta * NLL_d], NLLs per token (hand-computed)."""
    obj = get_objective("self_meta")
    assert "has_meta" in obj.optional_fields
    lp = {"feedback": jnp.array([-2.0, -9.0]), "refine": jnp.array([-4.0, -9.0]), "direct": jnp.array([-3.0, -6.0])}
    cnt = {"feedback": jnp.array([2.0, 1.0]), "refine": jnp.array([4.0, 1.0]), "direct": jnp.array([3.0, 2.0])}
    inp = LossInputs(logps=lp, counts=cnt, token_lp={}, masks={}, ref={},
                     extras={"has_meta": jnp.array([1.0, 0.0])}, norm={"examples": jnp.asarray(2.0)})
    hp = SimpleNamespace(hparams={"beta": 0.5})
    loss, _ = obj.loss(inp, hp)
    np.testing.assert_allclose(float(loss), ((1.0 + 1.0 + 0.5 * 1.0) + 0.5 * 3.0) / 2, rtol=1e-6)
    unmasked, _ = obj.loss(dataclasses.replace(inp, extras={}), hp)
    np.testing.assert_allclose(float(unmasked), ((1 + 1 + 0.5) + (9 + 9 + 0.5 * 3)) / 2, rtol=1e-6)


def test_ablation_config_turns_off_only_the_self_instructed_prompts():
    full = load_config(EvolveConfig, ROOT / "configs" / "self.yaml")
    abl = load_config(EvolveConfig, ROOT / "configs" / "self_no_instruct.yaml")
    assert full.prompts.self_instruct.enabled and not abl.prompts.self_instruct.enabled
    diff = [k for k in ("stages", "sample", "feedback", "refine", "score", "select", "sft", "meta", "rounds", "eval")
            if getattr(full, k) != getattr(abl, k)]
    assert diff == [] and full.run.seed == abl.run.seed and full.run.dir != abl.run.dir
    assert dataclasses.replace(abl.prompts, self_instruct=full.prompts.self_instruct) == full.prompts


