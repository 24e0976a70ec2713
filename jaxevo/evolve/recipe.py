"""A recipe is data: the `stages:` list of its config names registered stages, run in order.

    @stage("generate", reads=("prompts.jsonl",), writes=("groups.jsonl",))
    def generate_stage(ctx: RoundContext, out: Path) -> dict: ...

A stage reads the files of earlier stages of its round (`ctx.input(file)`: the closest earlier
stage that declares it in `writes`), writes its own into `out` (a `.partial` folder the driver
renames when the stage returns; the folder is named by the stage) and returns a small JSON-able
dict for the manifest. "model" in `writes` marks a stage whose info names the round's new model.
`check_stages` refuses a list where a stage comes before what it reads, before anything runs.
Add a stage from any module with `@stage(...)` and list its name in a recipe's `stages:`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

from jaxevo.errors import ConfigError
from jaxevo.evolve.context import RoundContext
from jaxevo.registry import Registry, typed

StageFn = Callable[[RoundContext, Path], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Stage:
    """A named step of a round and the files it reads from earlier stages and writes."""

    name: str
    run: StageFn
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()

    def __call__(self, ctx: RoundContext, out: Path) -> dict[str, Any]:
        return self.run(ctx.begin(self.name, out), out)


STAGES: Registry[Stage] = Registry("stage", adapt=typed(
    Stage, "decorate the function with @jaxevo.evolve.recipe.stage(name, reads=..., writes=...)"))


def stage(name: str, *, reads: Sequence[str] = (), writes: Sequence[str] = ()) -> Callable[[StageFn], StageFn]:
    """Decorator: register `fn(ctx, out) -> info` as stage `name`."""
    def deco(fn: StageFn) -> StageFn:
        STAGES.add(name, Stage(name, fn, tuple(reads), tuple(writes)))
        return fn
    return deco


def check_stages(names: Sequence[str], key: str = "stages") -> tuple[Stage, ...]:
    """The registered stages of a recipe's `key:` list, checked: every name known and listed
    once, and every file a stage reads written by a stage listed before it."""
    stages = tuple(STAGES.get(n, f"stage in `{key}:`") for n in names)
    written: set[str] = set()
    for i, s in enumerate(stages):
        if s.name in names[:i]:
            raise ConfigError(f"{key}: {s.name!r} is listed twice (a stage's folder is named by it)")
        for f in s.reads:
            if f not in written:
                by = sorted(o.name for o in STAGES.values() if f in o.writes) or ["no registered stage"]
                raise ConfigError(f"{key}: {s.name!r} reads {f}, which no stage listed before it "
                                  f"writes (written by: {', '.join(by)}); list it after one of them")
        written.update(s.writes)
    return stages
