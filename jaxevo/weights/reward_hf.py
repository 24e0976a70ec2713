"""Reward models in Hugging Face's format: `*ForSequenceClassification` directories read and
written as ``{"decoder": decoder params, "score": [E, L]}`` (`jaxevo.models.reward`).

    cfg, params, tok, pad = load_reward("path/to/rm", dtype="float32")   # decoder + score head
    export_reward_hf(params, cfg, "out/rm", tok, pad_token_id=pad)        # transformers loads it
    is_reward_checkpoint("path/to/model")                                 # a sequence classifier?

A sequence classifier has no LM head: its config is read with ``tie_word_embeddings=True``, so the
decoder declares none (the embedding is only its input).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxevo.errors import WeightsError
from jaxevo.models.config import SUPPORTED, ModelConfig
from jaxevo.models.reward import SCORE_HF_NAME
from jaxevo.weights.hf import INDEX, HFDirSource, export_dtype, export_hf
from jaxevo.weights.load import CHECKPOINT_MARKER, hf_dir_for, load_pretrained
from jaxevo.weights.safetensors_io import SafetensorsFile, write_safetensors


def _architecture(d: Path) -> str:
    hf = json.loads((d / "config.json").read_text())
    return (hf.get("architectures") or ["?"])[0]


def is_reward_checkpoint(model: str | Path) -> bool:
    """Whether ``model`` (any spec `hf_dir_for` takes) is a `*ForSequenceClassification`."""
    return _architecture(hf_dir_for(model)).endswith("ForSequenceClassification")


def load_reward(model: str | Path, *, dtype: str = "bfloat16", param_dtype: str | None = None,
                remat: str = "none", mesh=None) -> tuple[ModelConfig, dict, Any, int | None]:
    """(decoder cfg, {"decoder", "score" [E, L]}, tokenizer, the config's pad_token_id) of a
    `*ForSequenceClassification` directory (or a jaxevo checkpoint of one). With ``mesh`` the
    decoder loads into its shardings and the head is replicated. A `jaxevo train` out_dir stands
    for its exported ``final/``."""
    final = Path(model) / "final"
    d = hf_dir_for(final if (final / CHECKPOINT_MARKER).is_file() else model)
    arch = _architecture(d)
    if not arch.endswith("ForSequenceClassification"):
        raise WeightsError(f"{d}: architectures {arch!r} is not a reward model; give a "
                           f"*ForSequenceClassification checkpoint (Llama, Mistral, Qwen2, Qwen3, Gemma 3) with a "
                           f"'{SCORE_HF_NAME}' head")
    src = HFDirSource(d)
    if SCORE_HF_NAME not in src.keys():
        raise WeightsError(f"{d}: no '{SCORE_HF_NAME}' tensor (the reward head) in the checkpoint")
    pdt = param_dtype or dtype
    pre = load_pretrained(d, dtype=dtype, param_dtype=pdt, remat=remat, mesh=mesh,
                          cfg_hook=lambda c: c.replace(tie_word_embeddings=True))
    w = np.asarray(src.get(SCORE_HF_NAME), np.float32).T.astype(jnp.dtype(pdt))  # [E, L]
    if w.shape[0] != pre.cfg.hidden_size:
        raise WeightsError(f"{d}: {SCORE_HF_NAME} is {w.shape[::-1]}, the config needs (L, {pre.cfg.hidden_size})")
    score = jax.device_put(w, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())) \
        if mesh is not None else jnp.asarray(w)
    pad = json.loads((d / "config.json").read_text()).get("pad_token_id")
    return pre.cfg, {"decoder": pre.params, "score": score}, pre.tokenizer, pad


def _host(x) -> np.ndarray:
    """A (replicated) head to numpy on this host; multi-process safe."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(jax.device_get(x))


def export_reward_hf(params: Any, cfg: ModelConfig, out_dir: str | Path, tokenizer=None, *,
                     pad_token_id: int | None = None, dtype: str = "float32") -> Path:
    """Write `{"decoder", "score" [E, 1]}` as a transformers `*ForSequenceClassification` directory
    (`AutoModelForSequenceClassification.from_pretrained` loads it; so does `load_reward`).

    The decoder's tensors go through `export_hf`; the head goes in a file of its own, listed with
    them in the safetensors index (transformers would read a lone model.safetensors and miss it)."""
    out = export_hf(params["decoder"], cfg.replace(tie_word_embeddings=True), out_dir, tokenizer, dtype=dtype)
    if (out / "model.safetensors").exists():  # one shard: name it as a shard, so the index rules
        (out / "model.safetensors").replace(out / "model-00001.safetensors")
    index_path = out / INDEX
    index = json.loads(index_path.read_text()) if index_path.exists() else {
        "metadata": {"total_size": (out / "model-00001.safetensors").stat().st_size},
        "weight_map": {n: "model-00001.safetensors" for n in SafetensorsFile(out / "model-00001.safetensors").keys()}}
    head = np.ascontiguousarray(_host(params["score"]).astype(np.float32).T.astype(export_dtype(dtype)))
    write_safetensors(out / "score.safetensors", [(SCORE_HF_NAME, head)])
    index["weight_map"][SCORE_HF_NAME] = "score.safetensors"
    index_path.write_text(json.dumps(index, indent=2))
    hf = json.loads((out / "config.json").read_text())
    hf["architectures"] = [SUPPORTED[cfg.model_type].replace("ForCausalLM", "ForSequenceClassification")]
    hf["num_labels"] = head.shape[0]
    hf["id2label"], hf["label2id"] = {str(i): f"LABEL_{i}" for i in range(head.shape[0])}, \
        {f"LABEL_{i}": i for i in range(head.shape[0])}
    hf["pad_token_id"] = pad_token_id if pad_token_id is not None else cfg.pad_token_id
    (out / "config.json").write_text(json.dumps(hf, indent=2))
    return out
