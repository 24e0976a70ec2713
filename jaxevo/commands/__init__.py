"""One module per `jaxevo` subcommand: add_arguments(parser), run(args) -> exit code."""

import argparse
import logging
import sys


def positive_int(text: str) -> int:
    """argparse type of a count such as --batch-size: an int >= 1 (else argparse's usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


class _Stderr(logging.StreamHandler):
    """A handler that writes to `sys.stderr` as it is when a record comes, not as it was when the
    handler was made: a redirect (or a test's capture) made later is followed."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def setup_logging(level: int, fmt: str, datefmt: str | None = None) -> None:
    """The command's log lines at `level` and up, on stderr. The root logger's handlers are
    replaced: importing orbax has already given it absl's, at WARNING, which would leave a plain
    `basicConfig` without effect (and jaxevo's INFO lines unseen)."""
    logging.basicConfig(level=level, format=fmt, datefmt=datefmt, handlers=[_Stderr()], force=True)
    for noisy in ("absl", "jax._src", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
