"""Training data from shard directories: checks, held-out split, a deterministic batch plan.

The order of an epoch is a pure function of (seed, epoch): shards in a random order, rows mixed by
a shuffle buffer, then batched by similar length. A resumed run rebuilds the same plan and skips
the batches already done, so it sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cache_tools.format import ShardError
from cache_tools.manifest import Manifest
from cache_tools.reader import ShardData, ShardDirectory, read_lengths, read_shard
from cache_tools.verify import verify_directory, verify_shard
from core.batching import pad_batch
from core.errors import UserError
from core.teacher import TeacherSpec
from student.tokenization import load_tokenizer, suffix_length, truncate_ids

# Manifest fields that must agree between shard directories trained on together: the same
# teacher, tokenizer and pooling give vectors in one space.
# Consecutive (shuffled) rows sorted by length together: one bucket is this many batches.
BUCKET_BATCHES = 64
# Decoded shards kept in memory; the shuffle buffer only spans a few shards at a time.
MAX_OPEN_SHARDS = 4


def splitmix64(values: np.ndarray) -> np.ndarray:
    """A fixed 64-bit mix of integer ids (stable across runs, platforms and Python versions)."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def check_same_teacher(directories: list[ShardDirectory]) -> Manifest:
    """The first manifest, after refusing directories whose vectors live in different spaces."""
    first = directories[0].manifest
    for other in directories[1:]:
        for key in TeacherSpec.SPACE:
            if getattr(other.manifest, key) != getattr(first, key):
                raise ShardError(
                    f"{other.path} and {directories[0].path} come from different teachers or "
                    f"settings ({key}: {getattr(other.manifest, key)!r} vs {getattr(first, key)!r}); "
                    "train on shards of one teacher only"
                )
    return first


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) int64, padded with the pad id
    lengths: torch.Tensor  # (B,) int64
    targets: torch.Tensor  # (B, D) float32 teacher vectors


class ShardCorpus:
    """All rows of one or more shard directories, addressed by a global row number."""

    def __init__(self, paths: list[str | Path], verify: str = "cheap"):
        resolved = [Path(path).resolve() for path in paths]
        if len(set(resolved)) != len(resolved):
            raise UserError("the same --shards directory is given twice")
        for path in paths:
            # Cheap check (sizes, schema, files present) always; --verify full adds hashes and values.
            verify_directory(path, full=verify == "full")
        self.directories = [ShardDirectory(path) for path in paths]
        self.manifest = check_same_teacher(self.directories)
        self.tokenizer_dir = self.directories[0].tokenizer_dir
        self.tokenizer = load_tokenizer(self.tokenizer_dir)
        self.suffix = suffix_length(self.tokenizer)
        self._open: OrderedDict[Path, ShardData] = OrderedDict()

        shards = [(d, info) for d in self.directories for info in d.manifest.shards]
        self.shard_paths = [d.path / info.name for d, info in shards]
        self._entries = {d.path / info.name: (info, d.manifest) for d, info in shards}
        self._vocab_rows = self.directories[0].load_embeddings().shape[0]
        # verify_directory(full=True) has checked every shard in full already.
        self._checked: set[Path] = set(self.shard_paths) if verify == "full" else set()
        sizes = np.array([info.num_rows for _, info in shards], dtype=np.int64)
        self.shard_starts = np.concatenate([[0], np.cumsum(sizes)])  # global row of each shard
        self.num_rows = int(self.shard_starts[-1])
        # The global row each row was made from (``encode --augment``): held-out splits go by it.
        offsets = np.cumsum([0] + [d.manifest.num_rows for d in self.directories])
        self.source_ids = np.concatenate([d.source_ids() + offset
                                          for d, offset in zip(self.directories, offsets)])
        # Token counts from each shard's offsets alone: no hashing here, so --verify cheap stays
        # cheap; a shard is checked in full when its rows are first read (_shard).
        self.lengths = np.concatenate(
            [read_lengths(p) for p in self.shard_paths] or [np.zeros(0, np.int64)]
        )

    def _shard(self, path: Path) -> ShardData:
        """A decoded shard; the first time it is opened, it is checked in full (sha256, ids,
        finite vectors, token ids) so that no damaged target reaches the student."""
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path]
        if path not in self._checked:
            info, manifest = self._entries[path]
            verify_shard(path, info, manifest, full=True, vocab_rows=self._vocab_rows)
            self._checked.add(path)
        data = read_shard(path)
        self._open[path] = data
        if len(self._open) > MAX_OPEN_SHARDS:
            self._open.popitem(last=False)
        return data

    def rows(self, rows: np.ndarray, max_length: int, pad_id: int) -> Batch:
        """Token ids (stored teacher ids, truncated like ``SentenceStudent.tokenize``) and vectors."""
        shard_of = np.searchsorted(self.shard_starts, rows, side="right") - 1
        tokens: list[np.ndarray] = [np.zeros(0, np.int32)] * len(rows)
        targets = np.empty((len(rows), self.manifest.dim), dtype=np.float32)
        for shard in np.unique(shard_of):
            where = np.flatnonzero(shard_of == shard)
            data = self._shard(self.shard_paths[shard])
            local = rows[where] - self.shard_starts[shard]
            targets[where] = data.vectors[local]
            for position, row in zip(where, local):
                tokens[position] = truncate_ids(data.tokens(row), max_length, self.suffix)
        input_ids, lengths = pad_batch(tokens, pad_id)
        return Batch(input_ids, lengths, torch.from_numpy(targets))


@dataclass
class Split:
    train: np.ndarray  # global rows used for training
    validation: np.ndarray  # held-out rows scored at each evaluation (at most val_size)


def heldout_split(num_rows: int, fraction: float, val_size: int,
                  source_ids: np.ndarray | None = None) -> Split:
    """Held-out rows are those whose hashed source id (the global id of the sentence a row was
    made from; its own id without ``encode --augment``) falls below ``fraction``: a held-out
    sentence and all its variants are never trained on. The validation sample is the ``val_size``
    held-out original sentences with the smallest hashes (spread over the corpus)."""
    rows = np.arange(num_rows, dtype=np.int64)
    sources = rows if source_ids is None else np.asarray(source_ids, dtype=np.int64)
    hashes = splitmix64(sources)
    threshold = np.uint64(int(fraction * 2.0**64))
    heldout = hashes < threshold
    candidates = rows[heldout & (sources == rows)]  # originals only: variants are not sentences
    validation = candidates[np.argsort(hashes[candidates], kind="stable")[:val_size]]
    return Split(train=rows[~heldout], validation=np.sort(validation))


def epoch_plan(
    train_rows: np.ndarray,
    lengths: np.ndarray,
    shard_starts: np.ndarray,
    batch_size: int,
    shuffle_buffer: int,
    seed: int,
    epoch: int,
) -> list[np.ndarray]:
    """The batches (arrays of global rows) of one epoch; depends on nothing but its arguments."""
    rng = np.random.default_rng([seed, epoch])
    shard_of = np.searchsorted(shard_starts, train_rows, side="right") - 1
    shard_order = rng.permutation(len(shard_starts) - 1)
    rank = np.empty_like(shard_order)
    rank[shard_order] = np.arange(len(shard_order))
    stream = train_rows[np.argsort(rank[shard_of], kind="stable")]  # shard by shard, shuffled order
    # A shuffle buffer of k rows moves each row by up to ~k places: sort positions plus U(0, k).
    keys = np.arange(len(stream)) + rng.uniform(0, shuffle_buffer, len(stream))
    stream = stream[np.argsort(keys, kind="stable")]
    batches: list[np.ndarray] = []
    bucket = batch_size * BUCKET_BATCHES
    for start in range(0, len(stream), bucket):
        chunk = stream[start : start + bucket]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]  # similar lengths together
        cut = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        batches.extend(cut[i] for i in rng.permutation(len(cut)))
    return batches


def batches_per_epoch(num_train: int, batch_size: int) -> int:
    """Equals ``len(epoch_plan(...))``: buckets are whole batches, so only the last is short."""
    return -(-num_train // batch_size)
