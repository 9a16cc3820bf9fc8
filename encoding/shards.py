"""Step two, the shards: this rank's missing shards tokenized, encoded by the teacher and written
(``cache_tools.sharded_map`` cuts the rows, writes the files and their receipts)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from cache_tools.sharded_map import PreparedShard, ShardedMap
from core.distributed import DistContext
from core.errors import UserError
from core.progress import bar
from core.teacher import Teacher
from encoding.config import EncodeConfig


@dataclass
class ShardPass:
    """What this rank's pass over its missing shards did."""

    rows: int
    tokens: int
    seconds: float  # the teacher loop alone


def encode_shards(config: EncodeConfig, ctx: DistContext, teacher: Teacher, texts: pa.ChunkedArray,
                  shards: ShardedMap, metadata: dict[str, Any]) -> ShardPass:
    """Encode this rank's shards that have no receipt yet; ``texts`` is the plan's text column,
    ``metadata`` goes into every shard's self-description."""
    todo = shards.todo(ctx)
    my_rows = shards.rows_of(shards.mine(ctx))

    def prepare(lo: int, hi: int) -> PreparedShard:
        shard_text = texts.slice(lo, hi - lo).to_pylist()
        return PreparedShard(shard_text, teacher.tokenize(shard_text))

    def compute(index: int, prepared: PreparedShard) -> np.ndarray:
        vectors = teacher.encode_tokenized(prepared.token_ids, config.batch_size,
                                           config.max_tokens, on_batch=progress.update)
        _check_finite(vectors, config.dtype, shards.bounds(index)[0], shards.name(index))
        return vectors

    progress = _Progress(my_rows, my_rows - shards.rows_of(todo), config.progress and ctx.is_main)
    rows = shards.run(ctx, prepare, compute, metadata)
    progress.bar.close()
    return ShardPass(rows, progress.tokens, time.perf_counter() - progress.started)


class _Progress:
    """A sentences bar that also shows tokens/s of this run."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = bar(total=total, initial=initial, unit=" sent", desc="encoding", enabled=enabled)
        self.tokens = 0
        self.started = time.perf_counter()

    def update(self, sentences: int, tokens: int) -> None:
        self.tokens += tokens
        self.bar.update(sentences)
        rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix(tok_s=f"{rate:.0f}", refresh=False)


def _check_finite(vectors: np.ndarray, dtype: str, first_id: int, name: str) -> None:
    """Refuse to store NaN/Inf vectors (from the teacher, or a float16 overflow): they would
    poison every student trained on the shard."""
    with np.errstate(over="ignore"):
        finite = np.isfinite(vectors.astype(dtype)).all(axis=1)
    if finite.all():
        return
    bad = np.flatnonzero(~finite)
    hint = ("; they overflow float16: pass --dtype float32" if np.isfinite(vectors).all()
            else "; check the teacher and --device")
    raise UserError(f"{name}: NaN or Inf teacher vectors for {len(bad)} of {len(finite)} "
                    f"sentences (first id {first_id + int(bad[0])}){hint}")
