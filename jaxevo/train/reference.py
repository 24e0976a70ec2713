"""Reference log-probs, computed once before a preference phase and stored with the pairs.

One sharded, batched, jitted forward of the frozen reference params over every view of every
example (`jaxevo.train.step.forward_views`: the same log-prob code the step uses). The result,
``{view: [N] f32}`` summed response log-probs, is added to the data as ``ref/<view>`` extras
(so each batch carries its pairs' reference values) and cached in ``reference_logps.npz`` keyed by
a fingerprint of the tokens and the reference model, so a resumed run does not recompute it.
With token weights ω (``objective.token_alpha``) the sums are ω-weighted like the policy's, and
ω is part of the fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from jaxevo.sharding import use_mesh
from jaxevo.train.batches import TokenizedData, VIEW_KEYS
from jaxevo.train.step import batch_spec_sharding, fetch, forward_views, to_global

log = logging.getLogger(__name__)


def fingerprint(data: TokenizedData, views: tuple[str, ...], model_id: str,
                omega: np.ndarray | None = None) -> str:
    h = hashlib.sha256(model_id.encode())
    for v in views:
        for k in VIEW_KEYS:
            a = np.ascontiguousarray(data.arrays[f"{v}/{k}"])
            h.update(f"{v}/{k}{a.shape}".encode())
            h.update(a.tobytes())
    if omega is not None:  # weighted sums are other numbers: never read an unweighted cache
        h.update(b"omega" + np.ascontiguousarray(omega, np.float32).tobytes())
    return h.hexdigest()[:16]


def compute_reference_logps(params, cfg, data: TokenizedData, views: tuple[str, ...], *, mesh,
                            param_shardings=None, batch_size: int = 8, chunk: int = 128,
                            vocab_chunk: int | None = None, pad_to_multiple: int = 64,
                            progress: bool = False, omega=None) -> dict[str, np.ndarray]:
    """``{view: [N] f32}`` summed response log-probs under ``params`` (no gradients);
    ``omega`` [V] (a replicated array): the ω-weighted sums Σ_t ω(y_t) log π(y_t) instead."""
    n_dev = mesh.shape["data"] * mesh.shape["fsdp"]
    bs = max(n_dev, -(-int(batch_size) // n_dev) * n_dev)
    rep = NamedSharding(mesh, P())

    def fwd(p, views_arrays, w):
        out = forward_views(p, cfg, views_arrays, views, chunk=chunk, vocab_chunk=vocab_chunk,
                            omega=w)
        return {v: out[v][2] for v in views}

    jf = jax.jit(fwd, in_shardings=(param_shardings, batch_spec_sharding(mesh),
                                    rep if omega is not None else None), out_shardings=rep)
    n = data.num_examples
    result = {v: np.zeros((n,), np.float32) for v in views}
    starts = range(0, n, bs)
    if progress:
        starts = tqdm(starts, desc="reference log-probs", unit="batch", leave=False)
    with use_mesh(mesh):
        for s in starts:
            idx = np.arange(s, s + bs)
            real = idx < n
            idx = np.where(real, idx, 0)  # pad the last batch with row 0, dropped below
            batch = data.take(idx, pad_to_multiple)
            out = fetch(jf(params, to_global(batch.views, mesh), omega))
            for v in views:
                result[v][idx[real]] = np.asarray(out[v])[real]
    return result


def attach_reference(data: TokenizedData, ref: dict[str, np.ndarray]) -> TokenizedData:
    return data.with_extras(**{f"ref/{v}": a.astype(np.float32) for v, a in ref.items()})


def cached_reference_logps(cache: Path | None, key: str, compute) -> dict[str, np.ndarray]:
    """Load ``{view: [N]}`` from ``cache`` when its fingerprint is ``key``; else compute and store."""
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            if str(z["__fingerprint__"]) == key:
                log.info("reference log-probs loaded from %s", cache)
                return {k[len("ref/"):]: z[k] for k in z.files if k.startswith("ref/")}
    ref = compute()
    if cache is not None and jax.process_index() == 0:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, __fingerprint__=np.asarray(key), **{f"ref/{v}": a for v, a in ref.items()})
        tmp.replace(cache)
    return ref


def reference_model_id(spec: Any, dtype: str) -> str:
    return f"{spec}|{dtype}"
