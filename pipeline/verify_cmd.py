"""`pipeline verify`: check a shard directory, or a kd-logit cache entry, against its manifest."""

from __future__ import annotations

import time
from pathlib import Path

import click

from cache_tools.logit_cache import is_logit_cache, verify_logit_cache
from cache_tools.verify import verify_directory


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--quick", is_flag=True,
              help="Sizes, schema and row counts only (what train-student runs at start); "
                   "no hashing, no reading of vectors.")
def verify(directory: Path, quick: bool) -> None:
    """Check every shard of DIRECTORY: present, size, sha256, schema, ids, dimension, dtype,
    no NaN/Inf vectors, tokenizer and embedding matrix. A kd-logit cache entry (logits.json):
    its files' shapes, dtypes, sha256 and row structure. Exit 2 naming the first problem."""
    started = time.perf_counter()
    if is_logit_cache(directory):
        summary = verify_logit_cache(directory, full=not quick)
    else:
        summary = verify_directory(directory, full=not quick).summary()
    click.echo(f"{summary} in {time.perf_counter() - started:.1f}s: {directory}")
