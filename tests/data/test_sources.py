"""Every source type behind `load_source`: JSONL, HF datasets from local files, TFDS
array_record (built here, no TensorFlow), field mapping, sharding and error messages."""

import json
import sys

import numpy as np
import pytest

from jaxevo.data.base import SOURCES, Source, register_source
from jaxevo.data.sources import load_source, source_types
from jaxevo.errors import ConfigError
from jaxevo.registry import RegistryError

ROWS = [{"question": f"What is {i} + {i}?", "answer": 2 * i, "subject": "math" if i % 2 else "sums"}
        for i in range(7)]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _check_rows(source, n=len(ROWS)):
    records = list(source)
    assert len(records) == len(source) == n
    assert [r["prompt"] for r in records] == [r["question"] for r in ROWS[:n]]
    assert [r["answer"] for r in records] == [str(r["answer"]) for r in ROWS[:n]]
    assert [r["topic"] for r in records] == [r["subject"] for r in ROWS[:n]]
    assert len({r["id"] for r in records}) == n and all(isinstance(r["id"], str) for r in records)
    return records


MAPPING = {"prompt_field": "question", "answer_field": "answer", "topic_field": "subject"}


def test_registry_lists_all_types():
    assert {"jsonl", "hf", "tfds", "arithmetic", "instructions", "dialogues"} <= set(source_types())


def test_jsonl(tmp_path):
    path = _write_jsonl(tmp_path / "probs.jsonl", ROWS)
    records = _check_rows(load_source({"type": "jsonl", "path": str(path), **MAPPING}))
    assert records[3]["id"] == "probs/3"  # positional, stable
    assert records[3]["subject"] == "math"  # other columns are carried
    again = load_source({"type": "jsonl", "path": str(path), **MAPPING})
    assert list(again) == records


def test_jsonl_defaults_ids_and_gsm8k_answers(tmp_path):
    rows = [{"id": "a", "prompt": "p1", "answer": "Half of 4 is 2.\n#### 1,002"}, {"id": "b", "prompt": "p2"}]
    recs = list(load_source({"type": "jsonl", "path": str(_write_jsonl(tmp_path / "x.jsonl", rows))}))
    assert [r["id"] for r in recs] == ["a", "b"]
    assert recs[0]["answer"] == "1002" and recs[0]["solution"].endswith("#### 1,002")
    assert "answer" not in recs[1]  # the answer column is optional unless named


def test_prompt_template_keeps_question(tmp_path):
    path = _write_jsonl(tmp_path / "q.jsonl", ROWS[:2])
    rec = load_source({"type": "jsonl", "path": str(path), "prompt_field": "question",
                       "prompt_template": "Q: {question}\nA:"})[1]
    assert rec["prompt"] == "Q: What is 1 + 1?\nA:" and rec["question"] == "What is 1 + 1?"


@pytest.mark.parametrize("ext", ["json", "jsonl", "csv", "parquet"])
def test_hf_local_files(tmp_path, ext):
    import pandas as pd

    path = tmp_path / f"data.{ext}"
    frame = pd.DataFrame(ROWS)
    if ext == "csv":
        frame.to_csv(path, index=False)
    elif ext == "parquet":
        frame.to_parquet(path)
    else:
        _write_jsonl(path, ROWS)
    spec = {"type": "hf", "path": str(path), "cache_dir": str(tmp_path / "cache"), **MAPPING}
    records = _check_rows(load_source(spec))
    assert records[0]["id"] == f"data.{ext}/train/0"
    sliced = load_source({**spec, "split": "train[:3]"})
    assert len(sliced) == 3


def test_hf_builder_with_data_files(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", ROWS)
    source = load_source({"type": "hf", "path": "json", "data_files": [str(path)],
                          "cache_dir": str(tmp_path / "cache"), "id_field": "question", **MAPPING})
    assert source[2]["id"] == "What is 2 + 2?"


@pytest.mark.parametrize("module, spec", [
    ("datasets", {"type": "hf", "path": "json", "data_files": []}),
    ("tensorflow_datasets", {"type": "tfds", "name": "gsm8k"})])
def test_hf_and_tfds_without_their_extra(monkeypatch, module, spec):
    """A default install leaves `datasets` and `tensorflow-datasets` out: the source says which
    extra to install (a ConfigError: exit code 2 on the command line)."""
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"jaxevo\[data\]") as e:
        load_source(spec)
    assert module.replace("_", "-") in str(e.value) and f"the {spec['type']} source" in str(e.value)


# ---- TFDS ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A tiny TFDS data set in array_record format, built with TFDS's own builder API. TFDS 4.9
    writes array_record without TensorFlow (its example serializer has a NumPy path)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("array_record")

    class JaxevoTinyQa(tfds.core.GeneratorBasedBuilder):
        # TFDS looks for a builder's code inside its package through `importlib_resources`, which
        # is not installed here; a one-part module name makes it skip that lookup.
        __module__ = "jaxevo_tiny_qa_builder"
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "question": tfds.features.Text(), "answer": tfds.features.Text(),
                "subject": tfds.features.Text(), "level": tfds.features.Scalar(dtype=np.int32)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(ROWS), "test": self._generate_examples(ROWS[:3])}

        def _generate_examples(self, rows):
            for i, row in enumerate(rows):
                yield i, {**row, "answer": str(row["answer"]), "level": i}

    data_dir = tmp_path_factory.mktemp("tfds")
    JaxevoTinyQa(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir


def test_tfds_array_record(tfds_dir):
    spec = {"type": "tfds", "name": "jaxevo_tiny_qa", "split": "train", "data_dir": str(tfds_dir), **MAPPING}
    source = load_source(spec)
    records = list(source)
    assert len(records) == len(ROWS)
    # array_record stores examples in TFDS's shuffled order: compare as sets, values decoded to str.
    assert {(r["prompt"], r["answer"], r["topic"]) for r in records} == \
        {(r["question"], str(r["answer"]), r["subject"]) for r in ROWS}
    assert all(isinstance(r["prompt"], str) and isinstance(r["level"], int) for r in records)
    assert records[0]["id"] == "jaxevo_tiny_qa/train/0"
    assert list(load_source(spec)) == records  # stable order and ids
    assert len(load_source({**spec, "split": "test"})) == 3
    shards = [load_source(spec).shard(i, 3) for i in range(3)]
    assert sorted(r["id"] for s in shards for r in s) == sorted(r["id"] for r in records)


def test_tfds_errors(tfds_dir, tmp_path):
    with pytest.raises(ConfigError, match="not found") as e:
        load_source({"type": "tfds", "name": "no_such_set_xyz", "data_dir": str(tfds_dir)})
    assert len(str(e.value)) < 500  # not TFDS's list of every registered data set
    with pytest.raises(ConfigError, match="validation"):
        load_source({"type": "tfds", "name": "jaxevo_tiny_qa", "split": "validation", "data_dir": str(tfds_dir)})
    with pytest.raises(ConfigError, match=str(tmp_path / "missing")):
        load_source({"type": "tfds", "name": "jaxevo_tiny_qa", "data_dir": str(tmp_path / "missing")})


# ---- sharding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2, 3, 7, 10])
def test_shards_partition_records(tmp_path, count):
    source = load_source({"type": "arithmetic", "n": 20, "levels": [1]})
    ids = [r["id"] for r in source]
    shards = [[r["id"] for r in source.shard(i, count)] for i in range(count)]
    assert sorted(sum(shards, [])) == sorted(ids)  # each record in exactly one shard
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards == [[r["id"] for r in source.shard(i, count)] for i in range(count)]  # deterministic


def test_shard_of_shard_and_take():
    source = Source.from_records("x", [{"id": str(i), "prompt": "p"} for i in range(12)])
    assert [r["id"] for r in source.shard(1, 2).shard(0, 3)] == ["1", "7"]
    assert [r["id"] for r in source.take(3)] == ["0", "1", "2"]
    with pytest.raises(ConfigError):
        source.shard(3, 3)


# ---- errors -------------------------------------------------------------------------------------

def test_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ConfigError, match=str(missing)):
        load_source({"type": "jsonl", "path": str(missing)})
    with pytest.raises(ConfigError, match="nope.parquet"):
        load_source({"type": "hf", "path": str(tmp_path / "nope.parquet")})
    with pytest.raises(ConfigError, match="nope.csv"):
        load_source({"type": "hf", "path": "csv", "data_files": str(tmp_path / "nope.csv")})


def test_missing_field_lists_available(tmp_path):
    path = _write_jsonl(tmp_path / "f.jsonl", ROWS)
    with pytest.raises(ConfigError) as e:
        load_source({"type": "jsonl", "path": str(path)})  # default prompt field "prompt"
    assert "'prompt'" in str(e.value) and "answer, question, subject" in str(e.value)
    with pytest.raises(ConfigError, match="'solution' not found"):
        load_source({"type": "jsonl", "path": str(path), "prompt_field": "question", "answer_field": "solution"})
    with pytest.raises(ConfigError, match="'label' not found.*question"):
        load_source({"type": "hf", "path": str(path), "prompt_field": "label", "cache_dir": str(tmp_path / "c")})


def test_empty_source(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ConfigError, match="empty"):
        load_source({"type": "jsonl", "path": str(empty)})
    with pytest.raises(ConfigError, match="limit"):
        load_source({"type": "arithmetic", "n": 5, "limit": 0})


def test_bad_specs(tmp_path):
    with pytest.raises(ConfigError, match="unknown data source type 'csv'.*jsonl"):
        load_source({"type": "csv"})
    with pytest.raises(ConfigError, match="unknown key.*promt_field"):
        load_source({"type": "jsonl", "path": "x.jsonl", "promt_field": "q"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{not json}\n')
    with pytest.raises(ConfigError, match="line 2"):
        load_source({"type": "jsonl", "path": str(bad)})
    dup = _write_jsonl(tmp_path / "dup.jsonl", [{"id": 1, "prompt": "a"}, {"id": 1, "prompt": "b"}])
    with pytest.raises(ConfigError, match="duplicate id '1'"):
        list(load_source({"type": "jsonl", "path": str(dup)}))
    with pytest.raises(ConfigError, match="must be a string"):
        load_source({"type": "jsonl", "path": str(_write_jsonl(tmp_path / "n.jsonl", [{"prompt": 3}]))})


def test_limit(tmp_path):
    source = load_source({"type": "jsonl", "path": str(_write_jsonl(tmp_path / "l.jsonl", ROWS)),
                          "prompt_field": "question", "limit": 4})
    assert len(source) == 4 and source[3]["prompt"] == ROWS[3]["question"]


def test_a_source_type_registered_twice_is_refused():
    first = SOURCES.get("jsonl")

    def jsonl(spec):
        return Source.from_records("other", [])

    with pytest.raises(RegistryError, match="data source type 'jsonl' is registered twice"):
        register_source("jsonl", keys=("path",))(jsonl)
    assert SOURCES.get("jsonl") is first  # the first registration is kept
