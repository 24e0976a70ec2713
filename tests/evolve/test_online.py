"""The online stage (`grpo`, configs/grpo.yaml) on a tiny random model: the rollout batch's labels
line up with what the sampler sampled, the `policy` objective through the one train step is
`policy_loss` (exact under micro-batching), DAPO's dynamic sampling, a round that trains, logs and
checkpoints, and bad settings as ConfigErrors."""

import json
from types import MethodType, SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.config import load_config
from jaxevo.errors import ConfigError
from jaxevo.evolve.config import EvolveConfig
from jaxevo.evolve.context import RoundContext
from jaxevo.evolve.driver import run_evolve
from jaxevo.evolve import online
from jaxevo.evolve.online import _SamplingShare, rollout, score_groups
from jaxevo.evolve.scorers import SCORERS, register_scorer
from jaxevo.losses import policy_loss
from jaxevo.sampling.api import Sampler, SamplingParams
from jaxevo.sampling.params import Completion, RunStats
from jaxevo.sharding import make_mesh
from jaxevo.train.builder import build_step
from jaxevo.train.config import ObjectiveSection, TrainConfig
from jaxevo.train.rollout import rollout_batch, token_logps_fn, with_extras
from jaxevo.train.state import init_state
from jaxevo.train.step import fetch, finalize_metrics, to_global
from jaxevo.weights.load import load_pretrained
from tests.evolve.conftest import ROOT, recipe

# A reward with variance for a random model (it never answers): the parity of the text's code points.
ONLINE = ["run.rounds=1", "eval.before=false", "grpo.steps=4", "grpo.prompts_per_step=2", "grpo.group_size=3",
          "prompts.per_round=8", "grpo.rewards={test_parity: 1.0}", "grpo.micro_batch_size=3",
          "grpo.checkpoint_every=1"]


def parity(group, params):
    return [float(sum(map(ord, r["text"])) % 2) for r in group["responses"]]


@pytest.fixture(autouse=True, scope="module")
def registered():
    register_scorer("test_parity")(parity)
    yield
    SCORERS.remove("test_parity")


@pytest.fixture(scope="module")
def tiny_f32(tiny_model):
    return load_pretrained(tiny_model, dtype="float32", param_dtype="float32")


def test_rollout_batch_labels_are_what_the_sampler_sampled(tiny_f32):
    """Teacher-forced log-probs of the rollout batch at its label positions equal the sampler's
    own f32 log-probs of the sampled tokens (so labels, positions and masks line up)."""
    s = Sampler(tiny_f32.cfg, tiny_f32.params, tiny_f32.tokenizer, max_batch=8)
    ids = s.encode(["What is 2+3?", "Name a colour and explain why you like it."])
    comps = s.generate_ids(ids, SamplingParams(max_new_tokens=10, temperature=1.0, n=2, seed=3))
    flat = [cp for cs in comps for cp in cs]
    batch = rollout_batch([ids[i] for i in range(2) for _ in range(2)], [list(cp.token_ids) for cp in flat],
                          np.arange(4.0), pad_to_multiple=16)
    mesh = make_mesh((1, -1, 1))
    lp = np.asarray(token_logps_fn(tiny_f32.cfg, mesh)(tiny_f32.params, to_global(batch, mesh)))
    labels = batch.views["completion"]["labels"]
    for i, cp in enumerate(flat):
        pos = np.nonzero(labels[i] >= 0)[0]
        assert list(labels[i, pos]) == list(cp.token_ids)
        np.testing.assert_allclose(lp[i, pos], cp.token_logprobs, atol=2e-5)
        assert np.all(lp[i, labels[i] < 0] == 0)


# (dr_grpo takes grpo's path: both divide by the global number of sequences)
@pytest.mark.parametrize("loss_type,level,micro", [("dapo", "token", 2), ("grpo", "sequence", 2),
                                                   ("bnpo", "token", 4)])
def test_policy_objective_step_is_policy_loss(tiny_f32, loss_type, level, micro):
    """The train step's loss with the `policy` objective equals `policy_loss` on the whole batch,
    also when the batch is split into micro-batches (old and reference log-probs as extras)."""
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(5, 1000, size=n)) for n in (3, 5, 4, 6)]
    comps = [list(rng.integers(5, 1000, size=n)) for n in (7, 2, 5, 4)]
    adv = np.array([1.2, -0.4, 0.0, -0.9], np.float32)
    batch = rollout_batch(prompts, comps, adv, pad_to_multiple=8)
    mesh = make_mesh((1, -1, 1))
    hp = {"epsilon_low": 0.2, "epsilon_high": 0.28, "importance_sampling_level": level,
          "max_completion_length": 9}
    tc = TrainConfig(batch_size=4, micro_batch_size=4 // micro,
                     objective=ObjectiveSection(name="policy", loss_type=loss_type, beta=0.05, hparams=hp))
    params = tiny_f32.params
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    parts = build_step(tc, tiny_f32.cfg, mesh, abstract, 10)
    gb = to_global(batch, mesh)
    lp = token_logps_fn(tiny_f32.cfg, mesh)(params, gb)
    mask = jnp.asarray(batch.views["completion"]["labels"] >= 0, jnp.float32)
    old = lp + jnp.asarray(rng.normal(0, 0.3, lp.shape), jnp.float32) * mask
    ref = lp + jnp.asarray(rng.normal(0, 0.3, lp.shape), jnp.float32) * mask
    gb = with_extras(gb, old_token_lp=old, ref_token_lp=ref)
    state = init_state(params, parts.tx, 0, parts.state_shardings)
    _, raw = parts.step(state, gb)
    got = finalize_metrics(fetch(raw))
    want, wm = policy_loss(loss_type, lp, old, ref, adv, mask, beta=0.05, **hp)
    np.testing.assert_allclose(got["loss"], float(want), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(got["kl"], float(wm["kl"]), rtol=2e-5)
    np.testing.assert_allclose(got["clip_ratio/region_mean"], float(wm["clip_ratio/region_mean"]), atol=1e-6)


class _StubSampler:
    """Draw d returns, for every prompt, the texts of `script[d]`; a call for several draws' prompts
    (`len(script[0])` each) goes through as many entries."""

    def __init__(self, script):
        self.script, self.draws, self.last_stats, self.seen, self.calls = script, 0, RunStats(), [], []

    def encode(self, prompts, chat=True):
        return [[1, 2, 3] for _ in prompts]

    def generate_ids(self, ids, sp, progress=False, bar=None):
        self.seen.append(sp)
        per = len(self.script[0])
        self.calls.append(len(ids) // per)
        texts = [self.script[self.draws + p // per][p % per] for p in range(len(ids))]
        self.draws += len(ids) // per
        self.last_stats = RunStats(new_tokens=len(ids) * sp.n, seconds=1.0)
        return [[Completion(t, (7,), np.zeros(1, np.float32), 0.0, "eos", p, j, 3) for j, t in enumerate(texts[p])]
                for p in range(len(ids))]


def _ctx(*overrides):
    cfg = load_config(EvolveConfig, ROOT / "configs" / "grpo.yaml",
                      ["grpo.prompts_per_step=2", "grpo.group_size=2", "grpo.micro_batch_size=2",
                       "grpo.rewards={test_parity: 1.0}", *overrides])
    ctx = SimpleNamespace(cfg=cfg, seed=0)
    ctx.sampling = MethodType(RoundContext.sampling, ctx)  # the run's own sampling parameters
    return ctx


def test_rollouts_end_at_the_answer_when_stop_after_is_set():
    """`sample.stop_after` ends the online stage's completions too: they are answers."""
    items = [{"id": str(i), "prompt": f"p{i}"} for i in range(2)]
    pattern = r"(?i)the answer is \d+\."
    for overrides, want in (((), ()), ((f"sample.stop_after=['{pattern}']",), (pattern,))):
        sampler = _StubSampler([[["a", "b"], ["a", "a"]]])
        rollout(_ctx(*overrides), sampler, items, {"step": 0, "prompt": 0, "draw": 0})
        assert tuple(sampler.seen[0].stop_after) == want


class _RecordingBar:
    """What the online stage's tqdm bar is told: every position and postfix."""

    def __init__(self, n):
        self.positions, self.postfixes, self._n = [], [], n

    @property
    def n(self):
        return self._n

    @n.setter
    def n(self, value):
        self._n = value
        self.positions.append(value)

    def set_postfix(self, **kw):
        self.postfixes.append(kw)


def test_the_online_bar_moves_while_a_step_samples(tiny_f32):
    """Step 3 of a run (bar at 2), sampling 40% of a step: the bar moves several times within
    [2, 2.4], never back, and reaches 2.4 when every row is sampled."""
    items = [{"id": str(i), "prompt": f"p{i}"} for i in range(2)]
    sampler = Sampler(tiny_f32.cfg, tiny_f32.params, tiny_f32.tokenizer, max_batch=4, check_every=4)
    bar = _RecordingBar(2.0)
    ctx = _ctx("sample.max_new_tokens=32")
    rollout(ctx, sampler, items, {"step": 2, "prompt": 0, "draw": 0}, _SamplingShare(bar, 2, 4, 0.4))
    pos = bar.positions
    assert len(set(pos)) >= 3 and pos == sorted(pos), pos
    assert 2.0 <= pos[0] and pos[-1] == pytest.approx(2.4)
    assert all(p["phase"] == "sampling" and "tok_s" in p for p in bar.postfixes)


def test_dynamic_sampling_replaces_flat_groups():
    items = [{"id": str(i), "prompt": f"p{i}"} for i in range(6)]
    # parity("a") = 1, parity("b") = 0: groups (a, a) are flat, (a, b) are not
    script = [[["a", "a"], ["a", "b"]], [["b", "b"], ["b", "a"]], [["a", "b"], ["a", "b"]]]
    pos = {"step": 0, "prompt": 0, "draw": 0}
    stub = _StubSampler(script)
    groups, st = rollout(_ctx("grpo.dynamic_sampling=true", "grpo.max_draws=3"), stub, items, pos)
    assert st["draws"] == 2 and st["groups_kept"] == 2  # one kept per draw; the third draw not needed
    assert [list(g[2]) for g in groups] == [[1.0, 0.0], [0.0, 1.0]]
    # the first step samples all max_draws in one call; the third's prompts come again next step
    assert stub.calls == [3] and pos == {"step": 0, "prompt": 4, "draw": 1, "needed": [2]}
    # without dynamic sampling the first draw is the batch, flat groups included
    pos = {"step": 0, "prompt": 0, "draw": 0}
    groups, st = rollout(_ctx(), _StubSampler(script), items, pos)
    assert st["draws"] == 1 and [list(g[2]) for g in groups] == [[1.0, 1.0], [1.0, 0.0]]
    # too few varied groups after max_draws: the flat ones fill the batch (fixed shape)
    pos = {"step": 0, "prompt": 0, "draw": 0}
    groups, st = rollout(_ctx("grpo.dynamic_sampling=true", "grpo.max_draws=1"), _StubSampler(script), items, pos)
    assert st["groups_kept"] == 1 and [list(g[2]) for g in groups] == [[1.0, 0.0], [1.0, 1.0]]


def test_draws_the_last_steps_needed_are_sampled_together(monkeypatch):
    """A step samples at once the most draws any of the last 3 steps needed and reads them in
    order: the same groups as drawing one by one; a draw not needed is dropped unscored and its
    prompts come again (the cursor moves by the draws used); the seed counter moves once per call;
    short of P after them, one more call samples all the draws left."""
    items = [{"id": str(i), "prompt": f"p{i}"} for i in range(12)]
    script = [[["a", "a"], ["a", "b"]], [["b", "b"], ["b", "a"]], [["a", "b"], ["a", "b"]]]
    ctx = _ctx("grpo.dynamic_sampling=true", "grpo.max_draws=3")
    one = _StubSampler(script)
    want, _ = rollout(ctx, one, items, {"step": 0, "prompt": 0, "draw": 0, "needed": [1]})
    two = _StubSampler(script)
    pos = {"step": 1, "prompt": 0, "draw": 0, "needed": [1, 2, 1]}
    got, st = rollout(ctx, two, items, pos)
    assert one.calls == [1, 2] and two.calls == [2]  # short after 1: the 2 left in one call
    assert st["draws"] == 2 and pos == {"step": 1, "prompt": 4, "draw": 1, "needed": [2, 1, 2]}
    assert [list(g[2]) for g in got] == [list(g[2]) for g in want] == [[1.0, 0.0], [0.0, 1.0]]
    # 3 ahead, 1 needed: two draws dropped unscored, their prompts next
    scored = []
    monkeypatch.setattr(online, "score_groups", lambda c, groups: scored.append(len(groups))
                        or score_groups(c, groups))
    three = _StubSampler([[["a", "b"], ["b", "a"]]] + script)
    pos = {"step": 1, "prompt": 0, "draw": 0, "needed": [3, 1, 1]}
    got, st = rollout(ctx, three, items, pos)
    assert three.calls == [3] and st["draws"] == 1 and st["groups_kept"] == 2 and scored == [2]
    assert pos == {"step": 1, "prompt": 2, "draw": 1, "needed": [1, 1, 1]}
    # short of P after the draws ahead: one more call for what is left of max_draws
    four = _StubSampler([[["a", "a"], ["b", "b"]]] * 3)
    pos = {"step": 1, "prompt": 0, "draw": 0, "needed": [2]}
    got, st = rollout(ctx, four, items, pos)
    assert four.calls == [2, 1] and st["draws"] == 3 and pos["prompt"] == 6 and pos["draw"] == 2
    assert pos["needed"] == [2, 3]


@pytest.mark.parametrize("share", [1, 3])  # 3: a row per group, its prompt run once (group_batch)
def test_grpo_round_trains_logs_and_checkpoints(tmp_path, tiny_model, share):
    cfg, raw = recipe("grpo", tmp_path / "run", tiny_model, *ONLINE, "grpo.beta=0.04", "grpo.iterations=2",
                      "run.keep_checkpoints=true", f"grpo.share_prompt={share}")
    m = run_evolve(cfg, raw)
    info = m["rounds"]["1"]["stages"]["grpo"]
    assert info["steps"] == 4 and info["completions"] == 4 * 2 * 3 and m["rounds"]["1"]["done"]
    stage = tmp_path / "run" / "round_001" / "grpo"
    rows = [json.loads(x) for x in (stage / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in ("reward", "reward_std", "kl", "loss", "clip_ratio/region_mean", "tokens_per_s",
                "rewards/test_parity/mean", "completions/mean_length", "frac_reward_zero_std"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert rows[-1]["kl"] > 0  # the policy moved away from the reference
    # 6 rows a step (2 prompts x 3 samples) padded to the longest, rounded up to the multiple
    pad = cfg.grpo.train.data.pad_to_multiple
    assert all(r["batch/length"] % pad == 0 and r["batch/length"] - pad < r["batch/tokens"] for r in rows)
    assert all(r["batch/tokens"] <= 6 * r["batch/length"] for r in rows)
    assert any(f.name.startswith("events.out.tfevents") for f in (stage / "train" / "tensorboard").rglob("*"))
    assert sorted(int(p.name) for p in (stage / "train" / "checkpoints").iterdir() if p.name.isdigit())[-1] == 4
    start = load_pretrained(tiny_model, dtype="float32").params
    end = load_pretrained(str(stage / "train" / "final"), dtype="float32").params
    moved = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(end))]
    assert max(moved) > 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "rewards: test_parity x 1; 4 online steps x 2 prompts x 3 samples per round" in report


def test_grpo_settings_are_checked():
    with pytest.raises(ConfigError, match="loss_type"):
        _ctx("grpo.loss_type=ppo")
    with pytest.raises(ConfigError, match="micro_batch_size"):
        _ctx("grpo.micro_batch_size=3")
    with pytest.raises(ConfigError, match="group_size"):
        _ctx("grpo.group_size=1", "grpo.micro_batch_size=null")
    with pytest.raises(ConfigError, match="no `grpo:` section"):
        load_config(EvolveConfig, None, ["stages=[prompts, grpo, eval]"])
    with pytest.raises(ConfigError, match="scale_rewards"):
        _ctx("grpo.scale_rewards=global")
    with pytest.raises(ConfigError, match=r"share_prompt=3 \(completions per row\) must be >= 1 and divide "
                                          "group_size=2"):
        _ctx("grpo.share_prompt=3")


def test_rewards_weighted_sum_with_unscored_completions():
    """Weighted terms add up; None (no opinion) is left out of the sum (TRL's nansum) and a
    completion no term scores is NaN (advantage 0); the overlong penalty is one more term."""
    def half(group, params):
        return [None if r["text"] == "x" else 0.5 for r in group["responses"]]

    register_scorer("test_half")(half)
    try:
        ctx = _ctx("grpo.rewards={test_parity: 2.0, test_half: 1.0}")
        groups = [{"item": {}, "responses": [{"text": "a", "length": 1}, {"text": "b", "length": 1},
                                             {"text": "x", "length": 1}]}]
        total, means = score_groups(ctx, groups)
        # parity: a=1, b=0, x=0 (ord 120); half: 0.5, 0.5, None
        np.testing.assert_allclose(total, [2.5, 0.5, 0.0])
        assert means == pytest.approx({"rewards/test_parity/mean": 1 / 3, "rewards/test_half/mean": 0.5})
        assert np.isnan(score_groups(_ctx("grpo.rewards={test_half: 1.0}"), groups)[0][2])  # no term scored it
        ctx = _ctx("grpo.rewards={test_half: 1.0}", "grpo.overlong_buffer=4", "sample.max_new_tokens=10")
        groups[0]["responses"][1]["length"] = 8  # (10 - 4 - 8) / 4 = -0.5
        total, _ = score_groups(ctx, groups)
        np.testing.assert_allclose(total, [0.5, 0.0, 0.0])  # x: only the penalty (0) scored it
    finally:
        SCORERS.remove("test_half")
