"""The kd-logit cache: a fine-tuned teacher's logits on one task's transfer set, one directory
per key, shared by every ``+kd`` system, seed and run that names the same cache root. Torch-free.

::

    KD_CACHE/<TASK>-<key>/
      logits.npy      (R, C) float32: each row's teacher logits (C = 1 for a regression)
      source.npy      (R,) int64: the training row (its position in the training split) it is of
      variant.npy     (R,) int32: 0 for the training row itself, k for its k-th variant (1..N)
      variants.arrow  the variants' text, columns text_a (and text_b for pairs: a pair's variant
                      has both sides varied together), R - M rows in row order; only when N > 0
      logits.json     the manifest, written last: its presence means "complete"

Rows: the M training rows first, in order; then row M + i * N + (k - 1) is variant k of training
row i. The key (a fingerprint of the fine-tuned teacher's identity, the task's training data and
the transfer-set settings) is the caller's; the manifest records it with what it was made of and
every file's shape, dtype and sha256. The directory is built under a temporary name and renamed
(``core.io.atomic_output``), and filled under a file lock: of two processes asking for the same
missing entry one computes it, the other waits and then reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from filelock import FileLock

from cache_tools.format import ShardError
from core.io import (
    TEMP_MARK,
    atomic_output,
    atomic_write_json,
    read_json_object,
    remove,
    sha256_file,
)

MANIFEST = "logits.json"
FORMAT = "kd-logits"
VERSION = 1
LOGITS, SOURCE, VARIANT, TEXTS = "logits.npy", "source.npy", "variant.npy", "variants.arrow"
ARRAYS = {LOGITS: "float32", SOURCE: "int64", VARIANT: "int32"}


@dataclass
class LogitEntry:
    """One cache entry in memory. ``meta``: the manifest's descriptive fields (key, teacher,
    task, transfer settings, command...), given by the writer, read back as written."""

    logits: np.ndarray  # (R, C) float32
    source: np.ndarray  # (R,) int64
    variant: np.ndarray  # (R,) int32
    text_a: list[str] = field(default_factory=list)  # the R - M variants', row order
    text_b: list[str] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def originals(self) -> int:
        return int((self.variant == 0).sum())


def is_logit_cache(directory: Path) -> bool:
    return (Path(directory) / MANIFEST).is_file()


def cached_entry(directory: Path, compute: Callable[[], LogitEntry]) -> tuple[LogitEntry, bool]:
    """The entry in ``directory``, computed and written first if it is missing; and whether this
    call computed it. Concurrent callers on one entry: one computes, the others wait, then read."""
    directory = Path(directory)
    if not is_logit_cache(directory):
        directory.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(directory.parent / f".{directory.name}.lock")):
            if not is_logit_cache(directory):  # nobody filled it while we waited
                for leftover in directory.parent.glob(f".{directory.name}{TEMP_MARK}*"):
                    remove(leftover)  # a killed writer's (we hold the entry's lock)
                write_entry(directory, compute())
                return read_entry(directory), True
    return read_entry(directory), False


def write_entry(directory: Path, entry: LogitEntry) -> None:
    """The arrays, the variants' text, then the manifest; the whole directory renamed at once."""
    check_structure(entry.logits, entry.source, entry.variant, len(entry.text_a), str(directory))
    with atomic_output(directory, directory=True) as building:
        files = {}
        arrays = {LOGITS: entry.logits, SOURCE: entry.source, VARIANT: entry.variant}
        for name, values in arrays.items():
            np.save(building / name, np.ascontiguousarray(values, dtype=ARRAYS[name]))
            files[name] = _describe(building / name, list(values.shape), ARRAYS[name])
        if entry.text_a:
            files[TEXTS] = _write_texts(building / TEXTS, entry.text_a, entry.text_b)
        rows, classes = entry.logits.shape
        atomic_write_json(building / MANIFEST, {
            "format": FORMAT, "version": VERSION, **entry.meta, "rows": rows,
            "originals": entry.originals, "classes": classes, "files": files})


def _write_texts(path: Path, text_a: list[str], text_b: list[str] | None) -> dict:
    """The variants' text as one Arrow IPC file; its description for the manifest."""
    columns = {"text_a": text_a} | ({} if text_b is None else {"text_b": text_b})
    table = pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
        out.write_table(table)
    return _describe(path, [table.num_rows, table.num_columns], "string")


def _describe(path: Path, shape: list[int], dtype: str) -> dict:
    return {"shape": shape, "dtype": dtype, "sha256": sha256_file(path)}


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ShardError(f"{directory}: no {MANIFEST}; not a complete kd-logit cache entry")
    manifest = read_json_object(path, "a kd-logit cache manifest", ShardError)
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise ShardError(f"{path}: not a kd-logit cache manifest "
                         f"(format {manifest.get('format')!r})")
    return manifest


def read_entry(directory: Path, full: bool = False) -> LogitEntry:
    """The entry; every file's shape and dtype checked against the manifest (``full``: its
    sha256 too). ShardError names the first problem."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    files = manifest["files"]
    arrays = {name: _load(directory, name, files, full) for name in ARRAYS}
    text_a, text_b = _load_texts(directory, files, full) if TEXTS in files else ([], None)
    check_structure(arrays[LOGITS], arrays[SOURCE], arrays[VARIANT], len(text_a), str(directory))
    if arrays[LOGITS].shape != (manifest.get("rows"), manifest.get("classes")):
        raise ShardError(f"{directory}: logits {arrays[LOGITS].shape}, the manifest says "
                         f"({manifest.get('rows')}, {manifest.get('classes')})")
    meta = {k: v for k, v in manifest.items()
            if k not in ("format", "version", "rows", "originals", "classes", "files")}
    return LogitEntry(arrays[LOGITS], arrays[SOURCE], arrays[VARIANT], text_a, text_b, meta)


def verify_logit_cache(directory: Path, full: bool = True) -> str:
    """Check an entry (``full``: the files' sha256 and finite logits too); a line on success,
    ShardError naming the first problem."""
    entry = read_entry(directory, full)
    if full and not np.isfinite(entry.logits).all():
        raise ShardError(f"{Path(directory) / LOGITS}: NaN or Inf logits")
    originals, (rows, classes) = entry.originals, entry.logits.shape
    depth = "sha256, shapes and row structure checked" if full else "quick: shapes checked"
    return (f"OK: kd-logit cache, {rows} rows ({originals} training rows, "
            f"{(rows - originals) // max(originals, 1)} variant(s) each), {classes} logit(s) per "
            f"row ({depth})")


def _checked_file(directory: Path, name: str, files: dict, full: bool) -> tuple[Path, dict]:
    path = directory / name
    expected = files.get(name)
    if not isinstance(expected, dict):
        raise ShardError(f"{directory}: the manifest lists no {name}")
    if not path.is_file():
        raise ShardError(f"{path}: listed in the manifest but missing")
    if full and sha256_file(path) != expected.get("sha256"):
        raise ShardError(f"{path}: sha256 mismatch (corrupt kd-logit cache)")
    return path, expected


def _load(directory: Path, name: str, files: dict, full: bool) -> np.ndarray:
    path, expected = _checked_file(directory, name, files, full)
    try:
        values = np.load(path)
    except (ValueError, OSError, EOFError) as exc:
        raise ShardError(f"{path}: unreadable ({exc})") from None
    if list(values.shape) != expected.get("shape") or str(values.dtype) != expected.get("dtype"):
        raise ShardError(f"{path}: shape {values.shape} {values.dtype}, the manifest says "
                         f"{expected.get('shape')} {expected.get('dtype')}")
    return values


def _load_texts(directory: Path, files: dict, full: bool) -> tuple[list[str], list[str] | None]:
    path, expected = _checked_file(directory, TEXTS, files, full)
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
    except (OSError, pa.ArrowException) as exc:
        raise ShardError(f"{path}: unreadable ({exc})") from None
    if [table.num_rows, table.num_columns] != expected.get("shape"):
        raise ShardError(f"{path}: {table.num_rows} rows x {table.num_columns} columns, the "
                         f"manifest says {expected.get('shape')}")
    text_b = table.column("text_b").to_pylist() if "text_b" in table.column_names else None
    return table.column("text_a").to_pylist(), text_b


def row_layout(originals: int, variants: int) -> tuple[np.ndarray, np.ndarray]:
    """``source`` (R,) int64 and ``variant`` (R,) int32 of the format's row order: the M
    originals, then ``variants`` variants of each, in order."""
    rows = np.arange(originals)
    source = np.concatenate([rows, np.repeat(rows, variants)])
    variant = np.concatenate([np.zeros(originals, np.int32),
                              np.tile(np.arange(1, variants + 1, dtype=np.int32), originals)])
    return source, variant


def check_structure(logits: np.ndarray, source: np.ndarray, variant: np.ndarray, texts: int,
                    where: str) -> None:
    """Rows as the format lays them out: M originals (source = their own row, variant 0), then N
    variants of each, in order; one text row per variant."""
    rows = len(logits)
    if logits.ndim != 2 or source.shape != (rows,) or variant.shape != (rows,):
        raise ShardError(f"{where}: logits {logits.shape}, source {source.shape}, variant "
                         f"{variant.shape} do not line up")
    originals = int((variant == 0).sum())
    variants = (rows - originals) // max(originals, 1)
    expected_source, expected_variant = row_layout(originals, variants)
    if (rows != originals * (variants + 1) or not np.array_equal(source, expected_source)
            or not np.array_equal(variant, expected_variant) or texts != rows - originals):
        raise ShardError(f"{where}: rows are not {originals} originals then {variants} "
                         "variant(s) of each in order, with one text row per variant")
