"""Reading shards: memory-mapped Arrow (vectors never copied) or HDF5, as numpy arrays."""

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


class RowBlocks:
    """A read-only (N, D) array kept as consecutive row blocks, each a zero-copy view of a
    memory-mapped file: the vectors of an Arrow shard written in several record batches, whose
    buffers lie apart in the file. Indexing by rows (an int, a slice, an integer or boolean array)
    copies only the rows asked for; ``np.asarray`` joins the blocks (a copy of them all)."""

    ndim = 2

    def __init__(self, blocks: list[np.ndarray]):
        self.blocks = blocks
        self.starts = np.cumsum([0] + [len(block) for block in blocks])  # (len(blocks) + 1,)
        self.shape = (int(self.starts[-1]), *blocks[0].shape[1:])
        self.dtype = blocks[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(block.nbytes for block in self.blocks)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if copy is False:
            raise ValueError("vectors kept in several record batches cannot be joined without a copy")
        joined = np.concatenate(self.blocks)
        return joined if dtype is None else joined.astype(dtype, copy=False)

    def astype(self, dtype, copy: bool = True) -> np.ndarray:
        """The joined array in ``dtype`` (always a new array: the blocks cannot be joined in place)."""
        return np.asarray(self, dtype=dtype)

    def copy(self) -> np.ndarray:
        return np.asarray(self)

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in self.blocks:
            yield from block

    def __getitem__(self, key):
        if isinstance(key, tuple):  # rows first, then the other axes as numpy takes them
            picked = self[key[0]]
            leading = picked.ndim - (len(self.shape) - 1)
            return picked[(slice(None),) * leading + key[1:]]
        if isinstance(key, (int, np.integer)):
            row = int(key) + len(self) if key < 0 else int(key)
            if not 0 <= row < len(self):
                raise IndexError(f"row {int(key)} out of range for {len(self)} rows")
            block = int(np.searchsorted(self.starts, row, side="right")) - 1
            return self.blocks[block][row - self.starts[block]]
        rows = np.arange(len(self))[key]  # slices, boolean masks and negative rows as numpy does
        flat = rows.reshape(-1)
        out = np.empty((len(flat), *self.shape[1:]), dtype=self.dtype)
        block_of = np.searchsorted(self.starts, flat, side="right") - 1
        for block in np.unique(block_of):
            where = block_of == block
            out[where] = self.blocks[block][flat[where] - self.starts[block]]
        return out.reshape(*rows.shape, *self.shape[1:])


@dataclass
class ShardData:
    """One shard's rows. Token ids are ragged, stored CSR-style: row i is
    ``token_values[token_offsets[i]:token_offsets[i + 1]]``.

    Read from an Arrow shard, ``vectors`` are never copied: a view of the memory-mapped file when
    the shard holds one record batch, else a :class:`RowBlocks` of one view per batch (what
    ``encode`` writes: batches of 8192 rows). ``ids`` and ``token_values`` are views of the file
    for one batch, and joined (copied: 8 bytes a row and 4 a token) for several. HDF5 shards are
    read into memory.
    """

    ids: np.ndarray  # (N,) int64
    token_offsets: np.ndarray  # (N + 1,) int64
    token_values: np.ndarray  # (total_tokens,) int32
    vectors: np.ndarray | RowBlocks  # (N, D) float16 / float32
    texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def tokens(self, row: int) -> np.ndarray:
        return self.token_values[self.token_offsets[row] : self.token_offsets[row + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.token_offsets)

    @property
    def vector_blocks(self) -> list[np.ndarray]:
        """The vectors as consecutive (rows, D) arrays, without joining them."""
        return self.vectors.blocks if isinstance(self.vectors, RowBlocks) else [self.vectors]


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
    """Read one shard. Arrow shards are memory-mapped: their vectors are never copied (see
    :class:`ShardData`)."""
    path = Path(path)
    try:
        if format_of(path) == "arrow":
            return _read_arrow(path, with_text)
        return _read_hdf5(path, with_text)
    except (OSError, pa.ArrowException, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ShardError(f"{path}: unreadable shard ({exc})") from None


def read_lengths(path: str | Path) -> np.ndarray:
    """(N,) int64: the token count of every row of one shard, from the offsets of its
    ``input_ids`` column alone (an Arrow shard's other columns are not touched; nothing is
    hashed or checked beyond what reading needs)."""
    path = Path(path)
    try:
        if format_of(path) != "arrow":
            return read_shard(path).lengths
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_file(source)
            parts = [np.diff(reader.get_batch(i).column("input_ids").offsets.to_numpy())
                     for i in range(reader.num_record_batches)]
    except (OSError, pa.ArrowException, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ShardError(f"{path}: unreadable shard ({exc})") from None
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _joined(parts: list[np.ndarray], dtype) -> np.ndarray:
    """One array of the parts: the part itself (no copy) when there is only one."""
    if len(parts) == 1:
        return parts[0].astype(dtype, copy=False)
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def _read_arrow(path: Path, with_text: bool) -> ShardData:
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        # The buffers stay valid after the file is closed: they hold the memory map.
        batches = [b for b in (reader.get_batch(i) for i in range(reader.num_record_batches))
                   if b.num_rows]
        schema = reader.schema
    dim = schema.field("vector").type.list_size
    offsets, values, blocks = [np.zeros(1, np.int64)], [], []
    for batch in batches:
        tokens = batch.column("input_ids")
        starts = tokens.offsets.to_numpy().astype(np.int64)
        offsets.append(starts[1:] - starts[0] + offsets[-1][-1])
        values.append(tokens.flatten().to_numpy(zero_copy_only=False))
        blocks.append(batch.column("vector").flatten().to_numpy(zero_copy_only=False).reshape(-1, dim))
    if not blocks:
        vectors: np.ndarray | RowBlocks = np.zeros((0, dim), dtype=np.float32)
    else:
        vectors = blocks[0] if len(blocks) == 1 else RowBlocks(blocks)
    return ShardData(
        ids=_joined([batch.column("id").to_numpy() for batch in batches], np.int64),
        token_offsets=np.concatenate(offsets),
        token_values=_joined(values, np.int32),
        vectors=vectors,
        texts=[t for batch in batches for t in batch.column("text").to_pylist()] if with_text else None,
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
        if self.manifest.augment is None:
            return np.arange(self.manifest.num_rows, dtype=np.int64)
        return np.load(self.path / self.manifest.augment.file)

    @property
    def ood_directory(self) -> ShardDirectory | None:
        """The out-of-domain sentences encoded beside the corpus (``encode --ood-corpus``)."""
        if self.manifest.ood is None:
            return None
        return ShardDirectory(self.path / self.manifest.ood.dir)

    def read(self, index: int, with_text: bool = False) -> ShardData:
        return read_shard(self.shard_paths[index], with_text=with_text)

    def __iter__(self) -> Iterator[ShardData]:
        for index in range(len(self.manifest.shards)):
            yield self.read(index)

    def __len__(self) -> int:
        return self.manifest.num_rows
