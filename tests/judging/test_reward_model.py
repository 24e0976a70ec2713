"""Reward models against transformers' `*ForSequenceClassification` (f32, |d| <= 1e-4): every
supported family, left and right padding, batch sizes 1 and 7, the pad = eos corner, and the
conversation rendered with the reward model's chat template as TRL does."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxevo.errors import WeightsError  # noqa: E402
from jaxevo.judging.reward_model import RewardModel, export_reward_hf  # noqa: E402
from jaxevo.weights.hf import export_hf  # noqa: E402
from tests.conftest import random_params, tiny_cfg  # noqa: E402
from tests.sampling.helpers import PAD, byte_tokenizer, tiny_hf  # noqa: E402

pytestmark = pytest.mark.torch
FAMILIES = {"llama3": "LlamaForSequenceClassification", "mistral": "MistralForSequenceClassification",
            "qwen2": "Qwen2ForSequenceClassification", "qwen3": "Qwen3ForSequenceClassification",
            "gemma3": "Gemma3TextForSequenceClassification"}
# 7 sequences of varied lengths, byte ids (never the pad id)
SEQS = [list(np.random.RandomState(i).randint(0, 256, size=n)) for i, n in enumerate([5, 1, 17, 9, 30, 2, 12])]


def _hf_reward_model(family: str, tmp_path, seed: int = 0):
    torch.manual_seed(seed)
    hf = dict(tiny_hf(family), architectures=[FAMILIES[family]], num_labels=1)
    hf.pop("tie_word_embeddings", None)
    model = transformers.AutoModelForSequenceClassification.from_config(transformers.AutoConfig.for_model(**hf)).eval()
    with torch.no_grad():  # non-trivial norms, biases and head so their mapping is exercised
        for n, p in model.named_parameters():
            if "norm" in n or "bias" in n:
                p.add_(torch.randn_like(p) * 0.1)
            if n == "score.weight":
                p.copy_(torch.randn_like(p))
    d = tmp_path / family
    model.save_pretrained(d)
    byte_tokenizer().save_pretrained(d)
    return model, d


def _torch_scores(model, seqs, left: bool) -> np.ndarray:
    t = max(map(len, seqs))
    tokens = np.full((len(seqs), t), PAD, np.int64)
    mask = np.zeros((len(seqs), t), np.int64)
    for r, s in enumerate(seqs):
        sl = slice(t - len(s), t) if left else slice(0, len(s))
        tokens[r, sl], mask[r, sl] = s, 1
    with torch.no_grad():
        return model(torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits[:, 0].numpy()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_scores_equal_transformers(family, tmp_path):
    model, d = _hf_reward_model(family, tmp_path)
    alone = np.array([_torch_scores(model, [s], False)[0] for s in SEQS])  # no padding at all
    assert np.abs(_torch_scores(model, SEQS, True) - alone).max() < 1e-4  # transformers agrees with itself
    rm = RewardModel.load(str(d), dtype="float32")
    for max_batch in (1, 7):
        rm.max_batch = max_batch
        for left in (False, True):
            ours = np.array(rm.score_ids(SEQS, left_pad=left))
            assert np.abs(ours - alone).max() <= 1e-4, (max_batch, left, ours, alone)
    assert np.std(alone) > 1e-2  # the scores differ: the test could fail


def test_pad_equal_eos_reads_what_transformers_reads(tmp_path):
    # a real token equal to the pad id at the end (pad = eos tokenizers): transformers reads the
    # rightmost non-pad token, before it; so do we
    model, d = _hf_reward_model("llama3", tmp_path)
    seqs = [SEQS[2] + [PAD], SEQS[0]]
    ref = _torch_scores(model, seqs, False)
    ours = np.array(RewardModel.load(str(d), dtype="float32").score_ids(seqs))
    assert np.abs(ours - ref).max() <= 1e-4
    assert abs(ours[0] - _torch_scores(model, [SEQS[2]], False)[0]) <= 1e-4


def test_conversation_rendered_with_the_reward_models_template(tmp_path):
    model, d = _hf_reward_model("qwen2", tmp_path)
    rm = RewardModel.load(str(d), dtype="float32")
    prompts = ["What is 2+2?", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]]
    completions = ["4.", "Hello there!"]
    texts = ["<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4.<|im_end|>\n",
             "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
             "<|im_start|>assistant\nHello there!<|im_end|>\n"]  # ChatML by hand, as TRL renders it
    tok = byte_tokenizer()
    ref = _torch_scores(model, [tok(t, add_special_tokens=False)["input_ids"] for t in texts], False)
    assert np.abs(np.array(rm.score(prompts, completions)) - ref).max() <= 1e-4


def test_not_a_reward_model_is_refused(tmp_path):
    cfg = tiny_cfg("llama3")
    export_hf(random_params(cfg), cfg, tmp_path / "lm", tokenizer=byte_tokenizer())
    with pytest.raises(WeightsError, match="not a reward model"):
        RewardModel.load(str(tmp_path / "lm"), dtype="float32")


def test_export_loads_in_transformers_with_the_same_scores(tmp_path):
    family = "qwen2"  # q/k/v biases too
    import jax.numpy as jnp
    cfg = tiny_cfg(family).replace(vocab_size=260, tie_word_embeddings=True, pad_token_id=PAD)
    params = {"decoder": random_params(cfg),
              "score": jnp.asarray(np.random.RandomState(1).randn(cfg.hidden_size, 1).astype(np.float32))}
    d = export_reward_hf(params, cfg, tmp_path / "rm", byte_tokenizer())
    model = transformers.AutoModelForSequenceClassification.from_pretrained(d, dtype=torch.float32).eval()
    ref = _torch_scores(model, SEQS, False)
    ours = RewardModel(cfg, params, byte_tokenizer(), pad_token_id=PAD).score_ids(SEQS)
    assert np.abs(np.array(ours) - ref).max() <= 1e-4 and np.std(ref) > 1e-2
    again = RewardModel.load(str(d), dtype="float32").score_ids(SEQS, left_pad=True)
    assert np.abs(np.array(again) - ref).max() <= 1e-4


def test_jaxevo_score_with_a_reward_model_equals_transformers(tmp_path, capsys):
    """`jaxevo score --reward-model DIR --dtype float32`: one score per completion, each equal to
    transformers' score of the ChatML conversation (1e-4); the summary is written beside it."""
    import json

    from jaxevo.cli import main

    model, d = _hf_reward_model("llama3", tmp_path)
    data = tmp_path / "completions.jsonl"
    recs = [{"prompt": "What is 2+2?", "completions": ["4.", "Five."], "answer": "4"},
            {"messages": [{"role": "user", "content": "Hi"}], "completions": ["Hello!"]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--data", str(data), "--reward-model", str(d), "--dtype", "float32",
                 "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["answer"] for r in rows[:1]] == ["4"] and [len(r["scores"]) for r in rows] == [2, 1]
    tok = byte_tokenizer()
    texts = [f"<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n{c}<|im_end|>\n" for c in ("4.", "Five.")]
    texts.append("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n")
    ref = _torch_scores(model, [tok(t, add_special_tokens=False)["input_ids"] for t in texts], False)
    got = np.array(rows[0]["scores"] + rows[1]["scores"])
    assert np.abs(got - ref).max() <= 1e-4
    summary = json.loads((tmp_path / "scored.summary.json").read_text())
    assert summary["completions"] == 3 and abs(summary["mean"] - float(ref.mean())) <= 1e-4


def test_jaxevo_eval_head_to_head_by_reward_model_and_by_judge(tmp_path, capsys):
    """`jaxevo eval --data instructions --reward-model DIR --baseline-outputs FILE`: the model's
    greedy answers against the baseline's, won by the larger reward (equal to the reward model's
    own scores); the report is the win-rate report of those preferences. `--judge` with a model
    that states no verdict leaves every prompt unjudged (never a default score)."""
    import json

    from jaxevo.cli import main
    from jaxevo.judging.winrate import win_rate_report
    from tests.sampling.helpers import tiny_model_dir

    _, rm_dir = _hf_reward_model("qwen2", tmp_path)
    policy = tiny_model_dir(tmp_path / "policy", "llama3")
    data = tmp_path / "instructions.jsonl"
    qs = ["Name a colour.", "Say hello.", "Count to three."]
    data.write_text("".join(json.dumps({"instruction": q}) + "\n" for q in qs))
    base = tmp_path / "base.json"
    base.write_text(json.dumps([{"instruction": q, "output": o, "generator": "ref"}
                                for q, o in zip(qs, ["Blue.", "Hello!", "1, 2, 3."])]))
    out = tmp_path / "h2h"
    assert main(["eval", "--model", str(policy), "--data", str(data), "--reward-model", str(rm_dir),
                 "--baseline-outputs", str(base), "--dtype", "float32", "--max-new-tokens", "8",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(x) for x in (out / "comparisons.jsonl").read_text().splitlines()]
    rm = RewardModel.load(str(rm_dir), dtype="float32")
    mine = rm.score(qs, [r["output"] for r in rows])
    assert np.abs(np.array(mine) - [r["reward"] for r in rows]).max() <= 1e-5
    prefs = [1.0 if a > b else 0.0 if a < b else 0.5 for a, b in zip(mine, rm.score(qs, ["Blue.", "Hello!", "1, 2, 3."]))]
    want = win_rate_report(prefs, [r["output"] for r in rows], ["Blue.", "Hello!", "1, 2, 3."])
    assert summary["win_rate"] == pytest.approx(want["win_rate"]) and summary["n_total"] == 3
    assert json.loads((out / "model_outputs.json").read_text())[0]["generator"] == str(policy)
    # a random judge states no verdict: nothing is judged, nothing is made up (its context holds
    # the pairwise prompt: ~900 byte tokens)
    from jaxevo.weights.hf import export_hf
    from tests.sampling.helpers import tiny

    cfg, params = tiny("llama3")
    judge = export_hf(params, cfg.replace(max_position_embeddings=2048), tmp_path / "judge",
                      tokenizer=byte_tokenizer())
    assert main(["eval", "--model", str(policy), "--data", str(data), "--judge", str(judge), "--judge-max-new-tokens", "16",
                 "--baseline-outputs", str(base), "--max-new-tokens", "8", "--out", str(tmp_path / "j")]) == 0
    judged = json.loads((tmp_path / "j" / "summary.json").read_text())
    assert judged["n_total"] == 0 and judged["n_unjudged"] == 3
    assert judged["win_rate"] is None  # undefined: null in the JSON, not NaN
    assert "no win rate: the judge gave a verdict on none of 3 comparisons" in capsys.readouterr().out
    assert main(["eval", "--model", str(policy), "--data", str(data), "--baseline", "x"]) == 2
    assert "need --judge J or --reward-model DIR" in capsys.readouterr().err
