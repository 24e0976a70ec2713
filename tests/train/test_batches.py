"""Tokenising JSONL into views, truncation, packing, batch order (no model, no jit)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxevo.errors import ConfigError
from jaxevo.train.batches import BatchStream, format_context, pack, read_records, tokenize_views
from jaxevo.train.objectives import get_objective
from tests.train.helpers import char_tokenizer, pref_records, sft_records, write_jsonl


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def test_sft_layout(tok):
    data = tokenize_views([{"prompt": "ab", "response": "cd"}], get_objective("sft").views, tok,
                          max_length=16, chat_template=False, pad_to_multiple=8)
    enc = lambda s: tok.encode(s, add_special_tokens=False)
    seq = enc("ab") + enc("cd") + [tok.eos_token_id]
    a = data.arrays
    assert data.length == 8
    np.testing.assert_array_equal(a["response/tokens"][0], seq + [0] * 3)
    # hidden[t] predicts labels[t]: only the response tokens (and eos) are trained
    np.testing.assert_array_equal(a["response/labels"][0], [-1] + enc("cd") + [tok.eos_token_id] + [-1] * 4)
    np.testing.assert_array_equal(a["response/segments"][0], [1] * 5 + [0] * 3)
    np.testing.assert_array_equal(a["response/positions"][0], [0, 1, 2, 3, 4, 0, 0, 0])


def test_pairs_share_prompt_truncation(tok):
    rows = [{"prompt": "x" * 20, "chosen": "short", "rejected": "much longer answer"}]
    views = get_objective("preference").views
    data = tokenize_views(rows, views, tok, max_length=24, chat_template=False, pad_to_multiple=1)
    assert data.stats["prompt_truncated"] == 1 and data.stats["response_truncated"] == 0
    a = data.arrays
    # the prompt is cut from the left by the same amount in both views
    n_prompt = [int((a[f"{v}/labels"][0] < 0).sum() - (a[f"{v}/segments"][0] == 0).sum()) for v in ("chosen", "rejected")]
    assert n_prompt[0] == n_prompt[1] == 24 - len("much longer answer") - 1
    assert (a["rejected/segments"][0] > 0).sum() == 24
    with pytest.raises(ConfigError, match=r"record 0 .*> data.max_length=24.*truncation=left"):
        tokenize_views(rows, views, tok, max_length=24, truncation="error", chat_template=False)
    # a response longer than max_length is cut on the right, keeping one prompt token
    data = tokenize_views([{"prompt": "p", "response": "r" * 40}], get_objective("sft").views, tok,
                          max_length=16, chat_template=False, pad_to_multiple=1)
    assert data.stats["response_truncated"] == 1
    assert (data.arrays["response/labels"][0] >= 0).sum() == 15


def test_chat_template_applied():
    class T:
        chat_template = "x"

        def apply_chat_template(self, msgs, add_generation_prompt, tokenize):
            return "<" + "|".join(m["content"] for m in msgs) + ">"

    assert format_context(T(), "hi", True, "sys") == "<sys|hi>"
    assert format_context(T(), "hi", False, None) == "hi"


def test_packing(tok):
    data = tokenize_views(sft_records(8), get_objective("sft").views, tok, max_length=32,
                          chat_template=False, pad_to_multiple=8)
    packed = pack(data, 32, 8)
    a = packed.arrays
    assert packed.num_examples < data.num_examples
    # every trained label survives, once
    assert (a["response/labels"] >= 0).sum() == (data.arrays["response/labels"] >= 0).sum()
    for row in range(packed.num_examples):
        seg, pos = a["response/segments"][row], a["response/positions"][row]
        for s in set(seg[seg > 0].tolist()):
            np.testing.assert_array_equal(pos[seg == s], np.arange((seg == s).sum()))


def test_stream_is_a_function_of_step(tok):
    data = tokenize_views(sft_records(10), get_objective("sft").views, tok, max_length=32,
                          chat_template=False, pad_to_multiple=8)
    s = BatchStream(data, 4, seed=3)
    first = np.concatenate([s.indices(i) for i in range(5)])  # 20 = two epochs of 10
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))
    np.testing.assert_array_equal(BatchStream(data, 4, seed=3).indices(3), s.indices(3))
    b = s.batch(0)
    assert b.size == 4 and b.length % 8 == 0 and b.length <= data.length


def test_read_records_errors(tmp_path):
    with pytest.raises(ConfigError, match="data file not found"):
        read_records(tmp_path / "none.jsonl", ("prompt", "response"))
    p = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "answer": "b"}])
    with pytest.raises(ConfigError, match=r"line 1: missing or non-string field\(s\) \['response'\]"):
        read_records(p, ("prompt", "response"))
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"\n')
    with pytest.raises(ConfigError, match="line 1: invalid JSON"):
        read_records(tmp_path / "bad.jsonl", ("prompt",))
    p = write_jsonl(tmp_path / "q.jsonl", [{"question": "a", "response": "b"}])
    assert read_records(p, ("prompt", "response"), prompt_field="question")[0]["prompt"] == "a"
    assert len(read_records(write_jsonl(tmp_path / "p.jsonl", pref_records(5)),
                            ("prompt", "chosen", "rejected"), limit=3)) == 3
