"""One module per `jaxevo` subcommand: add_arguments(parser), run(args) -> exit code."""

import argparse


def positive_int(text: str) -> int:
    """argparse type of a count such as --batch-size: an int >= 1 (else argparse's usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
