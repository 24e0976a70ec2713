"""`jaxevo eval --reward module:fn`: the mean of the user's reward function over the completions
the eval made, each row's reward equal to a direct call."""

import json
import subprocess
import sys

import pytest

REWARD = '''
def length(prompts, completions, answer, **columns):
    return [float(len(c)) + 0 * len(a) for c, a in zip(completions, answer)]
'''


def test_eval_reports_a_user_reward(tmp_path, tiny_model):
    (tmp_path / "my_reward.py").write_text(REWARD)
    data = tmp_path / "items.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"What is {i}+1?", "answer": str(i + 1)}) for i in range(3)))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "jaxevo.cli", "eval", "--model", tiny_model, "--data", str(data),
                        "--max-new-tokens", "6", "--out", str(out), "--dtype", "float32",
                        "--plugin", str(tmp_path / "my_reward.py"), "--reward", "my_reward:length"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [x["reward"] for x in rows] == [float(len(x["completion"])) for x in rows]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reward/mean"] == pytest.approx(sum(x["reward"] for x in rows) / 3)
    assert summary["rewards"]["my_reward:length"]["weight"] == 1.0
    assert f"mean reward {summary['reward/mean']}" in r.stdout
