"""Writing one shard atomically, in Arrow IPC or HDF5."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cache_tools.format import DTYPES, SHARD_METADATA_KEY, format_of
from core.io import atomic_output


def arrow_schema(dim: int, dtype: str, metadata: dict[str, Any] | None = None) -> pa.Schema:
    """The schema of every Arrow shard: id, text, input_ids, vector (fixed size ``dim``)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    value_type = pa.float16() if dtype == "float16" else pa.float32()
    schema = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
            pa.field("vector", pa.list_(value_type, dim), nullable=False),
        ]
    )
    if metadata is not None:
        schema = schema.with_metadata({SHARD_METADATA_KEY: json.dumps(metadata)})
    return schema


def write_shard(
    path: str | Path,
    ids: np.ndarray,
    texts: Sequence[str],
    input_ids: Sequence[Sequence[int]],
    vectors: np.ndarray,
    dtype: str,
    metadata: dict[str, Any],
) -> Path:
    """Write one shard atomically (``core.io.atomic_output``: temporary name, fsync, rename).

    ``vectors`` is (N, D); it is cast to ``dtype``. A crash at any point leaves either no file
    or the complete one under the final name.
    """
    path = Path(path)
    vectors = np.ascontiguousarray(vectors, dtype=np.dtype(dtype))
    n_rows, dim = vectors.shape
    if not (len(ids) == len(texts) == len(input_ids) == n_rows):
        raise ValueError("ids, texts, input_ids and vectors differ in length")
    with atomic_output(path) as tmp:
        if format_of(path) == "arrow":
            _write_arrow(tmp, ids, texts, input_ids, vectors, dtype, metadata)
        else:
            _write_hdf5(tmp, ids, texts, input_ids, vectors, metadata)
    return path


def _write_arrow(tmp, ids, texts, input_ids, vectors, dtype, metadata) -> None:
    schema = arrow_schema(vectors.shape[1], dtype, metadata)
    flat = pa.array(vectors.reshape(-1), type=schema.field("vector").type.value_type)
    table = pa.table(
        {
            "id": pa.array(np.asarray(ids, dtype=np.int64)),
            "text": pa.array(list(texts), type=pa.string()),
            "input_ids": pa.array([list(map(int, t)) for t in input_ids], type=pa.list_(pa.int32())),
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        },
        schema=schema,
    )
    # Uncompressed IPC file: readers memory-map it without copying.
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_table(table, max_chunksize=8192)


def _write_hdf5(tmp, ids, texts, input_ids, vectors, metadata) -> None:
    import h5py

    with h5py.File(tmp, "w") as h5:
        h5.attrs[SHARD_METADATA_KEY] = json.dumps(metadata)
        h5.create_dataset("id", data=np.asarray(ids, dtype=np.int64))
        h5.create_dataset("text", data=list(texts), dtype=h5py.string_dtype("utf-8"))
        ragged = np.empty(len(input_ids), dtype=object)
        ragged[:] = [np.asarray(tokens, dtype=np.int32) for tokens in input_ids]
        h5.create_dataset("input_ids", data=ragged, dtype=h5py.vlen_dtype(np.int32))
        h5.create_dataset("vector", data=vectors)
