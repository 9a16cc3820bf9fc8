"""Batches of ragged token id rows: the one length-sorted plan and the one padding.

Every encoder that turns many sentences into vectors (the teacher, the torch and ONNX students,
glue-eval's probes and predictions) batches sentences of similar length, so that little padding
is computed, and writes each batch's vectors back into the rows of its input. The batch
composition decides float results (a batch's padding width changes a kernel's sums), so it is
planned here once: longest first, ties in input order, either a fixed count per batch or a token
budget. No torch at import time: the torch-free ONNX student batches through this module too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

Rows = Sequence[Sequence[int] | np.ndarray]


def length_order(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """Row indices (N,) longest first, ties in input order: a stable argsort of -length.

    Longest first: an out-of-memory shows up at the first batch, not hours in."""
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")


def batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    """``order`` cut into consecutive batches of ``size`` indices (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"batch_size must be positive, got {size}")
    return [order[start : start + size] for start in range(0, len(order), size)]


def token_batches(order: np.ndarray, lengths: np.ndarray, max_tokens: int,
                  max_batch: int) -> list[np.ndarray]:
    """``order`` (longest first) cut into consecutive batches: a batch grows while
    ``count * length of its first row <= max_tokens`` and ``count <= max_batch``, and holds one
    row at least whatever the settings (they are validated by their config, e.g. EncodeConfig)."""
    result: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = max(1, min(max_batch, max_tokens // max(longest, 1)))
        result.append(order[start : start + size])
        start += size
    return result


def sorted_batches(lengths: Sequence[int] | np.ndarray, batch_size: int,
                   max_tokens: int | None = None) -> list[np.ndarray]:
    """Index batches over the rows longest first (:func:`length_order`): ``batch_size`` rows each,
    or with ``max_tokens`` a token budget per batch (:func:`token_batches`, at most
    ``batch_size`` rows). Writing each batch's results to ``out[batch]`` restores input order."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = length_order(lengths)
    if max_tokens is None:
        return batches(order, batch_size)
    return token_batches(order, lengths, max_tokens, batch_size)


def pad_ids(rows: Rows, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged ids -> padded ids (B, T) int64 and lengths (B,) int64, numpy (T >= 1, so that a
    batch of empty rows still has a time step)."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    ids = np.full((len(rows), max(int(lengths.max(initial=0)), 1)), pad_id, dtype=np.int64)
    for row, tokens in enumerate(rows):
        ids[row, : len(tokens)] = tokens
    return ids, lengths


def pad_batch(rows: Rows, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pad_ids` as CPU torch tensors: ids (B, T) int64, lengths (B,) int64 (torch is
    imported here, on first use, not with the module)."""
    import torch

    ids, lengths = pad_ids(rows, pad_id)
    return torch.from_numpy(ids), torch.from_numpy(lengths)
