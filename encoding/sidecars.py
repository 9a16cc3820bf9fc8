"""The files beside the shards that stand in for the teacher in stage two: its tokenizer, its
input and contextual token-embedding matrices, and (``--augment``) every row's source row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from cache_tools.format import AUGMENT_FILE, CONTEXTUAL_FILE, EMBEDDINGS_FILE, TOKENIZER_DIR
from cache_tools.manifest import AugmentRecord
from core.io import atomic_output, sha256_file
from core.progress import bar
from core.teacher import Teacher


def write_sidecars(out: Path, teacher: Teacher, contextual: bool = True,
                   max_tokens: int | None = None, progress: bool = True) -> None:
    """Tokenizer files and the embedding matrices (input; contextual unless ``contextual`` is
    False): what stage two needs instead of the teacher. A rerun of encode on a directory written
    before the contextual matrix existed adds it. ``max_tokens`` and ``progress`` as for the
    shards: the contextual pass runs the whole vocabulary through the teacher (30k tokens; minutes
    on a CPU for a BERT-base-size teacher), so it is batched and shown like them."""
    tokenizer_dir = out / TOKENIZER_DIR
    if not (tokenizer_dir / "tokenizer.json").is_file():
        with atomic_output(tokenizer_dir, directory=True) as tmp:
            teacher.save_tokenizer(tmp)
    if not (out / EMBEDDINGS_FILE).is_file():
        _save_npy(out / EMBEDDINGS_FILE, teacher.input_embeddings())
    if contextual and not (out / CONTEXTUAL_FILE).is_file():
        _save_npy(out / CONTEXTUAL_FILE, _contextual(teacher, max_tokens, progress))


def _contextual(teacher: Teacher, max_tokens: int | None, progress: bool) -> np.ndarray:
    bar_options = {"desc": "vocabulary pass", "unit": " tok", "enabled": progress}
    with bar(total=teacher.vocab_rows, **bar_options) as tokens:
        return teacher.contextual_embeddings(max_tokens, lambda rows, _: tokens.update(rows))


def write_sources(out: Path, plan: pa.Table, variants: int) -> AugmentRecord:
    """The source row of every row (``--augment``), beside the shards; its manifest entry."""
    sources = plan.column("source_id").to_numpy().astype(np.int64)
    _save_npy(out / AUGMENT_FILE, sources)
    return AugmentRecord(variants=variants, file=AUGMENT_FILE,
                         sha256=sha256_file(out / AUGMENT_FILE))


def _save_npy(path: Path, matrix: np.ndarray) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:  # a handle: np.save adds no suffix
        np.save(handle, matrix)
