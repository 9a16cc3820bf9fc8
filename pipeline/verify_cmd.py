"""`pipeline verify`: check a shard directory against its manifest."""

from __future__ import annotations

import time
from pathlib import Path

import click

from cache_tools.verify import verify_directory


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--quick", is_flag=True,
              help="Sizes, schema and row counts only (what train-student runs at start); "
                   "no hashing, no reading of vectors.")
def verify(directory: Path, quick: bool) -> None:
    """Check every shard of DIRECTORY: present, size, sha256, schema, ids, dimension, dtype,
    no NaN/Inf vectors, tokenizer and embedding matrix. Exit 2 naming the first problem."""
    started = time.perf_counter()
    report = verify_directory(directory, full=not quick)
    click.echo(f"{report.summary()} in {time.perf_counter() - started:.1f}s: {directory}")
