"""cache_tools.reader: an Arrow shard's vectors are read without a copy, in one record batch or
several (encode writes batches of 8192 rows); RowBlocks indexes like the joined array."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cache_tools.reader import RowBlocks, read_lengths, read_shard
from cache_tools.verify import verify_directory
from cache_tools.writer import write_shard
from student.data import ShardCorpus
from tests.helpers import copy_shards, rewrite_shard

DIM = 256
SLACK = 256 * 1024  # Python objects tracemalloc also counts (the arrays are numpy's)


def _write(path: Path, rows: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """A shard of ``rows`` random rows through the writer encode uses: (vectors, token ids)."""
    rng = np.random.default_rng(seed)
    tokens = [rng.integers(0, 1000, rng.integers(3, 12)).astype(np.int32) for _ in range(rows)]
    vectors = rng.standard_normal((rows, DIM)).astype(np.float16)
    write_shard(path, np.arange(rows), ["x"] * rows, tokens, vectors, "float16", {"index": 0})
    return vectors, tokens


def _record_batches(path: Path) -> int:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).num_record_batches


def _mapped_from(array: np.ndarray) -> str | None:
    """The file whose memory map holds ``array``'s data (None for anonymous memory; Linux)."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return fields[5] if len(fields) > 5 and fields[5].startswith("/") else None
    return None


def _read_measured(path: Path):
    """read_shard(path) and the bytes it allocated: (data, Arrow memory pool bytes, traced peak)."""
    read_shard(path)  # pyarrow's lazily imported parts, outside the measurement
    pool = pa.total_allocated_bytes()
    tracemalloc.start()
    try:
        data = read_shard(path)
        numpy_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return data, pa.total_allocated_bytes() - pool, numpy_peak


needs_proc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")


@needs_proc
def test_one_record_batch_is_read_without_any_copy(tmp_path):
    path = tmp_path / "train-00000-of-00001.arrow"
    vectors, tokens = _write(path, 3000)
    assert _record_batches(path) == 1
    data, pool_bytes, numpy_peak = _read_measured(path)
    assert isinstance(data.vectors, np.ndarray) and not data.vectors.flags.owndata
    for column in (data.vectors, data.ids, data.token_values):
        assert _mapped_from(column) == str(path)  # views of the memory-mapped file
    assert pool_bytes == 0 and numpy_peak < 8 * (len(data) + 1) + SLACK  # the int64 offsets only
    np.testing.assert_array_equal(data.vectors, vectors)
    assert [list(data.tokens(i)) for i in (0, 2999)] == [list(tokens[0]), list(tokens[2999])]


@needs_proc
def test_several_record_batches_keep_their_vectors_in_the_file(tmp_path):
    """What encode writes for 20,000-row shards: 3 batches. The vectors stay one view per batch
    (RowBlocks); ids and token ids are joined, a copy of 8 bytes a row and 4 a token."""
    path = tmp_path / "train-00000-of-00001.arrow"
    vectors, tokens = _write(path, 8192 + 1000)
    assert _record_batches(path) == 2
    data, pool_bytes, numpy_peak = _read_measured(path)
    assert isinstance(data.vectors, RowBlocks) and [len(b) for b in data.vectors.blocks] == [8192, 1000]
    for block in data.vectors.blocks:
        assert not block.flags.owndata and _mapped_from(block) == str(path)
    joined = 8 * len(data) + 4 * len(data.token_values) + 8 * (len(data) + 1)
    assert pool_bytes == 0 and numpy_peak < joined + SLACK < 0.3 * data.vectors.nbytes
    np.testing.assert_array_equal(np.asarray(data.vectors), vectors)
    np.testing.assert_array_equal(data.ids, np.arange(len(vectors)))
    for row in (0, 8191, 8192, 9191):
        np.testing.assert_array_equal(data.tokens(row), tokens[row])


def test_row_blocks_index_like_the_joined_array():
    rng = np.random.default_rng(0)
    joined = rng.standard_normal((10, 3)).astype(np.float16)
    blocks = RowBlocks([joined[:4], joined[4:5], joined[5:]])
    assert blocks.shape == (10, 3) and len(blocks) == 10 and blocks.dtype == np.float16
    assert blocks.nbytes == joined.nbytes and blocks.ndim == 2
    for key in (0, 4, 9, -1, -10, np.int64(5), slice(None), slice(2, 8), slice(None, None, -3),
                np.array([9, 0, 4, 4, 5]), [3, 7], np.arange(10) % 3 == 0, np.array([[1, 2], [8, 9]]),
                (np.array([1, 6]), 2), (slice(3, 6), slice(1, None)), (7, 0)):
        np.testing.assert_array_equal(blocks[key], joined[key], err_msg=str(key))
    np.testing.assert_array_equal(np.asarray(blocks), joined)
    assert np.asarray(blocks, dtype=np.float32).dtype == np.float32
    np.testing.assert_array_equal(blocks.astype(np.float32), joined.astype(np.float32))
    first, copied = joined[0].copy(), blocks.copy()
    copied[0] = 0  # a new array: the blocks are untouched
    np.testing.assert_array_equal(blocks[0], first)
    np.testing.assert_array_equal(np.concatenate([blocks, blocks]), np.concatenate([joined, joined]))
    np.testing.assert_array_equal(np.stack(list(blocks)), joined)
    for bad in (10, -11):
        with pytest.raises(IndexError, match="out of range"):
            blocks[bad]
    with pytest.raises(IndexError):
        blocks[np.array([10])]
    with pytest.raises(ValueError, match="without a copy"):
        np.array(blocks, copy=False)


def test_lengths_come_from_the_offsets_alone(tmp_path, tiny_shards):
    path = tmp_path / "train-00000-of-00001.arrow"
    _, tokens = _write(path, 8192 + 10)
    np.testing.assert_array_equal(read_lengths(path), [len(t) for t in tokens])
    h5 = tmp_path / "train-00000-of-00001.h5"
    write_shard(h5, np.arange(3), ["a", "b", "c"], [[2, 5, 3], [2, 3], [2, 7, 8, 3]],
                np.zeros((3, 4)), "float32", {"index": 0})
    np.testing.assert_array_equal(read_lengths(h5), [3, 2, 4])


def test_shards_in_several_record_batches_give_the_same_training_rows(tmp_path, tiny_shards):
    """The tiny shards rewritten in record batches of 16 rows: verified in full, and every row a
    ShardCorpus serves (token ids, lengths, target vectors) is the same."""
    batched = copy_shards(tiny_shards, tmp_path / "batched")
    for index in range(4):
        rewrite_shard(batched, index, rows_per_batch=16)
    assert _record_batches(batched / "train-00000-of-00004.arrow") == 4
    verify_directory(batched, full=True)
    one, many = ShardCorpus([tiny_shards], "full"), ShardCorpus([batched], "cheap")
    np.testing.assert_array_equal(many.lengths, one.lengths)
    rows = np.random.default_rng(0).permutation(one.num_rows)
    for part in np.array_split(rows, 5):
        got, want = many.rows(part, 64, 0), one.rows(part, 64, 0)
        for name in ("input_ids", "lengths", "targets"):
            assert getattr(got, name).equal(getattr(want, name)), name
