"""`jaxevo generate` end to end on a tiny model directory."""

from __future__ import annotations

import json
import re

import pytest

from jaxevo.cli import main
from tests.sampling.helpers import tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("m"), "qwen2")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_generate_writes_completions_and_keeps_fields(tmp_path, model_dir, capsys):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [{"prompt": "What is 2+2?", "id": 7, "answer": "4"},
                 {"prompt": [{"role": "user", "content": "hi"}], "id": 8}])
    rc = main(["generate", "--model", str(model_dir), "--prompts", str(src), "--out", str(dst),
               "--max-new-tokens", "5", "--temperature", "0.8", "--top-p", "0.9", "--top-k", "20",
               "--n", "3", "--seed", "1", "--dtype", "float32"])
    assert rc == 0
    lines = [json.loads(x) for x in dst.read_text().splitlines()]
    assert [r["id"] for r in lines] == [7, 8] and lines[0]["answer"] == "4"
    # The summary names the CPU path it decoded on (measured once per machine, or cached).
    assert re.search(r" tok/s; CPU path (xla|ynnpack):float32, scores (dot|reduce) \((measured|cached)\)\)$",
                     capsys.readouterr().err, re.M)
    for r in lines:
        assert len(r["completions"]) == 3 and all(isinstance(c, str) for c in r["completions"])
        assert len(r["logprobs"]) == 3 and all(lp <= 0 for lp in r["logprobs"])
    # same seed, same output
    dst2 = tmp_path / "out2.jsonl"
    main(["generate", "--model", str(model_dir), "--prompts", str(src), "--out", str(dst2),
          "--max-new-tokens", "5", "--temperature", "0.8", "--top-p", "0.9", "--top-k", "20",
          "--n", "3", "--seed", "1", "--dtype", "float32"])
    assert dst2.read_text() == dst.read_text()


def test_generate_clear_errors(tmp_path, model_dir, capsys):
    dst = tmp_path / "out.jsonl"
    rc = main(["generate", "--model", str(model_dir), "--prompts", str(tmp_path / "missing.jsonl"),
               "--out", str(dst)])
    err = capsys.readouterr().err
    assert rc == 2 and "file not found" in err and "missing.jsonl" in err
    bad = tmp_path / "bad.jsonl"
    _write(bad, [{"prompt": "ok"}, {"question": "no prompt here"}])
    rc = main(["generate", "--model", str(model_dir), "--prompts", str(bad), "--out", str(dst)])
    err = capsys.readouterr().err
    assert rc == 2 and "bad.jsonl:2" in err and 'no "prompt" field' in err
    assert not dst.exists()


def test_generate_lanes_write_what_one_lane_writes(tmp_path, model_dir, capsys):
    src = tmp_path / "in.jsonl"
    _write(src, [{"prompt": f"What is {i}+{i}?"} for i in range(5)])
    args = ["generate", "--model", str(model_dir), "--prompts", str(src), "--max-new-tokens", "6",
            "--temperature", "0.8", "--n", "2", "--seed", "4", "--dtype", "float32"]
    # 10 rows: two lanes of batches of 2 (--batch-size 4) write what one lane of batches of 2 writes
    assert main(args + ["--out", str(tmp_path / "two.jsonl"), "--batch-size", "4", "--lanes", "2"]) == 0
    assert main(args + ["--out", str(tmp_path / "one.jsonl"), "--batch-size", "2", "--lanes", "1"]) == 0
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()
    rc = main(args + ["--out", str(tmp_path / "x.jsonl"), "--lanes", "2", "--continuous"])
    err = capsys.readouterr().err
    assert rc == 2 and "lanes=2" in err and "continuous=False" in err and not (tmp_path / "x.jsonl").exists()
