"""Text -> truncated ids -> length-sorted padded batches -> vectors in input order; no torch.

The one implementation of how a student turns sentences into batches, shared by the torch student
(student/sentence.py) and the torch-free ONNX student (student/onnx.py), so both tokenize,
truncate, pad and restore the order identically. Imports only numpy and tokenizers; the batch
plan and the padding are core.batching's, the ones every encoder of the project uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tokenizers import Tokenizer

from core.batching import pad_ids, sorted_batches
from core.progress import bar
from student.tokenization import truncate_ids

# (ids (B, T) int64, lengths (B,) int64) -> vectors (B, D); both arrays are numpy.
Forward = Callable[[np.ndarray, np.ndarray], np.ndarray]


def token_ids(tokenizer: Tokenizer, texts: Sequence[str], max_length: int, suffix: int) -> list[list[int]]:
    """Token ids with special tokens, truncated to ``max_length`` like the training data.

    ``suffix`` is :func:`student.tokenization.suffix_length` of the tokenizer (closing special
    tokens kept on truncation); the tokenizer must have padding and truncation switched off.
    """
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=True)
    return [truncate_ids(e.ids, max_length, suffix) for e in encodings]


def encode_sorted(
    ids: Sequence[Sequence[int]],
    forward: Forward,
    dim: int,
    pad_id: int,
    batch_size: int = 64,
    show_progress_bar: bool = False,
) -> np.ndarray:
    """Vectors (N, dim) float32 in the order of ``ids``.

    Batches are formed over length-sorted sequences (longest first, ties in input order, so little
    padding) and each batch's vectors are put back in their rows.
    """
    plan = sorted_batches([len(t) for t in ids], batch_size)  # raises on batch_size < 1
    vectors = np.empty((len(ids), dim), dtype=np.float32)
    plan = bar(plan, desc="Encoding", unit="batch", enabled=show_progress_bar)
    for batch in plan:
        padded, lengths = pad_ids([ids[i] for i in batch], pad_id)
        vectors[batch] = forward(padded, lengths)
    return vectors
