"""The round driver: runs (or resumes) `run.rounds` rounds of the recipe's stages.

    result = run_evolve(cfg, raw_config)

Round 0 is the start model's evaluation (preceded, with `meta.enabled`, by SELF's meta-skill
training, whose model then replaces the start model). Each round r >= 1 starts from round r-1's
model, runs the stages its config lists (`stages:`, checked before anything runs) and records its
model in the manifest; a rerun skips every stage the manifest marks done (and a training stage
resumes from its own Orbax checkpoints).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import jax

from jaxevo import cpu_store, distributed
from jaxevo.config import to_dict
from jaxevo.dirlock import DirLock
from jaxevo.evolve import stages as _builtin  # noqa: F401  (registers the built-in stages)
from jaxevo.evolve.config import EvolveConfig
from jaxevo.evolve.context import RoundContext
from jaxevo.evolve.recipe import STAGES, Stage, check_stages
from jaxevo.evolve.report import print_round, round_metrics, write_report
from jaxevo.evolve.rundir import RunDir
from jaxevo.evolve.scorers import SCORERS, rewards_of
from jaxevo.plugins import load_plugins
from jaxevo.sharding import make_mesh
from jaxevo.train.tblog import MetricsLogger
from jaxevo.weights.load import hf_dir_for

log = logging.getLogger(__name__)


def run_evolve(cfg: EvolveConfig, raw: dict[str, Any], *, stop_after: tuple[int, str] | None = None,
               stop_at_step: int | None = None, mesh=None) -> dict[str, Any]:
    """Run or resume. `stop_after=(round, stage)` / `stop_at_step` end the run early as if it were
    killed there (used by the resume tests). Returns the manifest.

    Multi-host: call on every process with the same config; all of them run every stage, process 0
    writes the files (see `rundir`). The run directory is locked for the call (`jaxevo.dirlock`):
    a second `evolve` on it is refused."""
    # Names are checked before the lock makes the run directory: a typo leaves nothing behind.
    load_plugins(cfg.run.plugins, "run.plugins")  # first: their registrations count below
    stages = check_stages(cfg.stages)
    SCORERS.get(cfg.score.scorer, "score.scorer")  # an unknown name fails here, not rounds later
    if cfg.score.scorer == "rewards":
        rewards_of(cfg.score.rewards)  # each function imported and its signature checked now
    with DirLock(cfg.run.dir, "jaxevo evolve", enabled=distributed.is_main()):
        return _run(cfg, raw, stages, stop_after, stop_at_step, mesh)


def _run(cfg: EvolveConfig, raw: dict[str, Any], stages, stop_after, stop_at_step, mesh) -> dict[str, Any]:
    run = RunDir(cfg.run.dir, raw, defaults=to_dict(EvolveConfig())).open()
    cpu_store.forget_used()  # the manifest's `cpu_paths` lists what this run chose
    distributed.main_only(_say_where)(run, cfg.run.rounds)
    mesh = mesh if mesh is not None else make_mesh(cfg.model.mesh)
    if cfg.meta.enabled and not run.is_done(0, "meta"):
        _run_stage(RoundContext(cfg, run, 0, mesh, stop_at=stop_at_step), STAGES.get("meta"))
        if stop_after == (0, "meta"):
            return run.manifest()
    if cfg.eval.before and run.is_done(0, "eval"):
        distributed.main_only(_ensure_logged)(run, 0)  # killed between the stage and its row
    elif cfg.eval.before:
        tmp = run.begin_stage(0, "eval")
        ctx = RoundContext(cfg, run, 0, mesh).begin("eval", tmp)
        t0 = time.time()
        info = {"model": cfg.model.path, **ctx.evaluate_held_out(cfg.model.path, tmp)}
        run.finish_stage(0, "eval", dict(info, seconds=round(time.time() - t0, 2)))
        _record_cpu_paths(run, "0/eval")
        distributed.main_only(print_round)(run, 0)
        distributed.main_only(_log_round)(run, 0)
    for r in range(1, cfg.run.rounds + 1):
        if run.manifest()["rounds"].get(str(r), {}).get("done"):
            distributed.main_only(_ensure_logged)(run, r)
            continue
        ctx = RoundContext(cfg, run, r, mesh, stages, stop_at=stop_at_step)
        for st in stages:
            if run.is_done(r, st.name):
                continue
            _run_stage(ctx, st)
            if stop_after == (r, st.name):
                return run.manifest()
        run.set_round_info(r, model=_relative(run, ctx.latest_model()), done=True)
        distributed.main_only(print_round)(run, r)
        distributed.main_only(_log_round)(run, r)
        # Each compiled program keeps its machine code mapped until its jit cache lets go: a long
        # run would reach the kernel's limit on memory maps (vm.max_map_count, 65530), and XLA
        # crashes there (SIGSEGV while compiling). The next round recompiles or loads from the
        # persistent cache.
        jax.clear_caches()
    final = run.root / "final_model"
    last = RoundContext(cfg, run, cfg.run.rounds, mesh, stages).latest_model()
    source = _relative(run, last)
    # Exported again when the last round's model changed (run.rounds raised on a resume).
    export = not final.exists() or run.manifest().get("final_model_from") != source
    if distributed.is_main():
        if export:
            tmp = final.with_name("final_model.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(hf_dir_for(last), tmp)
            shutil.rmtree(final, ignore_errors=True)
            tmp.replace(final)
    run.set_info(final_model_from=source)
    if distributed.is_main():
        write_report(run, cfg)
    distributed.barrier("jaxevo_run_done")
    return run.manifest()


def _run_stage(ctx: RoundContext, st: Stage) -> None:
    """Run one stage into its `.partial` folder, then mark it done (timed) in the manifest."""
    tmp = ctx.run.begin_stage(ctx.round, st.name)
    t0 = time.time()
    info = st(ctx, tmp)
    info["seconds"] = round(time.time() - t0, 2)
    ctx.run.finish_stage(ctx.round, st.name, info)
    _record_cpu_paths(ctx.run, f"{ctx.round}/{st.name}")
    log.info("round %d %s: %s", ctx.round, st.name, _scalars(info))


def _scalars(info: dict[str, Any]) -> str:
    """A stage's info for its log line: the scalars (the rest is in the manifest)."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()
                    if isinstance(v, (str, int, float, bool)) or v is None)


def _record_cpu_paths(run: RunDir, stage: str) -> None:
    """Add the CPU paths this process has chosen so far (`cpu_store.used`) to the manifest's
    `cpu_paths`, each with the stage ("round/name") that first ran on it. A choice made again
    differently (a resume on another machine, or after the cache was emptied) is added beside the
    first, so runs that sum in different orders can be told apart afterwards. On several
    processes, process 0's."""
    rec = run.manifest().get("cpu_paths", [])
    ident = lambda e: (e["machine"], e["what"], e["choice"], e["measured"])  # noqa: E731
    new = [dict(e, stage=stage) for e in cpu_store.used().values()
           if ident(e) not in {ident(x) for x in rec}]
    if distributed.broadcast(bool(new)):  # all processes write (a barrier), or none
        run.set_info(cpu_paths=rec + new)


def _relative(run: RunDir, model: str) -> str:
    """A model path relative to the run directory when inside it (the manifest's form)."""
    return str(Path(model).relative_to(run.root)) if Path(model).is_relative_to(run.root) else model


def _say_where(run: RunDir, rounds: int) -> None:
    """One line on a resume: what is finished, where the run continues."""
    m = run.manifest()["rounds"]
    done = [(st.get("finished", 0), int(r), n) for r, rd in m.items()
            for n, st in rd.get("stages", {}).items() if st.get("done")]
    if not done:
        return
    rounds_done = sorted(int(r) for r, rd in m.items() if rd.get("done"))
    last = max(done)[1:]
    partial = sorted(p.relative_to(run.root) for p in run.root.glob("round_*/*.partial"))
    log.warning("resuming %s: %d stages finished (last: round %d %s), rounds done: %s of %d%s",
                run.root, len(done), last[0], last[1], rounds_done or "none", rounds,
                f"; continuing in {', '.join(map(str, partial))}" if partial else "")


def _ensure_logged(run: RunDir, r: int) -> None:
    """Write round r's metrics row if a kill came between the round's end and its row."""
    path = run.root / "metrics.jsonl"
    rows = path.read_text().splitlines() if path.is_file() else []
    if not any(_row_step(x) == r for x in rows):
        _log_round(run, r)


def _row_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _log_round(run: RunDir, r: int) -> None:
    """Round metrics to RUN/metrics.jsonl and RUN/tensorboard (step = round); a row of round r
    already there (a kill after it was written) is replaced, never doubled."""
    path = run.root / "metrics.jsonl"
    if path.is_file():
        lines = path.read_text().splitlines(keepends=True)
        keep = [x for x in lines if _row_step(x) not in (r, None)]
        if len(keep) != len(lines):
            path.write_text("".join(keep))
    logger = MetricsLogger(run.root)
    try:
        logger.log(r, round_metrics(run.manifest(), r))
    finally:
        logger.close()
