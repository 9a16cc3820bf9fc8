"""The output directory: one run at a time (the lock), one run's settings at a time (the claim).

Every file of a run is written through ``core.io.atomic_output``, whose one temporary name is
``.NAME.tmp-PID-XXXX`` beside the target: what a killed run left is found by that name
(``core.io.is_temporary``) and removed when the next run claims the directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from cache_tools.format import (
    AUGMENT_FILE,
    CONTEXTUAL_FILE,
    EMBEDDINGS_FILE,
    LOCK_NAME,
    MANIFEST_NAME,
    OOD_DIR,
    TOKENIZER_DIR,
    WORK_DIR,
    parse_shard_name,
)
from cache_tools.manifest import read_manifest
from core.distributed import DistContext
from core.errors import UserError
from core.io import atomic_write_json, is_temporary, remove, remove_leftovers

RUN_NAME = "run.json"  # in .work/: the settings fingerprint of the run that owns the directory


@contextmanager
def directory_lock(out: Path, ctx: DistContext) -> Iterator[None]:
    """The group's rank 0 holds ``out``'s lock for the block: a second run (or group) on this
    directory is refused, on every rank of it."""
    lock = FileLock(str(out / LOCK_NAME))

    def acquire() -> None:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise UserError(f"{out} is locked by another `pipeline encode` run") from None

    ctx.main_first(acquire)
    try:
        yield
    finally:
        if ctx.is_main:
            lock.release()


def claim_directory(out: Path, work: Path, settings_fp: str, overwrite: bool) -> None:
    """Refuse to mix runs in one directory; ``overwrite`` clears what another run left."""
    run_path = work / RUN_NAME
    previous = None
    if run_path.is_file():
        previous = json.loads(run_path.read_text())["settings_fingerprint"]
    if previous is None and (out / MANIFEST_NAME).is_file():
        previous = read_manifest(out).settings_fingerprint
    foreign = previous is None and any(parse_shard_name(p.name) for p in out.iterdir())
    if (previous not in (None, settings_fp) or foreign) and not overwrite:
        raise UserError(
            f"{out} holds shards from a different teacher, corpus or settings; "
            "choose another --out or pass --overwrite to replace them"
        )
    if previous != settings_fp:
        _clear(out)
    work.mkdir(parents=True, exist_ok=True)
    # Half-written files of a killed run: never under a final name, and the lock says none is live.
    remove_leftovers(out)
    remove_leftovers(work)
    atomic_write_json(run_path, {"settings_fingerprint": settings_fp})


# what a run writes into its directory besides the shards
_OUTPUTS = {MANIFEST_NAME, EMBEDDINGS_FILE, CONTEXTUAL_FILE, AUGMENT_FILE, WORK_DIR, TOKENIZER_DIR,
            OOD_DIR}


def _clear(out: Path) -> None:
    for path in out.iterdir():
        if parse_shard_name(path.name) or is_temporary(path.name) or path.name in _OUTPUTS:
            remove(path)
