"""File IO every stage shares: the one atomic writer, JSON objects, content hashes.

Every file or directory the project writes goes through :func:`atomic_output`: the content is
built under a temporary name in the same directory (``.NAME.tmp-PID-XXXX``), flushed to disk,
then renamed over the real name in one step. A reader therefore sees the old version or the new
one, never half of either, and a crash leaves at most a temporary name that
:func:`is_temporary` recognises (one naming scheme, so a resuming run can clean up after a
killed one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp-"  # every temporary name is ".NAME.tmp-PID-XXXX"


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a leftover of :func:`atomic_output` (a killed writer's)."""
    return name.startswith(".") and TEMP_MARK in name


def remove_leftovers(directory: Path) -> None:
    """Delete what killed writers left in ``directory`` (:func:`is_temporary` names). Call it only
    where no other writer is live (under a run's lock, or on a directory a run owns)."""
    for path in directory.iterdir():
        if is_temporary(path.name):
            remove(path)


@contextlib.contextmanager
def atomic_output(path: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write the file (or, with ``directory=True``, the
    directory) there. When the block ends without an error the content is fsynced and renamed to
    ``path``, replacing what was there; on an error the temporary is removed and ``path`` is left
    as it was.

    ::

        with atomic_output(out / "model.safetensors") as tmp:
            save_file(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}{TEMP_MARK}{os.getpid()}-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; what we write is meant to be read
    try:
        yield tmp
        if directory:
            os.chmod(tmp, 0o755)
            for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
                _fsync(file)
            _replace_directory(tmp, path)
        else:
            _fsync(tmp)
            os.replace(tmp, path)
        _fsync_directory(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):  # the writer's own error is the one to report
            remove(tmp)
        raise


def _replace_directory(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``. A directory cannot be renamed over a non-empty one, so an
    existing ``path`` (a directory or a file) is first moved aside under a temporary name and
    removed once the new one is in place."""
    if not path.exists():
        tmp.rename(path)
        return
    aside = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-old")
    remove(aside)
    path.rename(aside)
    try:
        tmp.rename(path)
    except BaseException:
        aside.rename(path)  # put the old one back
        raise
    with contextlib.suppress(OSError):  # the new one is in place; a leftover aside is cleaned later
        remove(aside)


def remove(path: Path) -> None:
    """Delete a file or a directory tree (a missing one is fine; a failure raises)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(directory: Path) -> None:
    # the rename itself is durable only once the directory entry is on disk (POSIX)
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (:func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(payload)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json_object(path: Path, what: str, error: type[Exception]) -> dict:
    """The JSON object in ``path``; ``error`` names the file when it is not valid JSON or not
    an object (``what`` says what it should have been, e.g. "a manifest")."""
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: not {what} (a JSON object is expected)")
    return raw


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable object (settings, corpus description)."""
    payload = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]
