"""benchmarks/mfu.py on a CPU with its tiny preset: timings, the FLOPs formula and the MFU it reports;
benchmarks/gpu_check.sh and scripts/*.sh are shellcheck clean.

The FLOPs are checked against a count written out by hand for the tiny architecture (Llama, hidden
64, intermediate 128, 2 layers, 4 heads of 16, 2 KV heads, vocab 256, tied), not against the
helper the script uses.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests._require import require_executable
from tests.conftest import subprocess_env
from tests.sampling.helpers import tiny_model_dir

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "benchmarks" / "mfu.py"

# Per layer: q and o 64x64 each, k and v 64x32 each, gate/up/down 64x128 each, two norms of 64.
LAYER = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64  # 36,992
PARAMS = 256 * 64 + 2 * LAYER + 64  # tied embedding once + final norm: 90,432
# The lookup is free but the (tied) LM head is a 64x256 matmul: matmul params = PARAMS.
MATMUL = PARAMS - 256 * 64 + 64 * 256
# Attention per layer and row, forward: QK^T and PV, each 2 * T^2 * heads * head_dim FLOPs.
ATTN_FWD_PER_ROW = 2 * 2 * 32 * 32 * 4 * 16 * 2


def load_mfu(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # mfu.py imports its sibling _flops
    spec = importlib.util.spec_from_file_location("bench_mfu", SCRIPT)
    mfu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mfu)
    return mfu


def run_mfu(tmp_path, *args) -> dict:
    out = tmp_path / "mfu.json"
    env = subprocess_env()
    p = subprocess.run([sys.executable, str(SCRIPT), "--preset", "tiny", "--length", "32",
                        "--steps", "2", "--out", str(out), *args],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "MFU" in p.stdout.splitlines()[-1]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_sft_measured_peak(tmp_path):
    r = run_mfu(tmp_path, "--batch", "2", "--peak-seconds", "0.1")
    assert r["params"] == PARAMS == 90_432
    rows, tokens = 2, 2 * 32
    assert r["rows"] == rows and len(r["step_times"]) == 3 and len(r["losses"]) == 3
    assert r["flops_per_step"] == 6 * MATMUL * tokens + 3 * ATTN_FWD_PER_ROW * rows == 37_871_616
    s = r["s_per_step"]
    assert 0 < s <= r["median_s_per_step"]
    assert r["tokens_per_s"] == pytest.approx(tokens / s, rel=1e-12)
    # No spec peak for a CPU: the best bf16 dot measured on train-step shapes.
    assert r["peak_source"].startswith("measured") and r["peak_tflops"] > 0
    assert r["mfu"] == pytest.approx(r["flops_per_step"] / s / (r["peak_tflops"] * 1e12), rel=1e-12)
    assert r["peak_memory_mb"] > 0 and r["peak_memory_source"] == "process peak RSS"
    assert all(l == l and l > 0 for l in r["losses"])  # finite positive NLL (NaN != NaN)


@pytest.mark.slow
def test_dpo_given_peak(tmp_path):
    r = run_mfu(tmp_path, "--batch", "1", "--objective", "dpo", "--peak-tflops", "0.5")
    rows = 2  # one pair: chosen and rejected rows
    assert r["rows"] == rows
    assert r["flops_per_step"] == 6 * MATMUL * rows * 32 + 3 * ATTN_FWD_PER_ROW * rows
    assert r["peak_source"] == "given (--peak-tflops)" and r["peak_tflops"] == 0.5
    assert r["mfu"] == pytest.approx(r["flops_per_step"] / r["s_per_step"] / 0.5e12, rel=1e-12)


def test_spec_peaks_by_device_kind(monkeypatch):
    mfu = load_mfu(monkeypatch)
    assert mfu.spec_peak_tflops("NVIDIA H200") == 989.0
    assert mfu.spec_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert mfu.spec_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert mfu.spec_peak_tflops("cpu") is None and mfu.spec_peak_tflops("NVIDIA L4") is None


def test_llama_1b_preset_is_llama_3_2_1b(monkeypatch):
    mfu = load_mfu(monkeypatch)
    args = type("A", (), dict(preset="llama-1b", layers=None, hidden=None, intermediate=None,
                              dtype="bfloat16", remat="none"))
    cfg = mfu.model_config(args)
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
            cfg.intermediate_size, cfg.vocab_size, cfg.tie_word_embeddings) == (
        2048, 16, 32, 8, 64, 8192, 128256, True)
    # Llama-3.2-1B's published count: embedding 128256*2048 + 16 layers of (q, o 2048^2; k, v
    # 2048*512; MLP 3*2048*8192; 2 norms) + final norm.
    assert cfg.num_params() == 128256 * 2048 + 16 * (2 * 2048**2 + 2 * 2048 * 512 + 3 * 2048 * 8192
                                                     + 2 * 2048) + 2048 == 1_235_814_400
    assert cfg.dtype == "bfloat16" and cfg.param_dtype == "float32"


def test_shell_scripts_shellcheck_clean():
    """benchmarks/gpu_check.sh and the README's scripts (demo.sh, test.sh, setup.sh)."""
    shellcheck = require_executable("shellcheck")  # skipped without it, failed in CI
    scripts = ["benchmarks/gpu_check.sh", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scripts").glob("*.sh"))]
    p = subprocess.run([shellcheck, "-x", *scripts], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.heavy  # four processes (jaxevo twice, transformers, the model's conversion): about a minute
@pytest.mark.torch
def test_generate_e2e_runs_both_sides_on_the_same_work(tmp_path):
    """benchmarks/generate_e2e.py on a tiny model: every arm runs, and greedy f32 jaxevo and greedy
    f32 transformers generate the same number of tokens (the same answers: the sampler's parity)."""
    pytest.importorskip("torch")
    model = tiny_model_dir(tmp_path)
    out = tmp_path / "e2e.json"
    env = subprocess_env()
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generate_e2e.py"), "--model", str(model),
                        "--prompts", "6", "--new-tokens", "8", "--batch-size", "4", "--jaxevo-dtype", "float32",
                        "--skip", "transformers-bf16", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    arms = json.loads(out.read_text())["arms"]
    assert set(arms) == {"jaxevo, first run (empty compilation cache)", "jaxevo, later runs (compilation cache)",
                         "transformers f32"}
    tokens = {a["tokens"] for a in arms.values()}
    assert len(tokens) == 1 and 6 <= tokens.pop() <= 6 * 8
    assert all(a["tok_s"] == pytest.approx(a["tokens"] / a["wall_s"]) for a in arms.values())
    assert "x the best transformers arm" in p.stdout


@pytest.mark.slow
@pytest.mark.torch
def test_matmul_benchmark_quick(tmp_path):
    """benchmarks/matmul.py --quick: a GFLOP/s figure for every XLA path and recipe (no error
    string: each path's compiler option is one this jaxlib takes). Without torch: its bf16 matmul
    runs at ~1 GFLOP/s on a CPU without bf16 instructions, where this test took 127 s with it."""
    out = tmp_path / "m.json"
    env = subprocess_env()
    p = subprocess.run([sys.executable, "matmul.py", "--quick", "--no-torch", "--iters", "1", "--repeats", "1",
                        "--out", str(out)],
                       cwd=ROOT / "benchmarks", env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * 3
    for r in rows:
        for path in ("xla default", "xla ynnpack", "xla ynnpack individual", "xla no library",
                     "xla xnnpack", "xla onednn"):
            assert isinstance(r[path], float) and r[path] > 0, (r["shape"], r["recipe"], path, r[path])
        assert "torch" not in r


@pytest.mark.slow
@pytest.mark.torch
def test_logprobs_benchmark_small(tmp_path):
    """benchmarks/logprobs.py on two short rows: every arm times (the script itself checks the
    jaxevo log-probs against the full-logits ones), and the batch is laid out as rollout_batch's.
    In f32: torch's bf16 matmuls crawl on a CPU without bf16 instructions."""
    out = tmp_path / "l.json"
    env = subprocess_env()
    p = subprocess.run([sys.executable, "logprobs.py", "--rows", "2", "--prompt", "20", "--completion", "16",
                        "--repeat", "1", "--dtype", "float32", "--out", str(out)],
                       cwd=ROOT / "benchmarks", env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert len(rec["ms"]) == 3 and all(v > 0 for v in rec["ms"].values())
    assert rec["T"] == 32 * -(-(max(e for _, e in rec["spans"]) + 1) // 32)


@pytest.mark.slow
def test_update_layouts_benchmark_tiny(tmp_path):
    """benchmarks/update_layouts.py on a tiny model: every layout steps, with the rows and lengths
    of its layout, and the first loss is the same in all (with the ratio at 1 it depends only on
    the advantages and the completion tokens, not on the layout). A vocabulary of 128, not
    SmolLM2's 49,152: the steps' LM head was most of the test's time."""
    tiny_model = str(tiny_model_dir(tmp_path))
    out = tmp_path / "u.json"
    env = subprocess_env()
    p = subprocess.run([sys.executable, "update_layouts.py", "--model", tiny_model, "--steps", "1",
                        "--share", "1", "4", "8", "--flat", "1", "--out", str(out)],
                       cwd=ROOT / "benchmarks", env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    arms = json.loads(out.read_text())["arms"]
    assert [arms[k]["shape"][0] for k in ("1", "4", "8")] == [32, 8, 4]
    assert all(len(a["times"]) == 1 and a["times"][0] > 0 for a in arms.values())
    assert arms["4"]["tokens"] < arms["1"]["tokens"]
    for k in ("4", "8"):
        assert arms[k]["loss"] == pytest.approx(arms["1"]["loss"], rel=1e-6)
    assert "x share_prompt=1" in p.stdout
