"""Training a reward model with `jaxevo train` (`objective.name: reward_model`): Bradley–Terry as
TRL's RewardTrainer computes it, through the one train engine (micro-batches, mesh, checkpoints,
exact resume), exported as a HF sequence classifier that transformers re-scores equally (1e-4)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.errors import ConfigError
from jaxevo.judging.reward_model import RewardModel
from jaxevo.losses import bradley_terry_loss
from jaxevo.train.config import (CheckpointSection, DataSection, LogSection, ModelSection,
                                 ObjectiveSection, OptimSection, TrainConfig)
from jaxevo.train.loop import train
from jaxevo.train.score_head import score_model
from jaxevo.weights.load import Pretrained
from tests.conftest import subprocess_env
from tests.sampling.helpers import PAD, byte_tokenizer, tiny

ROOT = Path(__file__).resolve().parents[2]
RECORDS = [{"prompt": f"Question {i}: is it fine?", "chosen": "Yes, it is fine." if i % 2 else "Sure thing.",
            "rejected": "No!!" if i % 3 else "nope"} for i in range(16)]


def test_bradley_terry_loss_hand_computed():
    loss, m = bradley_terry_loss(jnp.array([1.0, 0.0, 2.0]), jnp.array([0.0, 0.0, 3.0]))
    want = (math.log1p(math.exp(-1)) + math.log(2) + math.log1p(math.exp(1))) / 3
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(m["accuracy"]) == pytest.approx(1 / 3) and float(m["margin"]) == pytest.approx(0.0)
    assert (float(m["min_reward"]), float(m["max_reward"])) == (0.0, 3.0)
    assert float(m["mean_reward"]) == pytest.approx(1.0)
    with_margin, _ = bradley_terry_loss(jnp.array([1.0]), jnp.array([0.0]), jnp.array([1.0]), center_coef=0.5)
    assert float(with_margin) == pytest.approx(math.log(2) + 0.5 * 1.0, rel=1e-6)


def _lm(seed=1) -> Pretrained:
    """A tiny random Qwen2 causal LM with the ChatML byte tokenizer (pad id 256). Seed 1: its
    initial rewards order RECORDS' pairs both ways, so accuracy's start is not vacuous (seeds 0, 2
    and 3 of tests/model_params.py's draw order every pair one way)."""
    cfg, params = tiny("qwen2", seed, dtype="float32")
    return Pretrained(cfg, params, byte_tokenizer(), None)


def _cfg(out, **kw) -> TrainConfig:
    base = dict(out_dir=str(out), batch_size=8, steps=4, seed=0,
                model=ModelSection(dtype="float32", param_dtype="float32", rounding="nearest"),
                data=DataSection(max_length=96, pad_to_multiple=16),
                objective=ObjectiveSection(name="reward_model"),
                optim=OptimSection(lr=3e-3, schedule="constant", clip_norm=None),
                log=LogSection(tensorboard=False, progress=False))
    base.update(kw)
    return TrainConfig(**base)


def _scores(rm: RewardModel, records):
    return (np.array(rm.score([r["prompt"] for r in records], [r["chosen"] for r in records])),
            np.array(rm.score([r["prompt"] for r in records], [r["rejected"] for r in records])))


def test_one_step_equals_trls_loss_and_metrics(tmp_path):
    """The first step's loss and metrics equal TRL's compute_loss (torch, on the rewards the
    scorer gives the initial model), with a margin column and center_rewards_coefficient; with two
    micro-batches the loss and the mean metrics are the same."""
    torch = pytest.importorskip("torch")
    recs = [dict(r, margin=0.25 * (i % 3)) for i, r in enumerate(RECORDS[:8])]
    hp = {"center_rewards_coefficient": 0.01, "init_std": 0.5}  # a large head: rewards far apart
    cfg = _cfg(tmp_path / "one", steps=1, objective=ObjectiveSection(name="reward_model", hparams=hp),
               checkpoint=CheckpointSection(export=False, final=False))
    start = score_model(cfg, _lm())
    rm = RewardModel(start.cfg, start.params, start.tokenizer, pad_token_id=start.cfg.pad_token_id)
    assert start.cfg.pad_token_id == PAD and start.params["score"].shape == (start.cfg.hidden_size, 1)
    rc, rr = (torch.tensor(x) for x in _scores(rm, recs))
    margin = torch.tensor([r["margin"] for r in recs], dtype=torch.float32)
    want = (-torch.nn.functional.logsigmoid(rc - rr - margin).mean() + 0.01 * torch.mean((rc + rr) ** 2)).item()
    both = torch.cat([rc, rr])
    m = train(cfg, pretrained=_lm(), records=recs).history[0]
    assert m["loss"] == pytest.approx(want, rel=1e-5)
    assert m["accuracy"] == pytest.approx((rc > rr).float().mean().item(), abs=1e-7)
    assert 0 < m["accuracy"] < 1  # both outcomes occur: the comparison is not vacuous
    for k, v in (("margin", (rc - rr).mean()), ("mean_reward", both.mean()), ("min_reward", both.min()),
                 ("max_reward", both.max())):
        assert m[k] == pytest.approx(v.item(), rel=1e-5, abs=1e-6), k
    two = train(cfg.replace(out_dir=str(tmp_path / "two"), micro_batch_size=4), pretrained=_lm(),
                records=recs).history[0]
    for k in ("loss", "accuracy", "margin", "mean_reward", "grad_norm"):
        assert two[k] == pytest.approx(m[k], rel=1e-5, abs=1e-6), k


def test_a_tiny_reward_model_learns_exports_and_rescores_in_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from jaxevo.cli import main

    res = train(_cfg(tmp_path / "rm", steps=16), pretrained=_lm(), records=RECORDS)
    hist = res.history
    assert {"loss", "accuracy", "margin", "min_reward", "mean_reward", "max_reward"} <= set(hist[0])
    assert hist[0]["loss"] == pytest.approx(math.log(2), abs=0.05)  # a near-zero head: r_c ~ r_r
    assert hist[-1]["loss"] < 0.1 and hist[-1]["accuracy"] == 1.0 and hist[0]["accuracy"] < 1.0
    rm = RewardModel.load(str(res.export_dir), dtype="float32")  # out_dir/final, as every command reads it
    assert rm.pad_token_id == PAD
    assert main(["export", "--model", str(tmp_path / "rm"), "--out", str(tmp_path / "hf")]) == 0
    tok = byte_tokenizer()
    for d in (res.export_dir / "model", tmp_path / "hf"):
        model = transformers.AutoModelForSequenceClassification.from_pretrained(d, dtype=torch.float32).eval()
        for rec in RECORDS[:4]:
            for key in ("chosen", "rejected"):
                ids = tok.apply_chat_template([{"role": "user", "content": rec["prompt"]},
                                               {"role": "assistant", "content": rec[key]}], tokenize=True,
                                              return_dict=True)["input_ids"]
                with torch.no_grad():
                    ref = float(model(torch.tensor([ids])).logits[0, 0])
                assert rm.score([rec["prompt"]], [rec[key]])[0] == pytest.approx(ref, abs=1e-4)
    rc, rr = _scores(rm, RECORDS)
    assert (rc > rr).all()  # the trained preference, as the scorer sees it


def test_resume_after_a_stop_is_exact(tmp_path):
    """Stopped after step 3 of 6 (checkpoint every 2) and rerun: the same params and the same
    metrics for steps 4-6 as an uninterrupted run."""
    ck = CheckpointSection(every=2, keep=3, export=False)
    full = train(_cfg(tmp_path / "a", steps=6, checkpoint=ck), pretrained=_lm(), records=RECORDS)
    cfg = _cfg(tmp_path / "b", steps=6, checkpoint=ck)
    part = train(cfg, pretrained=_lm(), records=RECORDS, stop_at=3)
    assert part.steps == 3
    rest = train(cfg, pretrained=_lm(), records=RECORDS)
    assert rest.steps == 6 and len(rest.history) == 3
    for a, b in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(rest.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(full.history[3:], rest.history):
        assert a["loss"] == b["loss"] and a["accuracy"] == b["accuracy"]


MESH_SCRIPT = """
import json, sys, jax
from jaxevo.sharding import make_mesh
from jaxevo.train.loop import train
from jaxevo.train.config import CheckpointSection
from tests.judging.test_reward_training import RECORDS, _cfg, _lm
assert jax.device_count() == 8
out = {}
for name, shape, devs in (("1", (1, 1, 1), jax.devices()[:1]), ("2x2x2", (2, 2, 2), jax.devices())):
    res = train(_cfg(sys.argv[1] + "/" + name, steps=4, micro_batch_size=4, mesh=shape,
                     checkpoint=CheckpointSection(export=False)),
                pretrained=_lm(), records=RECORDS, mesh=make_mesh(shape, devs))
    spec = res.state.params["decoder"]["layers"]["mlp"]["up_proj"].sharding.spec
    out[name] = {"curve": res.history, "spec": str(spec)}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_mesh_2x2x2_trains_as_one_device(tmp_path):
    """4 steps of 2 micro-batches on the (2, 2, 2) CPU mesh (decoder sharded over fsdp x tensor,
    pairs over data x fsdp): the loss curve and metrics equal one device's."""
    env = subprocess_env(devices=8)
    r = subprocess.run([sys.executable, "-c", MESH_SCRIPT, str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    one, many = res["1"]["curve"], res["2x2x2"]["curve"]
    assert "fsdp" in res["2x2x2"]["spec"] and "tensor" in res["2x2x2"]["spec"]
    for k in ("loss", "grad_norm", "accuracy", "margin", "mean_reward", "min_reward", "max_reward"):
        # step 1 (same weights): equal to float round-off. Later steps: Adam's first updates are
        # ~lr * sign(g), so the round-off of near-zero gradient entries becomes lr-sized steps
        # (measured at lr 3e-3: 5e-4 relative on the 4th max_reward); a real sharding error shows
        # at step 1 already. The curve is compared to 1e-3.
        np.testing.assert_allclose(many[0][k], one[0][k], rtol=1e-5, atol=1e-6, err_msg=k)
        np.testing.assert_allclose([m[k] for m in many], [m[k] for m in one], rtol=1e-3, atol=1e-5, err_msg=k)
    assert one[-1]["loss"] < one[0]["loss"]


def test_bad_reward_model_configs_are_refused(tmp_path):
    from jaxevo.lora import LoraSection

    with pytest.raises(ConfigError, match=r"objective.hparams \['beta_typo'\]"):
        train(_cfg(tmp_path / "a", objective=ObjectiveSection(name="reward_model", hparams={"beta_typo": 1})),
              pretrained=_lm(), records=RECORDS)
    with pytest.raises(ConfigError, match="lora.rank=4"):
        train(_cfg(tmp_path / "b", lora=LoraSection(rank=4)), pretrained=_lm(), records=RECORDS)
    with pytest.raises(ConfigError, match="record 0: a conversation of .* tokens > data.max_length=16"):
        train(_cfg(tmp_path / "c", data=DataSection(max_length=16, truncation="error")), pretrained=_lm(),
              records=RECORDS)
    with pytest.raises(ConfigError, match="lacks|missing or non-string field"):
        train(_cfg(tmp_path / "d"), pretrained=_lm(), records=[{"prompt": "a", "chosen": "b"}] * 8)


@pytest.mark.slow
def test_jaxevo_train_config_from_a_causal_lm_then_from_the_reward_model(tmp_path):
    """`jaxevo train --config configs/train_reward_model_demo.yaml` (toy-sized by overrides) from a
    causal LM directory on disk, then again from its output (a *ForSequenceClassification): the
    second run starts from the trained head, its first rewards those the scorer gives."""
    from jaxevo.cli import main
    from jaxevo.config import load_config
    from tests.sampling.helpers import tiny_model_dir

    demo = ROOT / "configs" / "train_reward_model_demo.yaml"
    assert load_config(TrainConfig, demo).objective.name == "reward_model"
    lm = tiny_model_dir(tmp_path, "qwen2")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    common = [f"data.path={data}", "data.max_length=96", "data.pad_to_multiple=16", "batch_size=8",
              "micro_batch_size=8", "model.dtype=float32", "model.rounding=nearest", "optim.lr=3e-3",
              "optim.warmup_steps=0", "log.tensorboard=false", "log.progress=false"]
    first = tmp_path / "first"
    assert main(["train", "--config", str(demo), f"model.path={lm}", f"out_dir={first}", "steps=4", *common]) == 0
    rm = RewardModel.load(str(first), dtype="float32")  # the out_dir stands for its final/
    rc, rr = _scores(rm, RECORDS)
    second = tmp_path / "second"
    assert main(["train", "--config", str(demo), f"model.path={first / 'final'}", f"out_dir={second}",
                 "steps=1", "data.shuffle=false", *common]) == 0
    m = json.loads((second / "metrics.jsonl").read_text().splitlines()[0])
    assert m["mean_reward"] == pytest.approx(float(np.mean(np.r_[rc[:8], rr[:8]])), rel=1e-5, abs=1e-6)
    assert m["accuracy"] == pytest.approx(float(np.mean(rc[:8] > rr[:8])))


def test_plan_compiles_the_reward_model_step(tmp_path):
    """`jaxevo plan` of `objective.name: reward_model`: the step `train` runs, on the decoder and
    a [E, 1] head (no LM head in the state); the shipped 8B plans parse."""
    from jaxevo.config import load_config
    from jaxevo.models.config import ModelConfig
    from jaxevo.plan import PlanConfig, SampleSection, TargetSection, make_plan
    from tests.conftest import TINY_HF

    (tmp_path / "config.json").write_text(json.dumps(TINY_HF["qwen2"]))
    cfg = PlanConfig(model_config=str(tmp_path / "config.json"), seq_len=32,
                     train=TrainConfig(batch_size=4, objective=ObjectiveSection(name="reward_model")),
                     sample=SampleSection(enabled=False), target=TargetSection(platform="cpu", devices=1))
    tr = make_plan(cfg)["train"]
    dec = ModelConfig.from_hf(TINY_HF["qwen2"]).replace(tie_word_embeddings=True)
    assert tr["objective"] == "reward_model" and tr["views"] == ["chosen", "rejected"]
    assert tr["state_bytes"]["params"] == 4 * (dec.num_params() + dec.hidden_size)
    assert tr["memory"]["temp"] > 0 and not tr["does_not_fit"]
    for name in ("llama3.1-8b-rm-v5p-32", "llama3.1-8b-evolve-chat-v5p-32"):
        plan = load_config(PlanConfig, ROOT / "configs" / "scale" / f"{name}.yaml", [])
        assert plan.train.objective.name in ("reward_model", "evolve")
