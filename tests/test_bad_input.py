"""Bad input and unwritable outputs end with one clear line and exit 2, never a traceback, and an
output problem is found before any work is done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jaxevo.cli import main
from jaxevo.errors import ConfigError
from jaxevo.outputs import OutputError, check_writable, storage_cause
from jaxevo.sampling import Sampler
from jaxevo.train.batches import read_records
from tests.sampling.helpers import tiny_model_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("m"), "qwen2")


def _prompts(path: Path, *lines: bytes) -> Path:
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    return path


def _no_sampling(monkeypatch):
    """Fail the test if the command starts loading a model (the check came too late)."""
    from jaxevo.sampling import api

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the output was checked")
    monkeypatch.setattr(api.Sampler, "load", classmethod(refuse))


def test_non_utf8_jsonl_names_file_and_line(tmp_path, capsys):
    bad = _prompts(tmp_path / "p.jsonl", b'{"prompt": "ok"}', b'{"prompt": "caf\xe9"}')
    rc = main(["generate", "--model", "unused", "--prompts", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{bad} line 2: not UTF-8 text (byte 0xe9 at column 16)" in err
    data = _prompts(tmp_path / "d.jsonl", b'{"prompt": "a", "response": "\xff"}')
    with pytest.raises(ConfigError, match=r"d.jsonl line 1: not UTF-8"):
        read_records(data, ("prompt", "response"))


def test_truncated_safetensors_names_the_file(tmp_path, model_dir, capsys):
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(model_dir, cut)
    f = cut / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    rc = main(["generate", "--model", str(cut), "--prompts",
               str(_prompts(tmp_path / "p.jsonl", b'{"prompt": "hi"}')), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{f}: truncated safetensors file" in err and "Traceback" not in err


def test_truncated_manifest_is_a_clean_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text('{"config_hash": "abc", "rou')
    rc = main(["evolve", "--config", str(ROOT / "configs" / "demo.yaml"), f"run.dir={run}"])
    err = capsys.readouterr().err
    assert rc == 2 and "manifest.json cannot be read (JSONDecodeError" in err
    assert "the stage folders are intact" in err


def test_generate_checks_out_before_sampling(tmp_path, monkeypatch, capsys):
    _no_sampling(monkeypatch)
    prompts = str(_prompts(tmp_path / "p.jsonl", b'{"prompt": "hi"}'))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out, why in ((blocker / "out.jsonl", f"{blocker} is a file, not a directory"), (tmp_path, "it is a directory")):
        rc = main(["generate", "--model", "m", "--prompts", prompts, "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and f"cannot write {out}" in err and why in err, err
    assert blocker.read_text() == "x"


def test_eval_and_export_check_out_before_loading(tmp_path, monkeypatch, capsys):
    _no_sampling(monkeypatch)
    blocker = tmp_path / "f"
    blocker.write_text("x")
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps({"prompt": "1+1?", "answer": "2"}) + "\n")
    rc = main(["eval", "--model", "m", "--data", str(data), "--out", str(blocker / "e")])
    assert rc == 2 and f"cannot write {blocker / 'e'}" in capsys.readouterr().err
    rc = main(["export", "--model", "no-such-model", "--out", str(blocker / "x")])
    assert rc == 2 and f"cannot write {blocker / 'x'}" in capsys.readouterr().err


def test_storage_errors_are_recognised_through_wrappers(tmp_path):
    import errno

    inner = OSError(errno.ENOSPC, "No space left on device", "/d/x")
    try:
        try:
            raise inner
        except OSError as e:
            raise ValueError("TensorStore: write failed") from e
    except ValueError as wrapped:
        assert storage_cause(wrapped) == "no space left on device"
    assert storage_cause(RuntimeError("INTERNAL: ... Read-only file system ...")) == \
        "read-only file system"
    assert storage_cause(ValueError("shape mismatch")) is None
    assert check_writable(tmp_path / "new" / "f.jsonl").name == "f.jsonl"
    with pytest.raises(OutputError, match="it is a directory"):
        check_writable("/tmp")


def test_prompt_length_messages_name_the_flags(tmp_path, model_dir, capsys):
    prompts = str(_prompts(tmp_path / "p.jsonl", json.dumps({"prompt": "x" * 200}).encode()))
    base = ["generate", "--model", str(model_dir), "--prompts", prompts, "--out",
            str(tmp_path / "o.jsonl"), "--dtype", "float32", "--max-length", "64"]
    assert main([*base, "--max-new-tokens", "5000"]) == 2
    err = capsys.readouterr().err
    assert "max_new_tokens 5000 leaves no room for a prompt in max_length 64" in err
    assert "truncate" not in err  # truncating cannot help here
    assert main([*base, "--max-new-tokens", "8"]) == 2
    err = capsys.readouterr().err
    assert "but only 56 fit" in err and "(--truncate; truncate=True in the API)" in err


def test_cli_turns_a_storage_error_into_one_line(tmp_path, monkeypatch, capsys):
    """A full disk met mid-command (here: raised where generate reads its prompts) ends with one
    line naming the path, exit 2; any other OSError stays a traceback (a bug to see)."""
    import errno

    from jaxevo.commands import generate

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.jsonl.tmp")
    monkeypatch.setattr(generate, "read_prompts", full)
    args = ["generate", "--model", "m", "--prompts", "p", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == ("jaxevo generate: error: cannot write "
                                               "/data/out.jsonl.tmp: no space left on device")

    def other(path):
        raise OSError(errno.EIO, "Input/output error", "/dev/x")
    monkeypatch.setattr(generate, "read_prompts", other)
    with pytest.raises(OSError, match="Input/output error"):
        main(args)


def test_eval_into_a_folder_another_process_writes_is_refused(tmp_path, monkeypatch, capsys):
    """Two `jaxevo eval` into one --out folder: the second is refused before it loads a model,
    naming the holder."""
    import os
    import subprocess
    import sys

    _no_sampling(monkeypatch)
    out = tmp_path / "e"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from jaxevo.dirlock import DirLock; "
         f"DirLock({str(out)!r}, 'jaxevo eval').acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        data = tmp_path / "items.jsonl"
        data.write_text(json.dumps({"prompt": "1+1?", "answer": "2"}) + "\n")
        rc = main(["eval", "--model", "m", "--data", str(data), "--out", str(out)])
        assert rc == 2 and f"PID {holder.pid} on host" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_row_counts_must_be_positive(tmp_path, capsys):
    """A zero batch size is a usage error naming the flag (it crashed in the sampler before)."""
    for command in (["generate", "--model", "m", "--prompts", "p.jsonl", "--out", str(tmp_path / "o.jsonl")],
                    ["eval", "--model", "m", "--task", "arithmetic"]):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--batch-size", "0"])
        assert exit_.value.code == 2
        assert "argument --batch-size: must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="max_batch=0"):
        Sampler(None, None, max_batch=0)
