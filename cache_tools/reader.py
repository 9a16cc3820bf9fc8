"""Reading shards: memory-mapped Arrow or HDF5, as plain numpy arrays."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cache_tools.format import SHARD_METADATA_KEY, ShardError, format_of
from cache_tools.manifest import Manifest, read_manifest


@dataclass
class ShardData:
    """One shard's rows. Token ids are ragged, stored CSR-style: row i is
    ``token_values[token_offsets[i]:token_offsets[i + 1]]``."""

    ids: np.ndarray  # (N,) int64
    token_offsets: np.ndarray  # (N + 1,) int64
    token_values: np.ndarray  # (total_tokens,) int32
    vectors: np.ndarray  # (N, D) float16 / float32, possibly memory-mapped
    texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def tokens(self, row: int) -> np.ndarray:
        return self.token_values[self.token_offsets[row] : self.token_offsets[row + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.token_offsets)


def shard_metadata(path: str | Path) -> dict[str, Any]:
    """The self-description a shard carries in its schema metadata / attributes."""
    path = Path(path)
    try:
        if format_of(path) == "arrow":
            with pa.memory_map(str(path)) as source:
                meta = pa.ipc.open_file(source).schema.metadata or {}
            raw = meta.get(SHARD_METADATA_KEY.encode())
        else:
            import h5py

            with h5py.File(path, "r") as h5:
                raw = h5.attrs.get(SHARD_METADATA_KEY)
    except (OSError, pa.ArrowException) as exc:
        raise ShardError(f"{path}: unreadable shard ({exc})") from None
    if raw is None:
        raise ShardError(f"{path}: no '{SHARD_METADATA_KEY}' metadata; not a shard of this tool")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict):
        raise ShardError(f"{path}: corrupt '{SHARD_METADATA_KEY}' metadata")
    return meta


def read_shard(path: str | Path, with_text: bool = False) -> ShardData:
    """Read one shard. Arrow shards are memory-mapped (vectors are not copied)."""
    path = Path(path)
    try:
        if format_of(path) == "arrow":
            return _read_arrow(path, with_text)
        return _read_hdf5(path, with_text)
    except (OSError, pa.ArrowException, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ShardError(f"{path}: unreadable shard ({exc})") from None


def _read_arrow(path: Path, with_text: bool) -> ShardData:
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    columns = ["id", "input_ids", "vector"] + (["text"] if with_text else [])
    table = table.select(columns).combine_chunks()
    tokens = table.column("input_ids").chunk(0) if table.num_rows else pa.array([], pa.list_(pa.int32()))
    vector_col = table.column("vector")
    dim = vector_col.type.list_size
    vectors = (
        vector_col.chunk(0).flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        if table.num_rows
        else np.zeros((0, dim), dtype=np.float32)
    )
    offsets = tokens.offsets.to_numpy().astype(np.int64)
    values = tokens.flatten().to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return ShardData(
        ids=table.column("id").to_numpy(),
        token_offsets=offsets - offsets[0] if len(offsets) else np.zeros(1, np.int64),
        token_values=values,
        vectors=vectors,
        texts=table.column("text").to_pylist() if with_text else None,
    )


def _read_hdf5(path: Path, with_text: bool) -> ShardData:
    import h5py

    with h5py.File(path, "r") as h5:
        ids = h5["id"][:]
        rows = h5["input_ids"][:]
        vectors = h5["vector"][:]
        texts = [t.decode() if isinstance(t, bytes) else t for t in h5["text"][:]] if with_text else None
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.concatenate(rows).astype(np.int32) if len(rows) else np.zeros(0, np.int32)
    return ShardData(ids, offsets, values, vectors, texts)


class ShardDirectory:
    """A complete shard directory: its manifest, shard paths, tokenizer and embedding matrix."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory)
        self.manifest: Manifest = read_manifest(self.path)

    @property
    def shard_paths(self) -> list[Path]:
        return [self.path / shard.name for shard in self.manifest.shards]

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / self.manifest.tokenizer_dir

    @property
    def embeddings_path(self) -> Path:
        return self.path / self.manifest.embeddings_file

    def load_embeddings(self, kind: str = "input") -> np.ndarray:
        """A token-embedding matrix (memory-mapped float32): ``input``, the teacher's input word
        embeddings (V, D_emb), or ``contextual``, every token through the teacher alone (V, D)."""
        if kind == "contextual":
            if not self.manifest.contextual_file:
                raise ShardError(
                    f"{self.path}: no contextual token embeddings (written before they existed); "
                    "rerun the same `pipeline encode` command to add them, or pass "
                    "--init-embeddings teacher"
                )
            path = self.path / self.manifest.contextual_file
        else:
            path = self.embeddings_path
        if not path.is_file():
            raise ShardError(f"{path}: missing teacher embedding matrix")
        return np.load(path, mmap_mode="r")

    def source_ids(self) -> np.ndarray:
        """(N,) int64: the row each row was made from (``encode --augment``); else each its own."""
        if not self.manifest.augment:
            return np.arange(self.manifest.num_rows, dtype=np.int64)
        return np.load(self.path / self.manifest.augment["file"])

    @property
    def ood_directory(self) -> ShardDirectory | None:
        """The out-of-domain sentences encoded beside the corpus (``encode --ood-corpus``)."""
        if not self.manifest.ood:
            return None
        return ShardDirectory(self.path / self.manifest.ood["dir"])

    def read(self, index: int, with_text: bool = False) -> ShardData:
        return read_shard(self.shard_paths[index], with_text=with_text)

    def __iter__(self) -> Iterator[ShardData]:
        for index in range(len(self.manifest.shards)):
            yield self.read(index)

    def __len__(self) -> int:
        return self.manifest.num_rows
