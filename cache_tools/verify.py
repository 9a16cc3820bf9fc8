"""Checking a shard directory against its manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cache_tools.format import ShardError
from cache_tools.manifest import sha256_file
from cache_tools.reader import ShardDirectory, read_shard, shard_metadata


@dataclass
class VerifyReport:
    num_shards: int
    num_rows: int
    num_bytes: int
    checked_checksums: bool

    def summary(self) -> str:
        depth = "sha256, schema, values" if self.checked_checksums else "sizes, schema"
        return (
            f"OK: {self.num_shards} shards, {self.num_rows} rows, "
            f"{self.num_bytes / 1e6:.1f} MB ({depth} checked)"
        )


def verify_directory(directory: str | Path, full: bool = True) -> VerifyReport:
    """Raise ShardError naming the first problem; ``full=False`` skips hashing and value checks.

    The cheap part (manifest, files present, byte sizes, schema metadata, tokenizer files and
    embedding matrix present) is what ``train-student`` runs at start.
    """
    shards = ShardDirectory(directory)
    manifest = shards.manifest
    if not shards.tokenizer_dir.is_dir() or not any(shards.tokenizer_dir.iterdir()):
        raise ShardError(f"{shards.tokenizer_dir}: tokenizer files missing")
    if not shards.embeddings_path.is_file():
        raise ShardError(f"{shards.embeddings_path}: teacher embedding matrix missing")
    expected_id = 0
    for info, path in zip(manifest.shards, shards.shard_paths, strict=True):
        if not path.is_file():
            raise ShardError(f"{path.name}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != info.num_bytes:
            raise ShardError(f"{path.name}: {size} bytes, manifest says {info.num_bytes} (truncated?)")
        meta = shard_metadata(path)
        if meta.get("settings_fingerprint") != manifest.settings_fingerprint:
            raise ShardError(f"{path.name}: written by a different encode run (settings differ)")
        if info.first_id != expected_id:
            raise ShardError(f"{path.name}: first id {info.first_id}, expected {expected_id}")
        if full:
            if sha256_file(path) != info.sha256:
                raise ShardError(f"{path.name}: sha256 mismatch (corrupt shard)")
            data = read_shard(path)
            _check_values(path.name, data.ids, data.vectors, info.num_rows, expected_id, manifest)
        expected_id += info.num_rows
    if expected_id != manifest.num_rows:
        raise ShardError(f"manifest totals {manifest.num_rows} rows, shards hold {expected_id}")
    return VerifyReport(len(manifest.shards), manifest.num_rows, manifest.num_bytes, full)


def _check_values(name, ids, vectors, num_rows, first_id, manifest) -> None:
    if len(ids) != num_rows:
        raise ShardError(f"{name}: {len(ids)} rows, manifest says {num_rows}")
    if not np.array_equal(ids, np.arange(first_id, first_id + num_rows)):
        raise ShardError(f"{name}: ids are not unique and contiguous from {first_id}")
    if vectors.shape[1:] != (manifest.dim,):
        raise ShardError(f"{name}: vector dimension {vectors.shape[1:]}, manifest says {manifest.dim}")
    if vectors.dtype != np.dtype(manifest.dtype):
        raise ShardError(f"{name}: vector dtype {vectors.dtype}, manifest says {manifest.dtype}")
    if not np.isfinite(vectors).all():
        raise ShardError(f"{name}: NaN or Inf vectors")
