"""core.batching: the one length-sorted batch plan and the one padding every encoder uses.

The plan decides float results (a batch's composition and padding width): its properties (order
restored, budget respected and greedy, ties in input order) and worked examples pin it down.
(That the copies it replaced gave the same batches was checked when they were merged, by
benchmarks/same_outputs.py over a whole pipeline run.)
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.batching import (
    batches,
    length_order,
    pad_batch,
    pad_ids,
    sorted_batches,
    token_batches,
)
from core.teacher import Teacher
from student.batching import encode_sorted
from tests.helpers import ROOT, subprocess_env

LENGTHS = st.lists(st.integers(min_value=0, max_value=40), max_size=60)


def rows_of(lengths: list[int]) -> list[list[int]]:
    """Distinct token ids per row (row i holds 100 * i + 1, ...), so a mix-up shows."""
    return [[100 * i + j + 1 for j in range(n)] for i, n in enumerate(lengths)]


def same_batches(ours: list[np.ndarray], theirs: list[np.ndarray]) -> bool:
    return len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs))


# -- the order ------------------------------------------------------------------------------
def test_length_order_is_longest_first_with_ties_in_input_order():
    assert length_order([2, 5, 2, 7, 5, 2]).tolist() == [3, 1, 4, 0, 2, 5]
    assert length_order([]).tolist() == []
    assert length_order(np.array([3, 3, 3], dtype=np.int32)).tolist() == [0, 1, 2]


@settings(max_examples=200, deadline=None)
@given(LENGTHS, st.integers(min_value=1, max_value=9))
def test_count_batches_are_full_and_restore_the_order(lengths, size):
    plan = sorted_batches(lengths, size)
    assert all(len(b) == size for b in plan[:-1]) and all(1 <= len(b) <= size for b in plan)
    flat = np.concatenate(plan) if plan else np.array([], dtype=np.int64)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    out = np.full(len(lengths), -1)
    for batch in plan:  # each batch's results written to its rows: the input order is back
        out[batch] = [lengths[i] for i in batch]
    assert out.tolist() == lengths


@settings(max_examples=200, deadline=None)
@given(LENGTHS, st.integers(min_value=1, max_value=120), st.integers(min_value=0, max_value=9))
def test_token_batches_respect_the_budget_greedily(lengths, max_tokens, max_batch):
    plan = sorted_batches(lengths, max_batch, max_tokens=max_tokens)
    flat = np.concatenate(plan) if plan else np.array([], dtype=np.int64)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    for number, batch in enumerate(plan):
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or (len(batch) <= max_batch and len(batch) * longest <= max_tokens)
        if number + 1 < len(plan):  # greedy: one more row would have broken a limit
            grown = len(batch) + 1
            assert grown > max(max_batch, 1) or grown * max(longest, 1) > max_tokens


def test_token_budget_worked_example():
    lengths = [3, 10, 4, 10, 1, 6]
    # longest first 1, 3, 5, 2, 0, 4; 20 tokens, 3 rows at most: 2 rows of 10, 3 rows of 6, the rest
    plan = sorted_batches(lengths, 3, max_tokens=20)
    assert [b.tolist() for b in plan] == [[1, 3], [5, 2, 0], [4]]
    order = length_order(lengths)
    assert same_batches(token_batches(order, np.asarray(lengths), 20, 3), plan)


def test_batches_cut_any_order_and_refuse_a_size_below_one():
    order = np.array([4, 0, 3, 1, 2])
    assert [b.tolist() for b in batches(order, 2)] == [[4, 0], [3, 1], [2]]
    assert batches(order[:0], 3) == []
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        batches(order, 0)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        sorted_batches([1, 2], 0)


# -- the padding ----------------------------------------------------------------------------
def test_pad_ids_pads_with_the_pad_id_as_int64():
    ids, lengths = pad_ids([[5, 6, 7], np.array([8], dtype=np.int32), []], pad_id=9)
    assert ids.dtype == np.int64 and lengths.dtype == np.int64
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9], [9, 9, 9]] and lengths.tolist() == [3, 1, 0]
    ids, lengths = pad_ids([[], []], pad_id=0)  # a time step even when every row is empty
    assert ids.shape == (2, 1) and lengths.tolist() == [0, 0]
    ids, lengths = pad_ids([], pad_id=0)
    assert ids.shape == (0, 1) and lengths.shape == (0,)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=20),
       st.integers(min_value=0, max_value=3))
def test_pad_batch_and_the_teacher_mask(lengths, pad_id):
    rows = [np.asarray(r, dtype=np.int64) + 10 for r in rows_of(lengths)]  # ids never the pad id
    ids, lens = pad_batch(rows, pad_id)
    assert ids.dtype == lens.dtype == torch.int64 and ids.device.type == "cpu"
    assert ids.shape == (len(rows), max(max(lengths), 1)) and lens.tolist() == lengths
    for row, padded, n in zip(rows, ids.tolist(), lengths, strict=True):
        assert padded[:n] == row.tolist() and set(padded[n:]) <= {pad_id}
    if max(lengths) > 0:  # the teacher's rows always hold their special tokens
        ours, mask = Teacher._pad(SimpleNamespace(pad_id=pad_id), [r.tolist() for r in rows])
        assert ours.dtype == mask.dtype == np.int64
        np.testing.assert_array_equal(ours, ids.numpy())
        assert mask.sum(axis=1).tolist() == lengths and (mask[:, :1] >= 0).all()
        np.testing.assert_array_equal(mask, (np.arange(ours.shape[1]) < lens.numpy()[:, None]))


# -- an encoder on top ----------------------------------------------------------------------
def test_encode_sorted_batches_by_length_and_restores_the_input_order():
    lengths = [2, 6, 1, 6, 3, 2, 5]
    seen: list[tuple[list[int], int]] = []

    def forward(ids: np.ndarray, lens: np.ndarray) -> np.ndarray:
        seen.append(((ids[:, 0] // 100).tolist(), ids.shape[1]))  # rows of the batch, its width
        assert ids.dtype == lens.dtype == np.int64
        return np.stack([ids[:, 0], lens], axis=1).astype(np.float32)  # (B, 2)

    vectors = encode_sorted(rows_of(lengths), forward, dim=2, pad_id=0, batch_size=3)
    assert seen == [([1, 3, 6], 6), ([4, 0, 5], 3), ([2], 1)]
    np.testing.assert_array_equal(vectors[:, 0], [100 * i + 1 for i in range(len(lengths))])
    np.testing.assert_array_equal(vectors[:, 1], lengths)
    assert encode_sorted([], forward, dim=2, pad_id=0).shape == (0, 2)


def test_batching_loads_without_torch():
    code = "import sys, core.batching, student.batching; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            check=True, env=subprocess_env())
    assert result.stdout.strip() == "False"
