"""The one interface every weight importer produces: tensors by Hugging Face name.

Importers (safetensors directories, GGUF files) expose a `TensorSource`; the converter in
`jaxevo.weights.convert` maps it onto the model's parameter tree, one tensor at a time, so a
large checkpoint is never fully materialised on one host.

Tensors are numpy arrays in the *transformers / torch layout* (`q_proj.weight` is [out, in]) and
named exactly like the transformers state dict of a Llama-family model
(`model.layers.3.self_attn.q_proj.weight`, `model.embed_tokens.weight`, `lm_head.weight`, ...).
"""

from __future__ import annotations

from typing import Iterable, Protocol

import numpy as np


class TensorSource(Protocol):
    def keys(self) -> Iterable[str]:
        """All tensor names available."""
        ...

    def get(self, name: str) -> np.ndarray:
        """The tensor `name` in torch layout (any float dtype; the converter casts)."""
        ...

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor `name` without reading its data."""
        ...


class DictSource:
    """A TensorSource over an in-memory dict (tests, small models)."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self._t = tensors

    def keys(self):
        return self._t.keys()

    def get(self, name):
        return self._t[name]

    def shape(self, name):
        return tuple(self._t[name].shape)
