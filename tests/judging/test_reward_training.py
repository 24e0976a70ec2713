"""Bradley–Terry reward-model training: the loss and metrics as TRL's RewardTrainer computes them,
a tiny model that learns a preference, and its export re-scored by transformers (1e-4)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.errors import ConfigError
from jaxevo.judging.reward_model import RewardModel, export_reward_hf
from jaxevo.judging.reward_training import bradley_terry_loss, train_reward_model
from tests.sampling.helpers import PAD, byte_tokenizer, tiny


def test_bradley_terry_loss_hand_computed():
    loss, m = bradley_terry_loss(jnp.array([1.0, 0.0, 2.0]), jnp.array([0.0, 0.0, 3.0]))
    want = (math.log1p(math.exp(-1)) + math.log(2) + math.log1p(math.exp(1))) / 3
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(m["accuracy"]) == pytest.approx(1 / 3) and float(m["margin"]) == pytest.approx(0.0)
    assert (float(m["min_reward"]), float(m["max_reward"])) == (0.0, 3.0)
    assert float(m["mean_reward"]) == pytest.approx(1.0)
    with_margin, _ = bradley_terry_loss(jnp.array([1.0]), jnp.array([0.0]), jnp.array([1.0]), center_coef=0.5)
    assert float(with_margin) == pytest.approx(math.log(2) + 0.5 * 1.0, rel=1e-6)


def _tiny_rm(seed=0):
    cfg, params = tiny("qwen2", seed)
    cfg = cfg.replace(tie_word_embeddings=True)
    decoder = {k: v for k, v in params.items() if k != "lm_head"}
    head = jnp.asarray(0.02 * np.random.RandomState(seed).randn(cfg.hidden_size, 1).astype(np.float32))
    return RewardModel(cfg, {"decoder": decoder, "score": head}, byte_tokenizer(), pad_token_id=PAD)


RECORDS = [{"prompt": f"Question {i}: is it fine?", "chosen": "Yes, it is fine." if i % 2 else "Sure thing.",
            "rejected": "No!!" if i % 3 else "nope"} for i in range(16)]


def test_a_tiny_reward_model_learns_a_preference_and_exports(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    rm, hist = train_reward_model(_tiny_rm(), RECORDS, epochs=8, batch_size=8, lr=3e-3)
    assert len(hist) == 16 and set(hist[0]) == {"loss", "accuracy", "margin", "min_reward", "mean_reward", "max_reward"}
    assert hist[0]["loss"] == pytest.approx(math.log(2), abs=0.05)  # a near-zero head: r_c ~ r_r
    assert hist[-1]["loss"] < 0.1 and hist[-1]["accuracy"] == 1.0
    d = export_reward_hf(rm.params, rm.cfg, tmp_path / "rm", rm.tokenizer, pad_token_id=PAD)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(d, dtype=torch.float32).eval()
    tok = byte_tokenizer()
    for rec in RECORDS[:4]:
        for key in ("chosen", "rejected"):
            ids = rm.conversation_ids(rec["prompt"], rec[key])
            assert ids == tok.apply_chat_template([{"role": "user", "content": rec["prompt"]},
                                                   {"role": "assistant", "content": rec[key]}], tokenize=True,
                                                  return_dict=True)["input_ids"]
            with torch.no_grad():
                ref = float(model(torch.tensor([ids])).logits[0, 0])
            assert rm.score([rec["prompt"]], [rec[key]])[0] == pytest.approx(ref, abs=1e-4)


def test_too_few_records_and_bad_records_are_refused():
    with pytest.raises(ConfigError, match="lacks \\['rejected'\\]"):
        train_reward_model(_tiny_rm(), [{"prompt": "a", "chosen": "b"}])
    with pytest.raises(ConfigError, match="2 usable preference records for a batch of 8"):
        train_reward_model(_tiny_rm(), RECORDS[:2], batch_size=8)
