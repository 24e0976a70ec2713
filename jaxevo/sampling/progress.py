"""The sampler's progress bar: a tqdm bar over sequences, or a silent stand-in with its methods."""

from __future__ import annotations

from tqdm.auto import tqdm


class _NoBar:
    def update(self, *_):
        pass

    def set_postfix(self, **_):
        pass

    def close(self):
        pass


def progress_bar(total: int, show: bool):
    """A tqdm bar over `total` sequences, or a silent stand-in."""
    return tqdm(total=total, unit="seq", desc="sampling", dynamic_ncols=True) if show else _NoBar()
