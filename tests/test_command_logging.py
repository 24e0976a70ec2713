"""The commands' log lines (`jaxevo.commands.setup_logging`): jaxevo's INFO lines are shown, once,
in the command's format, on stderr as it is when they come; the libraries' INFO lines are not."""

import io
import logging
import sys

import orbax.checkpoint  # noqa: F401  (its import gives the root logger absl's handler, as in a command)
import pytest

from jaxevo.commands import setup_logging
from jaxevo.evolve.driver import _scalars


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_jaxevo_info_lines_are_shown_once_in_the_format(root_logger, capsys):
    logging.basicConfig()  # what absl does on its first log call: a handler already on the root
    setup_logging(logging.INFO, "%(levelname)s %(name)s: %(message)s")
    logging.getLogger("jaxevo.train.builder").info("data: %s", {"examples": 8})
    logging.getLogger("orbax.checkpoint.x").info("not shown")
    logging.getLogger("absl").info("not shown")
    logging.getLogger("jaxevo.evolve.driver").warning("resuming")
    assert capsys.readouterr().err == ("INFO jaxevo.train.builder: data: {'examples': 8}\n"
                                       "WARNING jaxevo.evolve.driver: resuming\n")


def test_the_lines_follow_stderr_as_it_is_when_they_come(root_logger, capsys, monkeypatch):
    setup_logging(logging.INFO, "%(message)s")
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)  # a redirect made after the handler
    logging.getLogger("jaxevo.x").info("here")
    assert later.getvalue() == "here\n" and capsys.readouterr().err == ""


def test_a_stage_log_line_has_its_scalars():
    info = {"model": "train/final", "steps": 2, "loss": 0.123456, "first": {"reward": 0.0}, "ok": True,
            "topics": ["a"], "skipped": None, "seconds": 11.56}
    assert _scalars(info) == "model=train/final steps=2 loss=0.1235 ok=True skipped=None seconds=11.56"
