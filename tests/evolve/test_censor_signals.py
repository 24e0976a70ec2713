"""The Censor's signals, each on hand-written log excerpts, and their combination."""

import pytest

from jaxevo.errors import ConfigError
from jaxevo.evolve import censor
from jaxevo.evolve.censor_signals import (abandons, engagement, has_correction, sentiment, similarity,
                                          text_signals)

Q = "One notebook costs $11. How many dollars does Liam pay for 7 notebooks?"


@pytest.mark.parametrize("text, expected", [
    ("Perfect, thank you! That's exactly what I needed.", 1.0),   # 4 positive words, no negative
    ("That's wrong.", 0.0),
    ("That's not helpful at all.", 0.0),                          # negated positive counts as negative
    ("Thanks, but that was much longer than it needed to be.", 0.5),  # thanks vs longer
    ("Tom buys 3 pens.", 0.5),                                    # no lexicon word: neutral
    ("Not bad, thanks!", 1.0),                                    # negated negative flips
])
def test_sentiment_lexicon(text, expected):
    assert sentiment(text) == pytest.approx(expected)


def test_rephrase_similarity_of_a_re_ask():
    re_ask = f"Hmm, I don't think so. Let me ask again: {Q}"
    assert similarity(re_ask, Q) == pytest.approx(1.0)  # the question sentence repeated verbatim
    # A different question on the same theme shares words, but much less than a re-ask.
    other = "One scarf costs $5. How many dollars does Maya pay for 3 scarves?"
    assert similarity(other, Q) < 0.5
    # Hand count: content words {notebook, costs, 11} vs {notebook, costs, 12}: 2 / 4.
    assert similarity("One notebook costs $12.", "One notebook costs $11.") == pytest.approx(0.5)
    assert similarity("Thanks!", Q) == 0.0  # too short to repeat anything


@pytest.mark.parametrize("text, marked", [
    ("No, that's not right. It should be 77.", True),
    ("That's wrong, the answer is 77.", True),
    ("Actually, I said my dog is Rex.", True),
    ("Did you even read what I said?", True),
    ("No. Please read my question.", True),
    ("Nothing else, thanks.", False),     # "no" only as a word start, not a marker
    ("Great, that's right. Thanks a lot!", False),
    ("Now, how many minutes is 4 hours?", False),
    ("Hmm, I don't think so. Let me ask again.", True),
    ("That doesn't look right.", True),
    ("That's not helpful at all.", False),  # a complaint, not a correction: sentiment's business
])
def test_correction_markers(text, marked):
    assert has_correction(text) is marked


@pytest.mark.parametrize("text, gone", [
    ("Never mind, I'll figure it out myself.", True), ("Forget it.", True), ("nevermind", True),
    ("Thanks. Can you also tell me 3 + 4?", False), ("I will never forget it.", False),
    ("OK. Forget it, I'll ask someone else.", True),
])
def test_abandonment_markers(text, gone):
    assert abandons(text) is gone


def test_engagement_counts_new_words():
    # "Thanks! Also, which city do I live in?" -> new content words: thanks, also, city, live = 4.
    assert engagement("Thanks! Also, which city do I live in?", Q, engagement_words=8) == pytest.approx(4 / 8)
    assert engagement(f"Let me ask again: {Q}", Q) == 0.0  # a re-ask adds nothing
    assert engagement("Forget it.", Q) == 0.0


def test_text_signals_of_excerpts():
    good = text_signals(Q, "The answer is 77.", "Great, that's right. Thanks a lot! What is 3 + 4?", rating=5,
                        thumb="up")
    assert good["explicit"] == 1.0 and good["correction"] == 1.0 and good["continuation"] == 1.0
    assert good["sentiment"] == 1.0 and good["rephrase"] > 0.9
    bad = text_signals(Q, "The answer is 78.", "No, that's not right. It should be 77.", rating=2, thumb="down")
    assert bad["explicit"] == pytest.approx((0.25 + 0.0) / 2)  # mean of rating (2-1)/4 and thumb down
    assert bad["correction"] == 0.0 and bad["sentiment"] < 0.5
    gone = text_signals(Q, "Maybe 70.", "Never mind, I'll figure it out myself.")
    assert gone["continuation"] == 0.0 and gone["engagement"] == 0.0 and "explicit" not in gone
    # The log ends after the answer: only the explicit feedback (if any) is known.
    assert text_signals(Q, "The answer is 77.", None, rating=4) == {"explicit": 0.75}
    assert text_signals(Q, "The answer is 77.", None) == {}


def test_satisfaction_renormalises_over_present_signals():
    w = {"explicit": 0.5, "sentiment": 0.25, "correction": 0.25}
    assert censor.satisfaction({"explicit": 1.0, "sentiment": 0.0, "correction": 1.0}, w) == pytest.approx(0.75)
    assert censor.satisfaction({"sentiment": 1.0, "correction": 0.0}, w) == pytest.approx(0.5)
    assert censor.satisfaction({}, w) is None  # nobody reacted: no evidence, never a default
    with pytest.raises(ConfigError, match="unknown signals"):
        censor.satisfaction({"explicit": 1.0}, {"explicitt": 1.0})


def test_censor_reads_a_logged_reaction_not_the_simulator():
    item = {"id": "s/t0", "prompt": Q}  # a real log's turn: no simulator labels
    g = {"item": item, "responses": [
        {"text": "The answer is 77.", "kind": "logged",
         "reaction": {"next_user": "Perfect, thank you! Now, what is 3 + 4?", "rating": None, "thumb": "up"}},
        {"text": "The answer is 78.", "kind": "logged",
         "reaction": {"next_user": f"That's wrong. Let me ask again: {Q}", "rating": None, "thumb": None}},
        {"text": "The answer is 77.", "kind": "sample"}]}  # nobody reacted to a fresh sample
    s = censor.satisfaction_scores(g, {"quality": "none"})
    assert s[0] > 0.9 and s[1] < 0.3 and s[2] is None
    assert g["responses"][1]["signals"]["rephrase"] == pytest.approx(0.0)  # the question re-asked
    # With a quality signal the fresh sample is scored by it alone.
    s = censor.satisfaction_scores(g, {"quality": "self_consistency"})
    assert s[2] == pytest.approx(2 / 3)  # two of the three answers state 77


def test_censor_simulates_the_reaction_of_a_simulated_user():
    item = {"id": "d/s0/t0", "prompt": Q, "question": Q, "answer": "77", "kind": "question",
            "followup": "What is 3 + 4?"}
    g = {"item": item, "responses": [{"text": "The answer is 77.", "kind": "sample"},
                                     {"text": "The answer is 12.", "kind": "sample"}]}
    s = censor.satisfaction_scores(g, {"quality": "none", "rating_prob": 0.0})
    assert s[0] > s[1]
    assert "explicit" not in g["responses"][0]["signals"]  # rating_prob 0: texts only


def test_verifier_quality_has_no_opinion_without_gold():
    assert censor.verified_quality({"prompt": "x", "answer": "7"}, "The answer is 7.", None) == 1.0
    assert censor.verified_quality({"prompt": "x"}, "The answer is 7.", None) is None
