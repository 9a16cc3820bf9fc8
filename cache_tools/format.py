"""The on-disk layout of a shard directory (no torch, no transformers here).

A shard directory looks like::

    shards/
      manifest.json                     written last: its presence means "complete"
      train-00000-of-00004.arrow        Arrow IPC files (or .h5), one row per sentence
      ...
      tokenizer/                        the teacher's tokenizer files (stage two tokenizes with them)
      teacher_input_embeddings.npy      the teacher's input word-embedding matrix, (V, D_emb) float32
      teacher_contextual_embeddings.npy each token through the teacher alone, (V, D) float32
      ood/                              optional out-of-domain sentences, a shard directory itself
      .work/                            plan and per-shard receipts of an unfinished run

Every row holds: ``id`` (int64, global and contiguous), ``text`` (str), ``input_ids``
(the teacher's token ids, int32, special tokens included) and ``vector`` (the teacher's sentence
vector, float16 or float32). Each shard carries its own description in the schema metadata
(Arrow) or the file attributes (HDF5) under the key ``sra_shard``.
"""

from __future__ import annotations

import re
from pathlib import Path

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TOKENIZER_DIR = "tokenizer"
EMBEDDINGS_FILE = "teacher_input_embeddings.npy"
# Every vocabulary token through the teacher on its own (model2vec's pass): the default student init.
CONTEXTUAL_FILE = "teacher_contextual_embeddings.npy"
# With `encode --augment N`: the source row of every row (int64); an original is its own source.
AUGMENT_FILE = "augment_sources.npy"
WORK_DIR = ".work"
OOD_DIR = "ood"
LOCK_NAME = ".lock"
SHARD_METADATA_KEY = "sra_shard"
SPLIT = "train"

FORMATS = {"arrow": ".arrow", "hdf5": ".h5"}
DTYPES = ("float16", "float32")

_SHARD_RE = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<total>\d{5})(?P<ext>\.arrow|\.h5)$")


class ShardError(Exception):
    """A shard directory that is missing, incomplete, corrupt or inconsistent."""


def shard_name(index: int, num_shards: int, fmt: str) -> str:
    """``train-00003-of-00016.arrow`` style name of shard ``index``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown shard format {fmt!r}; choose one of {sorted(FORMATS)}")
    return f"{SPLIT}-{index:05d}-of-{num_shards:05d}{FORMATS[fmt]}"


def parse_shard_name(name: str) -> tuple[int, int, str] | None:
    """(index, num_shards, format) of a shard file name, or None if it is not one."""
    match = _SHARD_RE.match(name)
    if match is None:
        return None
    fmt = "arrow" if match["ext"] == ".arrow" else "hdf5"
    return int(match["index"]), int(match["total"]), fmt


def format_of(path: str | Path) -> str:
    suffix = Path(path).suffix
    for fmt, ext in FORMATS.items():
        if suffix == ext:
            return fmt
    raise ShardError(f"{path}: not a shard file (expected .arrow or .h5)")
