"""Checking a shard directory against its manifest.

The quick check (``full=False``, what ``train-student`` runs at start) opens no data: the manifest,
every shard present with its byte size, its schema (columns, types, vector dimension and dtype),
its self-description and row count, ids planned contiguous, the tokenizer files and the embedding
matrix header. The full check also hashes every shard (sha256) and reads its values: ids unique
and contiguous, no NaN/Inf vector, token ids inside the teacher's vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from cache_tools.format import DTYPES, FORMATS, ShardError, shard_name
from cache_tools.manifest import SENTENCE_VECTORS, Manifest, ShardInfo
from cache_tools.reader import ShardDirectory, read_shard, shard_metadata
from cache_tools.writer import arrow_schema
from core.io import sha256_file

TOKENIZER_FILE = "tokenizer.json"


@dataclass
class VerifyReport:
    num_shards: int
    num_rows: int
    num_bytes: int
    checked_checksums: bool

    def summary(self) -> str:
        depth = ("sha256, schema, ids and values checked" if self.checked_checksums
                 else "quick: sizes, schema and row counts checked, no hashing")
        return (
            f"OK: {self.num_shards} shards, {self.num_rows} rows, "
            f"{self.num_bytes / 1e6:.1f} MB ({depth})"
        )


def verify_directory(directory: str | Path, full: bool = True) -> VerifyReport:
    """Raise ShardError naming the first problem; ``full=False`` skips hashing and value checks."""
    shards = ShardDirectory(directory)
    manifest = shards.manifest
    _check_manifest(manifest)
    # a kd-logit cache (kind task_logits) has no tokenizer or embedding matrices beside it
    vocab_rows = _check_sidecars(shards, full) if manifest.kind == SENTENCE_VECTORS else None
    expected_id = 0
    for position, (info, path) in enumerate(zip(manifest.shards, shards.shard_paths, strict=True)):
        expected = shard_name(position, len(manifest.shards), manifest.format)
        if info.name != expected or info.index != position:
            raise ShardError(f"manifest entry {position} is {info.name!r} (index {info.index}), "
                             f"expected {expected!r}")
        if info.first_id != expected_id:
            raise ShardError(f"{path}: first id {info.first_id}, expected {expected_id}")
        verify_shard(path, info, manifest, full, vocab_rows)
        expected_id += info.num_rows
    if expected_id != manifest.num_rows:
        raise ShardError(f"manifest totals {manifest.num_rows} rows, shards hold {expected_id}")
    if manifest.augment is not None:
        _check_sources(shards.path / manifest.augment.file, manifest, full)
    if manifest.ood is not None:
        ood = shards.ood_directory
        if ood.manifest.settings_fingerprint != manifest.ood.settings_fingerprint:
            raise ShardError(f"{ood.path}: written by a different encode run than its parent")
        verify_directory(ood.path, full)
    return VerifyReport(len(manifest.shards), manifest.num_rows, manifest.num_bytes, full)


def verify_shard(path: Path, info: ShardInfo, manifest: Manifest, full: bool = True,
                 vocab_rows: int | None = None) -> None:
    """Check one shard file against its manifest entry; ShardError names the file."""
    name = str(path)
    if not path.is_file():
        raise ShardError(f"{name}: listed in the manifest but missing")
    size = path.stat().st_size
    if size != info.num_bytes:
        raise ShardError(f"{name}: {size} bytes, manifest says {info.num_bytes} (truncated?)")
    meta = shard_metadata(path)
    if meta.get("settings_fingerprint") != manifest.settings_fingerprint:
        raise ShardError(f"{name}: written by a different encode run (settings differ)")
    if meta.get("index") != info.index:
        raise ShardError(f"{name}: holds shard {meta.get('index')}, expected {info.index}")
    rows = _arrow_rows(path, manifest) if manifest.format == "arrow" else _hdf5_rows(path, manifest)
    if rows != info.num_rows:
        raise ShardError(f"{name}: {rows} rows, manifest says {info.num_rows}")
    if not full:
        return
    if sha256_file(path) != info.sha256:
        raise ShardError(f"{name}: sha256 mismatch (corrupt shard)")
    data = read_shard(path)
    if not np.array_equal(data.ids, np.arange(info.first_id, info.first_id + info.num_rows)):
        raise ShardError(f"{name}: ids are not unique and contiguous from {info.first_id}")
    start = 0
    for block in data.vector_blocks:  # one batch at a time: the vectors are never joined
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            bad = start + int(np.flatnonzero(~finite)[0])
            raise ShardError(f"{name}: NaN or Inf vector (id {int(data.ids[bad])})")
        start += len(block)
    lengths = data.lengths
    if info.num_tokens and int(lengths.sum()) != info.num_tokens:
        raise ShardError(f"{name}: {int(lengths.sum())} tokens, manifest says {info.num_tokens}")
    if len(lengths) and (lengths.min() < 1 or lengths.max() > manifest.max_length):
        raise ShardError(f"{name}: a token sequence is empty or longer than {manifest.max_length}")
    values = data.token_values
    if vocab_rows and len(values) and (values.min() < 0 or values.max() >= vocab_rows):
        raise ShardError(f"{name}: token ids outside the teacher vocabulary [0, {vocab_rows})")


def _check_manifest(manifest: Manifest) -> None:
    if manifest.format not in FORMATS or manifest.dtype not in DTYPES or manifest.dim < 1:
        raise ShardError(f"manifest: unsupported format {manifest.format!r}, dtype "
                         f"{manifest.dtype!r} or dimension {manifest.dim}")
    if not manifest.shards:
        raise ShardError("manifest lists no shards")
    if sum(s.num_bytes for s in manifest.shards) != manifest.num_bytes:
        raise ShardError("manifest: shard sizes do not add up to num_bytes")


def _check_sidecars(shards: ShardDirectory, full: bool) -> int:
    """Tokenizer and embedding matrix; returns the number of embedding rows (the vocabulary)."""
    tokenizer = shards.tokenizer_dir / TOKENIZER_FILE
    if not tokenizer.is_file():
        raise ShardError(f"{tokenizer}: tokenizer files missing")
    if full:
        try:
            json.loads(tokenizer.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ShardError(f"{tokenizer}: not valid JSON (corrupt tokenizer)") from None
    path = shards.embeddings_path
    matrix = _load_array(path, "embedding matrix", "missing")
    manifest = shards.manifest
    if matrix.ndim != 2 or matrix.dtype != np.float32 or (
            manifest.embedding_dim and matrix.shape[1] != manifest.embedding_dim):
        raise ShardError(f"{path}: shape {matrix.shape} {matrix.dtype}, expected (V, "
                         f"{manifest.embedding_dim}) float32")
    if full and not np.isfinite(matrix).all():
        raise ShardError(f"{path}: NaN or Inf in the embedding matrix")
    if manifest.contextual_file:
        _check_contextual(shards.path / manifest.contextual_file, manifest, int(matrix.shape[0]), full)
    return int(matrix.shape[0])


def _load_array(path: Path, what: str, missing: str = "listed in the manifest but missing") -> np.ndarray:
    """A memory-mapped ``.npy`` sidecar; ShardError naming it when it is missing or unreadable."""
    if not path.is_file():
        raise ShardError(f"{path}: {what} {missing}")
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise ShardError(f"{path}: unreadable {what} ({exc})") from None


def _check_sources(path: Path, manifest: Manifest, full: bool) -> None:
    """The source row of every row of an augmented directory: (N,) int64; in full, its sha256 and
    that every row points at an original (a row that is its own source) before it."""
    sources = _load_array(path, "augmentation sources")
    if sources.shape != (manifest.num_rows,) or sources.dtype != np.int64:
        raise ShardError(f"{path}: shape {sources.shape} {sources.dtype}, expected ({manifest.num_rows},) "
                         "int64")
    if not full:
        return
    if sha256_file(path) != manifest.augment.sha256:
        raise ShardError(f"{path}: sha256 mismatch (corrupt augmentation sources)")
    rows = np.arange(len(sources))
    if (sources > rows).any() or (sources < 0).any() or (sources[sources] != sources).any():
        raise ShardError(f"{path}: a row's source is not an original row before it")


def _check_contextual(path: Path, manifest: Manifest, vocab_rows: int, full: bool) -> None:
    """The contextual token matrix: present, (V, dim) float32 like the vocabulary; in full, its
    sha256 as recorded and finite."""
    matrix = _load_array(path, "contextual embedding matrix")
    if matrix.ndim != 2 or matrix.dtype != np.float32 or matrix.shape != (vocab_rows, manifest.dim):
        raise ShardError(f"{path}: shape {matrix.shape} {matrix.dtype}, expected ({vocab_rows}, "
                         f"{manifest.dim}) float32")
    if full and sha256_file(path) != manifest.contextual_sha256:
        raise ShardError(f"{path}: sha256 mismatch (corrupt contextual embedding matrix)")
    if full and not np.isfinite(matrix).all():
        raise ShardError(f"{path}: NaN or Inf in the embedding matrix")


def _arrow_rows(path: Path, manifest: Manifest) -> int:
    """Row count after checking the columns against the shard schema (memory-mapped, no copy)."""
    expected = arrow_schema(manifest.dim, manifest.dtype)
    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_file(source)
            schema = reader.schema
            rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    except (OSError, pa.ArrowException) as exc:
        raise ShardError(f"{path}: unreadable shard ({exc})") from None
    if schema.names != expected.names:
        raise ShardError(f"{path}: columns {schema.names}, expected {expected.names}")
    for field in expected:
        if schema.field(field.name).type != field.type:
            raise ShardError(f"{path}: column {field.name!r} is {schema.field(field.name).type}, "
                             f"expected {field.type} (dim {manifest.dim}, {manifest.dtype})")
    return rows


def _hdf5_rows(path: Path, manifest: Manifest) -> int:
    """Row count after checking the datasets' shapes and types."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            missing = [k for k in ("id", "text", "input_ids", "vector") if k not in h5]
            if missing:
                raise ShardError(f"{path}: datasets {missing} missing")
            rows = h5["id"].shape[0]
            checks = {
                "id": h5["id"].dtype == np.int64 and h5["id"].shape == (rows,),
                "text": h5["text"].shape == (rows,) and h5py.check_string_dtype(h5["text"].dtype),
                "input_ids": h5["input_ids"].shape == (rows,)
                and h5py.check_vlen_dtype(h5["input_ids"].dtype) == np.int32,
                "vector": h5["vector"].shape == (rows, manifest.dim)
                and h5["vector"].dtype == np.dtype(manifest.dtype),
            }
            shapes = {k: (h5[k].shape, h5[k].dtype) for k in checks}
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise ShardError(f"{path}: unreadable shard ({exc})") from None
    for key, ok in checks.items():
        if not ok:
            shape, dtype = shapes[key]
            raise ShardError(f"{path}: dataset {key!r} is {shape} {dtype}, does not match "
                             f"{rows} rows (dim {manifest.dim}, {manifest.dtype})")
    return rows
