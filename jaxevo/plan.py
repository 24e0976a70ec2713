"""`jaxevo plan`: will it fit, and how fast can it be — before renting the pod.

Compiles the real train step (`jaxevo.train.builder.build_step`, the step `train` runs) and the
real sampler programs (`jaxevo.sampling.loop.start` / `run`) **ahead of time on abstract shapes**:
every input is a `jax.ShapeDtypeStruct` carrying its target `NamedSharding`, so no weight is loaded
or allocated. The mesh is built over

* ``platform: tpu`` — compile-only devices of the target slice (`jax.experimental.topologies`,
  needs the ``libtpu`` package, no TPU): XLA's TPU compiler then reports the real per-chip memory;
* ``platform: cpu`` — N host CPU devices (``--xla_force_host_platform_device_count``) in the same
  mesh shape with the same shardings: sharding, shapes and per-device argument sizes are exact,
  temp memory is the CPU compiler's (a different fusion/scheduler than TPU's: an estimate).

For each program: ``compiled.memory_analysis()`` (arguments, outputs, donated aliases, temps, per
device) and ``compiled.cost_analysis()`` (per-device FLOPs and bytes accessed), next to analytic
counts (6·N·tokens model FLOPs + attention) and the target chip's peak FLOP/s, HBM and bandwidths
(`CHIPS`), from which `estimate` derives step time bounds and the MFU to expect.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import topologies
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxevo.errors import ConfigError
from jaxevo.lora.quantize import abstract_frozen_base
from jaxevo.models import decode
from jaxevo.models.config import ModelConfig
from jaxevo.plan_online import colocated, needs_logps_forward, policy_extras, policy_rows
from jaxevo.sampling import loop, placement
from jaxevo.sampling.api import SamplingParams, length_bucket
from jaxevo.sharding import make_mesh, param_shardings, use_mesh
from jaxevo.train.batches import VIEW_KEYS, Batch
from jaxevo.train.builder import build_step
from jaxevo.train.config import TrainConfig
from jaxevo.train.objectives import get_objective
from jaxevo.train.rollout import token_logps_fn
from jaxevo.train.score_head import abstract_score_params, decoder_config, score_shardings
from jaxevo.train.state import abstract_state
from jaxevo.train.step import batch_spec_sharding
from jaxevo.weights.convert import abstract_params as abstract_param_shapes

GiB = 1024 ** 3


# ----------------------------------------------------------------------------- hardware
@dataclasses.dataclass(frozen=True)
class Chip:
    """Public per-chip numbers (cloud.google.com/tpu/docs/system-architecture-tpu-vm)."""

    name: str
    hbm_bytes: float
    peak_bf16_flops: float
    hbm_bw: float  # bytes/s
    ici_bw: float  # bytes/s, one direction, summed over the chip's ICI links
    cores_per_chip: int  # how the accelerator type counts: v4/v5p name TensorCores, v5e/v6e chips
    dims: int  # torus dimensions of the slice


CHIPS = {
    "v4": Chip("TPU v4", 32 * GiB, 275e12, 1228e9, 4 * 50e9, 2, 3),
    "v5p": Chip("TPU v5p", 95e9, 459e12, 2765e9, 6 * 100e9, 2, 3),
    "v5e": Chip("TPU v5e", 16 * GiB, 197e12, 819e9, 4 * 50e9, 1, 2),
    "v6e": Chip("TPU v6e", 32 * GiB, 918e12, 1640e9, 4 * 100e9, 1, 2),
}
# Slice shapes (chips) by chip count; pod slices have 4 chips per host.
TOPO_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4),
           128: (4, 4, 8), 256: (4, 8, 8), 512: (8, 8, 8)}
TOPO_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16),
           256: (16, 16)}


def parse_accelerator(acc: str) -> tuple[str, Chip, int]:
    """'v5p-32' / 'v5litepod-64' / 'v5e-64' / 'v6e-8' -> (family, Chip, number of chips)."""
    m = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)", acc.strip().lower())
    if not m:
        raise ConfigError(f"accelerator {acc!r}: expected e.g. v5p-32, v5e-64 (or v5litepod-64), "
                          f"v6e-8, v4-16")
    fam = "v5e" if m.group(1) == "v5litepod" else m.group(1)
    chip = CHIPS[fam]
    n = int(m.group(2))
    if n % chip.cores_per_chip:
        raise ConfigError(f"accelerator {acc!r}: {fam} counts {chip.cores_per_chip} cores per chip")
    return fam, chip, n // chip.cores_per_chip


def topology_name(fam: str, chips: int) -> str:
    table = TOPO_3D if CHIPS[fam].dims == 3 else TOPO_2D
    if chips not in table:
        raise ConfigError(f"no known {fam} slice shape with {chips} chips ({sorted(table)})")
    return f"{fam}:" + "x".join(map(str, table[chips]))


# ----------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class TargetSection:
    accelerator: str = "v5p-8"  # Cloud TPU accelerator type: fixes the chip and the device count
    platform: Literal["tpu", "cpu"] = "tpu"  # tpu: AOT for the real topology (needs libtpu)
    devices: int | None = None  # override the device count (default: chips of `accelerator`)
    fallback_cpu: bool = True  # no libtpu: compile on a CPU mesh of the same shape instead


@dataclasses.dataclass(frozen=True)
class SampleSection:
    enabled: bool = True
    batch: int = 64  # rows decoded together (prompts x samples)
    prompt_length: int = 512  # bucketed prompt tokens
    max_new_tokens: int = 512
    dtype: str = "bfloat16"  # sampler weights and activations
    prefill_chunk: int = 256
    mesh: tuple[int, int, int] | None = None  # default: the train mesh


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    # A HF config.json, a HF model directory, or a preset name (`PRESETS`): no weights are read.
    model_config: str = "smollm2-135m"
    train: TrainConfig = TrainConfig()
    sample: SampleSection = SampleSection()
    target: TargetSection = TargetSection()
    seq_len: int | None = None  # padded train sequence length (default train.data.max_length)
    # objective `policy`: completions a train row holds (`grpo.share_prompt`); with K > 1,
    # train.batch_size counts completions and the row length follows from `sample`'s lengths
    share_prompt: int = 1
    notes: str = ""  # free text printed with the plan (why this mesh/batch/remat)


PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs" / "scale" / "models"
PRESETS: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(
        model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=49152, hidden_size=576,
        intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2),
    "llama3.1-8b": dict(
        model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=128256, hidden_size=4096,
        intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-5,
        rope_theta=500000.0, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
        rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        bos_token_id=128000, eos_token_id=[128001, 128008, 128009], hidden_act="silu"),
    "qwen2.5-7b": dict(
        model_type="qwen2", architectures=["Qwen2ForCausalLM"], vocab_size=152064, hidden_size=3584,
        intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, max_position_embeddings=32768, rms_norm_eps=1e-6,
        rope_theta=1000000.0, sliding_window=131072, use_sliding_window=False, max_window_layers=28,
        tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151645, hidden_act="silu"),
}


def resolve_model_config(spec: str, base: Path | None = None) -> dict[str, Any]:
    """HF config dict from a preset name, a config.json path or a model directory."""
    if spec in PRESETS:
        return dict(PRESETS[spec])
    for cand in ([Path(spec)] + ([base / spec] if base is not None else [])):
        p = cand / "config.json" if cand.is_dir() else cand
        if p.is_file():
            return json.loads(p.read_text())
    raise ConfigError(f"model_config {spec!r}: not a preset ({sorted(PRESETS)}), nor a config.json "
                      "or a directory holding one")


# ----------------------------------------------------------------------------- devices / mesh
def target_devices(target: TargetSection):
    """(devices, description, platform actually used). TPU: compile-only devices of the slice."""
    fam, chip, chips = parse_accelerator(target.accelerator)
    n = target.devices or chips
    if target.platform == "tpu":
        topo = topology_name(fam, n)
        try:
            desc = topologies.get_topology_desc(topo, "tpu", chip_config_name="default",
                                                chips_per_host_bounds=(2, 2, 1), num_slices=1)
            devs = list(desc.devices)
            if len(devs) != n:
                raise ConfigError(f"topology {topo} has {len(devs)} devices, expected {n}")
            return devs, f"{topo} ({devs[0].device_kind}, compile-only, libtpu)", "tpu"
        except ConfigError:
            raise
        except Exception as e:  # no libtpu / unknown topology
            if not target.fallback_cpu:
                raise ConfigError(f"cannot build TPU topology {topo} without a TPU ({e}); install "
                                  "libtpu (pip install 'jaxevo[tpu]') or set target.platform=cpu")
            why = f"TPU topology unavailable here ({type(e).__name__}: {str(e)[:120]})"
    else:
        why = "platform=cpu"
    cpus = jax.devices("cpu")
    if len(cpus) < n:
        raise ConfigError(f"{n} CPU devices needed, {len(cpus)} present: start with "
                          f"XLA_FLAGS=--xla_force_host_platform_device_count={n} (`jaxevo plan` "
                          "sets it itself when jax has not started yet)")
    return cpus[:n], f"{n} host CPU devices in the target's mesh shape ({why})", "cpu"


# ----------------------------------------------------------------------------- helpers
def per_device_bytes(tree) -> int:
    """Bytes one device holds of an abstract tree whose leaves carry shardings (max over devices
    is the same as any device here: even shards)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) is not None else x.shape
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
    return total


def _memory(compiled) -> dict[str, float]:
    m = compiled.memory_analysis()
    if m is None:
        return {}
    get = lambda k: float(getattr(m, k, 0) or 0)
    out = {"arguments": get("argument_size_in_bytes"), "outputs": get("output_size_in_bytes"),
           "aliased": get("alias_size_in_bytes"), "temp": get("temp_size_in_bytes"),
           "code": get("generated_code_size_in_bytes")}
    out["peak_estimate"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temp"] + out["code"]
    return out


def _cost(compiled) -> dict[str, float]:
    c = compiled.cost_analysis()
    if isinstance(c, (list, tuple)):
        c = c[0] if c else {}
    c = c or {}
    return {"flops": float(c.get("flops", 0.0)), "bytes_accessed": float(c.get("bytes accessed", 0.0))}


def _compile(lower):
    """(compiled, None), or (None, message) when the compiler says it does not fit in HBM."""
    try:
        return lower().compile(), None
    except Exception as e:  # XlaRuntimeError; the TPU compiler's verdict is the useful answer
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        return None, str(e)[:8000]  # the first line is the verdict; then the largest allocations


def abstract(shape, dtype, sharding):
    return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


# ----------------------------------------------------------------------------- train step
def plan_train(cfg: PlanConfig, mcfg, mesh) -> dict[str, Any]:
    """Lower + compile the train step `train` would build (`build_step`) for one global batch on
    abstract params of ``mcfg``; memory, FLOPs, analytic counts."""
    t = cfg.train
    rows = policy_rows(t, cfg.seq_len or t.data.max_length, cfg.share_prompt, cfg.sample.prompt_length,
                       cfg.sample.max_new_tokens, mcfg)
    t = t.replace(batch_size=rows.rows, micro_batch_size=rows.micro)  # as `online.train_config`
    mb, seq = rows.micro, rows.width
    n_batch_dev = mesh.shape["data"] * mesh.shape["fsdp"]
    if mb % n_batch_dev:
        raise ConfigError(f"train.micro_batch_size={mb} rows must be a multiple of data x fsdp = "
                          f"{n_batch_dev} of mesh {dict(mesh.shape)}")
    p_sh, shapes = param_shardings(mcfg, mesh), abstract_param_shapes(mcfg)
    if get_objective(t.objective.name).reads == "score":  # a reward model: decoder + score head
        mcfg = decoder_config(mcfg, mcfg.pad_token_id)
        p_sh, shapes = score_shardings(mcfg, mesh), abstract_score_params(mcfg, jnp.float32)
    ap = jax.tree.map(lambda s, sh: abstract(s.shape, jnp.dtype(mcfg.param_dtype), sh), shapes, p_sh)
    parts = build_step(t, mcfg, mesh, ap, max(1, t.steps or 1000))
    obj, ref_forward = parts.objective, parts.ref_forward
    state = abstract_state(parts.trainable, parts.tx, parts.state_shardings)  # LoRA: adapters
    bsh = batch_spec_sharding(mesh)
    b = t.batch_size
    dtypes = {"tokens": jnp.int32, "labels": jnp.int32, "segments": jnp.int32, "positions": jnp.int32}
    views = {v: {k: abstract((b, seq), dtypes[k], bsh) for k in VIEW_KEYS} for v in obj.view_names}
    extras = {f"ref/{v}": abstract((b,), jnp.float32, bsh) for v in obj.view_names} if (
        parts.needs_reference and not ref_forward) else {}
    if obj.name == "policy":  # online RL: advantages (+ old / reference token log-probs)
        extras = policy_extras(t.objective, rows, bsh)
    batch = Batch(views=views, extras=extras)
    bp = abstract_frozen_base(t.lora, mcfg, mesh, ap) if t.lora.enabled else ap  # QLoRA: quantised
    ref = (ap if t.model.reference else bp) if ref_forward else None
    base = bp if t.lora.enabled else None  # LoRA: the frozen base is the step's 4th argument
    omega = (abstract((mcfg.vocab_size,), jnp.float32, NamedSharding(mesh, P()))
             if t.objective.token_alpha is not None else None)  # token weights: the 5th
    with use_mesh(mesh):
        compiled, oom = _compile(lambda: parts.step.jitted.lower(state, batch, ref, base, omega))
        logps = None
        if needs_logps_forward(t.objective):  # the no-grad forward of old / reference log-probs
            fn = token_logps_fn(mcfg, mesh, chunk=t.logprob_chunk, vocab_chunk=t.vocab_chunk)
            logps, _ = _compile(lambda: fn.jitted.lower(ap, views))
    n_params = mcfg.num_params()
    tokens = b * seq * len(obj.view_names)
    model_flops = train_model_flops(mcfg, tokens, seq)
    # Forward passes run: 1 (+1 recompute with full remat) (+1 reference forward); backward = 2x.
    recompute = 1.0 if mcfg.remat == "full" else (0.0 if mcfg.remat == "none" else 0.5)
    hw_factor = (6 + 2 * recompute + (2 if ref_forward else 0)) / 6
    return {
        "objective": obj.name, "views": list(obj.view_names), "global_batch": b, "per_row": rows.per_row,
        "micro_batch": mb, "seq_len": seq, "tokens_per_step": tokens, "remat": mcfg.remat,
        "params": n_params, "ref_forward": ref_forward,
        "state_bytes": {"params": per_device_bytes(state.params),
                        "opt_state": per_device_bytes(state.opt_state),
                        "batch": per_device_bytes(batch),
                        "frozen_base": per_device_bytes(bp) if base is not None else 0},
        "lora_rank": t.lora.rank,
        "quantize_base": t.lora.quantize_base if t.lora.enabled else None,
        "memory": _memory(compiled) if compiled else {}, "cost": _cost(compiled) if compiled else {},
        "does_not_fit": oom,
        **({"logps_forward": _memory(logps)} if logps is not None else {}),
        "model_flops_per_step": model_flops,
        "model_flops_per_device": model_flops / mesh.size,
        "hardware_flops_factor": hw_factor,
    }


def train_model_flops(mcfg, tokens: int, seq: int) -> float:
    """6·N·tokens for the matmuls (N without the embedding lookup, with the LM head) plus
    attention scores/values: 12·L·H·Dh·seq per token (causal: half of the full square, x2 for
    fwd+bwd recount -> the usual 6·2·L·H·Dh·seq/2·... convention of the PaLM/MaxText MFU)."""
    n = mcfg.num_params() - mcfg.vocab_size * mcfg.hidden_size * (0 if mcfg.tie_word_embeddings else 1)
    attn = 6 * mcfg.num_layers * mcfg.num_heads * mcfg.head_dim * seq  # causal half of 12·L·H·D·T
    return float(tokens) * (6.0 * n + attn)


# ----------------------------------------------------------------------------- sampler
def plan_sampler(cfg: PlanConfig, mcfg_train, mesh) -> dict[str, Any]:
    """Lower + compile prefill and the decode loop for one batch of `sample.batch` rows."""
    s = cfg.sample
    mcfg = mcfg_train.replace(dtype=s.dtype, param_dtype=s.dtype, remat="none")
    n, p = s.batch, s.batch
    t = length_bucket(s.prompt_length, 16, s.prefill_chunk)
    m = length_bucket(s.max_new_tokens, minimum=8, chunk=1 << 30)
    slots = t + m
    p_sh = param_shardings(mcfg, mesh)
    params = jax.tree.map(lambda x, sh: abstract(x.shape, jnp.dtype(s.dtype), sh),
                          abstract_param_shapes(mcfg), p_sh)
    cache_shape = jax.eval_shape(lambda: decode.init_cache(mcfg, n, slots))
    ks, vs = placement.cache_shardings(mcfg, mesh, n, slots)
    cache = decode.Cache(tuple(abstract(x.shape, x.dtype, ks) for x in cache_shape.k),
                         tuple(abstract(x.shape, x.dtype, vs) for x in cache_shape.v))
    rows = lambda k, shape, dt: abstract(shape, dt, placement.rows_sharding(mesh, shape))  # noqa: E731
    tokens = rows(p, (p, t), jnp.int32)
    valid = rows(p, (p, t), jnp.bool_)
    row_vec = rows(n, (n,), jnp.int32)
    rep = NamedSharding(mesh, P())
    sp = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=s.max_new_tokens)
    mode = sp.mode(mcfg.vocab_size)
    state = jax.tree.map(lambda x: rows(x.shape[0], x.shape, x.dtype),
                         jax.eval_shape(lambda: loop.empty_state(n, m, slots, cfg=mcfg, mode=mode)))
    with use_mesh(mesh):
        # The sampler runs on weights prepared once per params (fused q/k/v, gate/up): plan those.
        bits = mesh.devices.flat[0].platform == "cpu"  # the embedding's form there (as the Sampler's)
        prep = jax.jit(decode.prepare_weights, static_argnames=("cfg", "matmul_dtype", "embedding_bits"))
        prep = prep.lower(params, cfg=mcfg, matmul_dtype=s.dtype, embedding_bits=bits).compile()
        weights = jax.tree.map(lambda x, sh: abstract(x.shape, x.dtype, sh),
                               jax.eval_shape(lambda p_: decode.prepare_weights(p_, mcfg, s.dtype, bits), params),
                               prep.output_shardings)
        # eval_shape: no concrete array may be created under jax.set_mesh of compile-only devices.
        knobs = jax.tree.map(lambda x: abstract(x.shape, x.dtype, rep), jax.eval_shape(sp.knobs))
        key = abstract((), jax.eval_shape(lambda: jax.random.key(0)).dtype, rep)
        stop = abstract((8,), jnp.int32, rep)
        # "prefill": start every row (prefill + first token); "decode": the loop to the end.
        pre = loop.start.lower(weights, cache, state, tokens, valid, row_vec, row_vec, row_vec, row_vec,
                               stop, key, knobs, cfg=mcfg, mode=mode, mesh=mesh,
                               chunk=s.prefill_chunk).compile()
        dec = loop.run.lower(weights, cache, state, stop, knobs, abstract((), jnp.int32, rep),
                             abstract((), jnp.int32, rep), cfg=mcfg,
                             mode=mode, mesh=mesh, lockstep=True).compile()
    n_params = mcfg.num_params()
    item = jnp.dtype(s.dtype).itemsize
    kv_bytes = 2 * mcfg.num_layers * n * slots * mcfg.num_kv_heads * mcfg.head_dim * jnp.dtype(cache_shape.k[0].dtype).itemsize
    return {
        "batch": n, "prompt_bucket": t, "new_tokens_bucket": m, "dtype": s.dtype,
        "params_bytes_per_device": per_device_bytes(params),
        "kv_cache_bytes_per_device": per_device_bytes(cache), "kv_cache_bytes_total": kv_bytes,
        "prefill": {"memory": _memory(pre), "cost": _cost(pre),
                    "model_flops": 2.0 * n_params * p * t},
        "decode": {"memory": _memory(dec), "cost": _cost(dec),
                   # one decode step: every weight once (2 FLOPs/MAC) + attention over the cache
                   "model_flops_per_step": 2.0 * n_params * n + 4.0 * mcfg.num_layers * n * slots * mcfg.num_heads * mcfg.head_dim,
                   "bytes_per_step_per_device": per_device_bytes(params) + per_device_bytes(cache)},
        "param_bytes_total": n_params * item,
    }


# ----------------------------------------------------------------------------- estimate
def estimate(plan: dict[str, Any], chip: Chip, devices: int, mesh_shape: dict[str, int]) -> dict[str, Any]:
    """Step-time bounds and expected MFU from the numbers above (each device works in parallel).

    compute:  model FLOPs x hardware factor (remat recompute, ref forward) / peak bf16
    FSDP comm: params all-gathered in fwd (+ recompute) and bwd, grads reduce-scattered, in
              the master dtype (f32: the step casts after the gather): ~ (passes + 1) x bytes x
              (k-1)/k per device over ICI — overlappable with compute by XLA's async collectives
    """
    tr = plan["train"]
    out: dict[str, Any] = {}
    dev_model = tr["model_flops_per_device"]
    t_compute = dev_model * tr["hardware_flops_factor"] / chip.peak_bf16_flops
    k = mesh_shape["fsdp"]
    passes = 2 + (1 if tr["remat"] == "full" else 0)
    pbytes_total = tr["params"] * 4  # f32 master weights
    n_micro = max(1, tr["global_batch"] // tr["micro_batch"])
    t_comm = (passes * n_micro + 1) * pbytes_total / max(1, mesh_shape["tensor"]) * (k - 1) / k / chip.ici_bw
    # XLA's cost analysis counts a while-loop body once (layers are scanned), so its byte count
    # is not a per-step number; the step of a 1B+ model at these batch sizes is compute-bound.
    bound = max(t_compute, t_comm)
    out["train"] = {
        "t_compute_s": t_compute, "t_fsdp_comm_s": t_comm,
        "mfu_upper_bound": dev_model / chip.peak_bf16_flops / bound if bound else 0.0,
        "tokens_per_s_at_bound": tr["tokens_per_step"] / bound if bound else 0.0,
    }
    if "sample" in plan:
        sm = plan["sample"]
        t_step = sm["decode"]["bytes_per_step_per_device"] / chip.hbm_bw
        t_flop = sm["decode"]["model_flops_per_step"] / devices / chip.peak_bf16_flops
        out["decode"] = {"t_hbm_s": t_step, "t_compute_s": t_flop,
                         "tokens_per_s_bound": sm["batch"] / max(t_step, t_flop)}
    return out


# ----------------------------------------------------------------------------- driver
def make_plan(cfg: PlanConfig, *, base: Path | None = None) -> dict[str, Any]:
    hf = resolve_model_config(cfg.model_config, base)
    t = cfg.train
    mcfg = ModelConfig.from_hf(hf, dtype=t.model.dtype, param_dtype=t.model.param_dtype,
                               remat=t.model.remat)
    fam, chip, _ = parse_accelerator(cfg.target.accelerator)
    devs, where, platform = target_devices(cfg.target)
    mesh = make_mesh(t.mesh, devs)
    plan: dict[str, Any] = {
        "model": cfg.model_config, "params": mcfg.num_params(), "accelerator": cfg.target.accelerator,
        "chip": dataclasses.asdict(chip), "devices": len(devs), "compiled_for": where,
        "platform": platform, "mesh": dict(mesh.shape), "notes": cfg.notes,
    }
    plan["train"] = plan_train(cfg, mcfg, mesh)
    if cfg.sample.enabled:
        smesh = make_mesh(cfg.sample.mesh, devs) if cfg.sample.mesh else mesh
        plan["sample"] = plan_sampler(cfg, mcfg, smesh)
        plan["sample"]["mesh"] = dict(smesh.shape)
    if t.objective.name == "policy" and cfg.sample.enabled:
        plan["online"] = colocated(plan, chip.hbm_bytes, t.objective.beta)
    plan["estimate"] = estimate(plan, chip, len(devs), dict(mesh.shape))
    return plan
