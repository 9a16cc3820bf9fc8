"""The sharded map shared by encode and glue-eval's logit cache: rank split, receipts, resume."""

from __future__ import annotations

import numpy as np
import pytest

from cache_tools.reader import read_shard
from cache_tools.sharded_map import PreparedShard, ShardedMap
from core.distributed import DistContext
from core.errors import UserError

TEXTS = [f"sentence number {i}" for i in range(10)]


def prepare(lo: int, hi: int) -> PreparedShard:
    return PreparedShard(TEXTS[lo:hi], [[101, i, 102] for i in range(lo, hi)])


def compute(index: int, prepared: PreparedShard) -> np.ndarray:
    ids = np.asarray([row[1] for row in prepared.token_ids], dtype=np.float32)
    return np.stack([ids, ids * 2], axis=1)  # (rows, 2)


def _rows(shards: ShardedMap) -> tuple[np.ndarray, np.ndarray]:
    data = [read_shard(shards.out / info.name) for info in shards.receipts()]
    return np.concatenate([d.ids for d in data]), np.concatenate([d.vectors for d in data])


def test_ranks_write_disjoint_shards_that_equal_one_process(tmp_path):
    single = ShardedMap(tmp_path / "one", 10, 3, "arrow", "float32")
    assert single.num_shards == 4 and single.bounds(3) == (9, 10)
    assert single.run(DistContext(), prepare, compute, {"kind": "test"}) == 10

    split = ShardedMap(tmp_path / "two", 10, 3, "arrow", "float32")
    ranks = [DistContext(rank=r, world_size=2) for r in (0, 1)]
    assert [split.mine(ctx) for ctx in ranks] == [[0, 2], [1, 3]]
    assert [split.run(ctx, prepare, compute, {"kind": "test"}) for ctx in ranks] == [6, 4]

    for got, want in zip(_rows(split), _rows(single), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_rows(single)[0], np.arange(10))


def test_a_crash_loses_only_the_unfinished_shard(tmp_path):
    shards = ShardedMap(tmp_path / "out", 10, 3, "arrow", "float32")
    calls = []

    def crash_on_third(index, prepared):
        calls.append(index)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return compute(index, prepared)

    with pytest.raises(RuntimeError):
        shards.run(DistContext(), prepare, crash_on_third, {})
    with pytest.raises(UserError, match="train-00002-of-00004.arrow, train-00003-of-00004.arrow"):
        shards.receipts()
    assert shards.todo(DistContext()) == [2, 3]

    calls.clear()
    assert shards.run(DistContext(), prepare, lambda i, p: calls.append(i) or compute(i, p), {}) == 4
    assert calls == [2, 3]
    np.testing.assert_array_equal(_rows(shards)[0], np.arange(10))


def test_a_shard_changed_after_its_receipt_is_redone(tmp_path):
    shards = ShardedMap(tmp_path / "out", 10, 5, "arrow", "float32")
    shards.run(DistContext(), prepare, compute, {})
    with open(tmp_path / "out" / shards.name(1), "ab") as handle:
        handle.write(b"torn")
    assert shards.todo(DistContext()) == [1]


def test_compute_must_return_one_vector_per_row(tmp_path):
    shards = ShardedMap(tmp_path / "out", 4, 4, "arrow", "float32")
    with pytest.raises(ValueError, match="3 vectors for 4 rows"):
        shards.run(DistContext(), prepare, lambda i, p: compute(i, p)[:3], {})
    assert not any(p.suffix == ".arrow" for p in (tmp_path / "out").iterdir())


def test_receipts_of_another_shard_size_are_not_reused(tmp_path):
    """12 rows in shards of 5 and of 4 share the names ``train-0000i-of-00003``."""
    texts = TEXTS + ["eleven", "twelve"]

    def prepare12(lo, hi):
        return PreparedShard(texts[lo:hi], [[101, i, 102] for i in range(lo, hi)])

    fives = ShardedMap(tmp_path / "out", 12, 5, "arrow", "float32")
    fives.run(DistContext(rank=0, world_size=3), prepare12, compute, {})  # shard 0 only
    fours = ShardedMap(tmp_path / "out", 12, 4, "arrow", "float32")
    assert fours.name(0) == fives.name(0) and fours.todo(DistContext()) == [0, 1, 2]
    fours.run(DistContext(), prepare12, compute, {})
    np.testing.assert_array_equal(_rows(fours)[0], np.arange(12))
