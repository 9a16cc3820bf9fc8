"""Progress on the terminal, the one home of both kinds: a line of news (:func:`log`) and a
progress bar (:func:`bar`). Both go to stderr, so that stdout keeps a command's result."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import click


def log(message: str) -> None:
    """One line of news on stderr."""
    click.echo(message, err=True)


def bar(iterable: Iterable | None = None, *, total: int | None = None, initial: int = 0,
        desc: str | None = None, unit: str = "it", enabled: bool = True):
    """A tqdm bar on stderr; a silent one when not ``enabled`` (``--no-progress``, or a rank
    other than 0), so that callers update it either way."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr,
                disable=not enabled, dynamic_ncols=True)
