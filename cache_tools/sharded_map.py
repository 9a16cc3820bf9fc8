"""The sharded map behind stage one and glue-eval's teacher-logit cache.

Rows ``0..N-1`` are cut into shards of ``shard_size`` consecutive rows; shard ``i`` holds ids
``[i * shard_size, (i + 1) * shard_size)``, so the plan is the same for any number of processes.
Under torchrun rank ``r`` computes the shards ``i`` with ``i % world_size == r``. Each shard is
written to a temporary name and renamed, then a receipt (rows, bytes, sha256) goes to ``.work/``;
a shard with a valid receipt is skipped, so a rerun of the same launch resumes every rank's
unfinished shards. Whoever writes the manifest (last) collects the receipts with ``receipts()``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cache_tools.format import WORK_DIR, shard_name
from cache_tools.manifest import ShardInfo
from cache_tools.writer import write_shard
from core.errors import UserError
from core.io import atomic_write_json, sha256_file

if TYPE_CHECKING:  # the shard format needs no torch at run time; only the type
    from core.distributed import DistContext


@dataclass
class PreparedShard:
    """One shard's inputs: its texts, the token ids stored with it, and what ``compute`` needs."""

    texts: Sequence[str]
    token_ids: Sequence[Sequence[int]]
    payload: Any = None


@dataclass(frozen=True)
class ShardedMap:
    """Rows ``0..num_rows-1`` of one output directory, cut into fixed shards."""

    out: Path
    num_rows: int
    shard_size: int
    format: str
    dtype: str

    @property
    def work(self) -> Path:
        return self.out / WORK_DIR

    @property
    def num_shards(self) -> int:
        return -(-self.num_rows // self.shard_size)

    def name(self, index: int) -> str:
        return shard_name(index, self.num_shards, self.format)

    def bounds(self, index: int) -> tuple[int, int]:
        """First id and end id (exclusive) of shard ``index``."""
        lo = index * self.shard_size
        return lo, min(lo + self.shard_size, self.num_rows)

    def rows_of(self, indices: Sequence[int]) -> int:
        return sum(hi - lo for lo, hi in map(self.bounds, indices))

    def mine(self, ctx: DistContext) -> list[int]:
        """The shards this rank computes."""
        return list(range(ctx.rank, self.num_shards, ctx.world_size))

    def todo(self, ctx: DistContext) -> list[int]:
        """This rank's shards without a valid receipt."""
        return [i for i in self.mine(ctx) if self.receipt(i) is None]

    def run(
        self,
        ctx: DistContext,
        prepare: Callable[[int, int], PreparedShard],
        compute: Callable[[int, PreparedShard], np.ndarray],
        metadata: dict[str, Any],
    ) -> int:
        """Compute and write this rank's missing shards; returns the rows it computed.

        ``prepare(lo, hi)`` runs for shard i+1 in a background thread (tokenizers release the
        GIL) while ``compute(index, prepared) -> (rows, D)`` runs for shard i. ``metadata`` goes
        into every shard's own description, with its ``index``. No barrier here: the caller
        meets the other ranks before it collects the receipts.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        todo = self.todo(ctx)
        computed = 0
        clock = (time.perf_counter(), time.process_time())  # each receipt's cost runs from here
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(prepare, *self.bounds(todo[0])) if todo else None
            for position, index in enumerate(todo):
                prepared = pending.result()
                if position + 1 < len(todo):
                    pending = pool.submit(prepare, *self.bounds(todo[position + 1]))
                vectors = compute(index, prepared)
                lo, hi = self.bounds(index)
                if len(vectors) != hi - lo or len(prepared.texts) != hi - lo:
                    raise ValueError(f"shard {index}: {len(vectors)} vectors for {hi - lo} rows")
                write_shard(self.out / self.name(index), np.arange(lo, hi), prepared.texts,
                            prepared.token_ids, vectors, self.dtype, {**metadata, "index": index})
                now = (time.perf_counter(), time.process_time())
                self._write_receipt(index, prepared.token_ids, now[0] - clock[0], now[1] - clock[1])
                clock = now
                computed += hi - lo
        return computed

    def receipt(self, index: int) -> ShardInfo | None:
        """The receipt of a complete shard, or None when the shard must be (re)written."""
        name, receipt = self.name(index), self.work / f"shard-{index:05d}.json"
        if not (self.out / name).is_file() or not receipt.is_file():
            return None
        info = ShardInfo(**json.loads(receipt.read_text()))
        lo, hi = self.bounds(index)
        # a receipt of another shard size can share this shard's name
        if (info.name, info.first_id, info.num_rows) != (name, lo, hi - lo) \
                or info.num_bytes != (self.out / name).stat().st_size:
            return None
        return info

    def receipts(self) -> list[ShardInfo]:
        """Every shard's receipt, in order; a UserError names the shards still missing."""
        infos = [self.receipt(i) for i in range(self.num_shards)]
        missing = [self.name(i) for i, info in enumerate(infos) if info is None]
        if missing:
            raise UserError(f"shards missing after the run: {', '.join(missing)}; rerun to finish them")
        return infos

    def _write_receipt(self, index: int, token_ids: Sequence[Sequence[int]], seconds: float,
                       cpu_seconds: float) -> None:
        path = self.out / self.name(index)
        info = ShardInfo(name=path.name, index=index, num_rows=len(token_ids),
                         first_id=self.bounds(index)[0], num_bytes=path.stat().st_size,
                         sha256=sha256_file(path), num_tokens=sum(len(t) for t in token_ids),
                         seconds=round(seconds, 3), cpu_seconds=round(cpu_seconds, 3))
        self.work.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.work / f"shard-{index:05d}.json", asdict(info))
