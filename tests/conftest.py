"""Shared fixtures: tiny model configs of every supported family, made without torch."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo import cpu_store
from jaxevo.models.config import ModelConfig
from jaxevo.runtime import enable_compilation_cache

# Same programs recompile across tests (every train phase builds its step anew): cache them, in a
# folder of this run's own (shared with its xdist workers and the subprocesses it starts, which
# inherit the variable) unless JAXEVO_XLA_CACHE names one: a machine's long-lived cache can hold
# entries this run must not load (one such entry aborted a run in `deserialize_executable`).
_OWN_CACHE = None
if not os.environ.get("JAXEVO_XLA_CACHE"):
    _OWN_CACHE = os.environ["JAXEVO_XLA_CACHE"] = tempfile.mkdtemp(prefix="jaxevo-test-xla-")
enable_compilation_cache()
# Most of the suite's time is XLA compiling small programs, each once. JAX's switch for that
# (LLVM at -O0 without its expensive passes; the HLO passes and the dot libraries stay those of a
# user's run) takes a third off the suite. The subprocesses the tests start inherit it. Some
# modules compile as a user's run does (`_compile_mode`); JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs the
# whole suite so.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# The train step's dot path pinned to jaxlib's default (subprocesses inherit it), not measured:
# the probe keeps YNNPACK's dot fusions where they time 5% faster, and on a CPU where the tiny
# models' steps sit near that margin one run of the suite compiled them with the fusions and the
# next without. The bit-for-bit tests between two train programs (token weights of 1 against none,
# a reference forward against precomputed log-probs) hold on the default path, not on the fusions,
# which group the two programs' products differently (session 50). The probe's own tests unset it
# (`cpu_store_file`); tests/train/test_cpu_dots.py trains on either path.
os.environ.setdefault("JAXEVO_TRAIN_CPU_PATH", "xla")
FAST_COMPILE = os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].lower() in ("1", "true", "yes", "on")
jax.config.update("jax_disable_most_optimizations", FAST_COMPILE)
from jaxevo.models.transformer import Transformer, causal_mask, positions_from_valid
from tests.model_params import random_params  # noqa: E402,F401  (tests import it from here)

COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rms_norm_eps=1e-6)
# HF config.json dicts of tiny random models, one per supported family.
TINY_HF = {
    "llama3": dict(COMMON, model_type="llama", architectures=["LlamaForCausalLM"],
                   rope_theta=500000.0, tie_word_embeddings=False,
                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "mistral": dict(COMMON, model_type="mistral", architectures=["MistralForCausalLM"],
                    sliding_window=None, tie_word_embeddings=False),
    "qwen2": dict(COMMON, model_type="qwen2", architectures=["Qwen2ForCausalLM"],
                  tie_word_embeddings=True),
    # Mistral with a window shorter than the golden prompts (12 tokens).
    "mistral-sw": dict(COMMON, model_type="mistral", architectures=["MistralForCausalLM"],
                       sliding_window=5, tie_word_embeddings=False),
    # Llama 3.2: tied embeddings and llama3 RoPE scaling.
    "llama32": dict(COMMON, model_type="llama", architectures=["LlamaForCausalLM"],
                    rope_theta=500000.0, tie_word_embeddings=True,
                    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
    # Qwen3: q/k norm, explicit head_dim (not hidden / heads), untied, GQA.
    "qwen3": dict(COMMON, model_type="qwen3", architectures=["Qwen3ForCausalLM"], head_dim=24,
                  rope_theta=1000000.0, tie_word_embeddings=False),
    # Gemma 3 text: MQA, local layers with a window of 4 and their own RoPE base interleaved with a
    # global one (linear RoPE scaling), query_pre_attn_scalar != head_dim, final soft-capping on.
    "gemma3": dict(COMMON, model_type="gemma3_text", architectures=["Gemma3ForCausalLM"],
                   num_hidden_layers=3, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=24,
                   layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                   sliding_window=4, rope_theta=1000000.0, rope_local_base_freq=10000.0,
                   rope_scaling={"rope_type": "linear", "factor": 8.0}, final_logit_softcapping=0.5,
                   hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
    # Phi-3: fused qkv_proj / gate_up_proj; longrope whose original context (8) the golden prompts
    # pass, so the long factors and the attention factor are both exercised; a window of 6 on
    # every layer, with that RoPE.
    "phi3": dict(COMMON, model_type="phi3", architectures=["Phi3ForCausalLM"], num_key_value_heads=4,
                 sliding_window=6,
                 max_position_embeddings=256, original_max_position_embeddings=8,
                 rope_scaling={"type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0, 4.0],
                               "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 14.0, 20.0]},
                 tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0),
}


def tiny_cfg(family: str = "llama3", **runtime) -> ModelConfig:
    return ModelConfig.from_hf(TINY_HF[family], **runtime)


def forward(cfg, params, tokens, valid=None):
    tokens = jnp.asarray(tokens)
    valid = jnp.ones(tokens.shape, jnp.int32) if valid is None else jnp.asarray(valid)
    logits, _ = _apply(cfg)({"params": params}, tokens, positions_from_valid(valid), causal_mask(valid))
    return np.asarray(logits)


@functools.lru_cache(maxsize=None)
def _apply(cfg: ModelConfig):
    """cfg's jitted forward, one per process (a new jit each call would trace and compile anew)."""
    return jax.jit(Transformer(cfg).apply)


# XLA:CPU's fusion emitters (MLIR, on by default) compile a small program more slowly than its
# older LLVM ones: the suite's programs are small and mostly compiled once each, so its processes
# use the older ones (docs/benchmarks.md, "The older fusion emitters in the suite's compiles"). A
# user's run keeps the default: there the older emitters made the train step slower. XLA reads
# XLA_FLAGS once per process, so this is set for the whole run, before anything compiles, and not
# per module; a run that selects the opt-in markers (`-m heavy`, `-m real_model`) keeps the default.
OLD_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
_USER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "").replace(OLD_EMITTERS, "").strip()


def _xla_takes(flag: str) -> bool:
    """Whether this jaxlib knows the flag (an unknown one in XLA_FLAGS ends the process)."""
    env = dict(os.environ, XLA_FLAGS=f"{_USER_XLA_FLAGS} {flag}".strip(), JAX_PLATFORMS="cpu")
    probe = "import jax.numpy as jnp; jnp.ones(2).block_until_ready()"
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode == 0


_SUITE_XLA_FLAGS = None  # XLA_FLAGS with the older emitters, when this process compiles with them


def pytest_configure(config):
    """The older fusion emitters for this run and the processes it starts (xdist's workers inherit
    the variable from the process that starts the run, which checks the flag once)."""
    global _SUITE_XLA_FLAGS
    markexpr = config.option.markexpr.replace("not heavy", "").replace("not real_model", "")
    opt_in = "heavy" in markexpr or "real_model" in markexpr
    inherited = OLD_EMITTERS in os.environ.get("XLA_FLAGS", "")
    if not inherited and FAST_COMPILE and not opt_in and "xla_cpu_use_fusion_emitters" not in _USER_XLA_FLAGS \
            and _xla_takes(OLD_EMITTERS):
        os.environ["XLA_FLAGS"] = f"{_USER_XLA_FLAGS} {OLD_EMITTERS}".strip()
    if OLD_EMITTERS in os.environ.get("XLA_FLAGS", ""):
        _SUITE_XLA_FLAGS = os.environ["XLA_FLAGS"]


def _memory_maps() -> int | None:
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux: no count, so always release
        return None


def pytest_unconfigure(config):
    """The process that made this run's cache folder removes it (an xdist worker inherits the
    folder and leaves it to the controller, which ends last)."""
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


# Compiled as a user's run is: bit-for-bit equalities of two different programs (which hold as the
# compiler's default optimizations build them), and the opt-in tests of minutes, where compiling is
# a small share.
OPTIMIZED_COMPILE = ("optimized_compile", "heavy", "real_model")


@pytest.fixture(autouse=True, scope="module")
def _compile_mode(request):
    """A module, and the processes its tests start, compile with the compiler's default
    optimizations when a test of it selected in this run carries one of OPTIMIZED_COMPILE's markers."""
    mine = (i for i in request.session.items if getattr(i, "module", None) is request.module)
    fast = FAST_COMPILE and not any(i.get_closest_marker(m) for i in mine for m in OPTIMIZED_COMPILE)
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1" if fast else "0"  # for its subprocesses
    if _SUITE_XLA_FLAGS is not None:  # its subprocesses compile as a user's run, or as the suite
        os.environ["XLA_FLAGS"] = _SUITE_XLA_FLAGS if fast else _USER_XLA_FLAGS
    if jax.config.values["jax_disable_most_optimizations"] != fast:
        jax.clear_caches()  # a compiled program is reused whatever the switch: drop them
        jax.config.update("jax_disable_most_optimizations", fast)
    yield


ROOT = Path(__file__).resolve().parents[1]
_DEVICE_COUNT = re.compile(r"--xla_force_host_platform_device_count=\S*")


def subprocess_env(devices: int | None = None, **extra: str) -> dict[str, str]:
    """The environment of a process a test starts: this one's, so it compiles as the calling module
    does (`_compile_mode`: the switch and the XLA flags), on the CPU, with the repository
    importable, `devices` host CPU devices (None: as many as the process asks for itself) and
    `extra` on top."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **extra)
    flags = _DEVICE_COUNT.sub("", env.pop("XLA_FLAGS", "")).split()
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    return env


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after a test module once the process holds many memory maps:
    each program keeps its machine code mapped, and one process running the whole suite reached the
    kernel's limit (vm.max_map_count, 65530), where XLA crashed with SIGSEGV while compiling or
    serialising. Only then, because recompiling what later modules share costs minutes."""
    yield
    n = _memory_maps()
    if n is None or n > 20_000:
        jax.clear_caches()


@pytest.fixture
def cpu_store_file(tmp_path, monkeypatch):
    """An empty jaxevo cache, nothing remembered of the per-machine measurements
    (`jaxevo.cpu_store`) and no choice set by the environment; yields the store's path."""
    monkeypatch.setenv("JAXEVO_CACHE", str(tmp_path))
    for env in ("JAXEVO_CPU_PATH", "JAXEVO_TRAIN_CPU_PATH"):
        monkeypatch.delenv(env, raising=False)
    cpu_store.forget()
    yield tmp_path / "cpu_paths.json"
    cpu_store.forget()


@pytest.fixture(params=sorted(TINY_HF))
def family(request):
    return request.param


def numpy_hf_weights(cfg: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """A transformers-named state dict drawn from numpy's RandomState (stable across versions,
    unlike framework RNGs), so golden values made from it stay valid."""
    from jaxevo.weights.convert import abstract_params, params_to_hf

    rng = np.random.RandomState(seed)
    shapes = abstract_params(cfg)

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            return 1.0 + rng.normal(0, 0.1, s.shape).astype(np.float32)
        return rng.normal(0, 0.05 if "bias" in name else 0.02, s.shape).astype(np.float32)
    params = jax.tree_util.tree_map_with_path(draw, shapes)
    return dict(params_to_hf(params, cfg))


GOLDEN_TOKENS = np.array([[1, 5, 9, 33, 2, 17, 88, 101, 127, 0, 64, 3],
                          [0, 0, 0, 0, 7, 7, 8, 9, 120, 45, 44, 43]], np.int32)
GOLDEN_VALID = np.array([[1] * 12, [0] * 4 + [1] * 8], np.int32)  # row 1 is left-padded


@pytest.fixture(scope="module")
def gguf_path():
    """The embedded SmolLM2 GGUF. Skips only when its package is not installed; any other problem
    (an installed package without its file, a wrong version) fails the test."""
    import importlib.util

    from jaxevo.weights import embedded

    model = embedded.EMBEDDED["smollm2-135m-instruct"]
    if importlib.util.find_spec(model.package) is None:
        pytest.skip(f"the embedded model package is not installed: {model.install_command}")
    return embedded.resolve_embedded("smollm2-135m-instruct")


from tests.evolve.conftest import tiny_model  # noqa: E402,F401  (shared by tests/test_evaluate.py)
