"""torch.distributed glue for runs launched by torchrun (one process per rank)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from core.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run; a plain single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def device(self, requested: str | None) -> str | None:
        """Each rank drives the GPU of its local rank; CPU ranks share the CPU."""
        if requested in (None, "auto") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return requested

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_ok(self, ok: bool) -> bool:
        """True on every rank when every rank passed ``ok`` (so one rank's failure stops all)."""
        if not self.enabled:
            return ok
        flag = torch.tensor([1 if ok else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def main_first(self, action: Callable[[], T]) -> T | None:
        """Run ``action`` on rank 0 alone (it alone touches an output directory, reads a whole
        corpus, fine-tunes a teacher); a UserError it raises stops every rank alike: rank 0
        raises it, the others a UserError that points at rank 0's message. Rank 0's result is
        returned there, None on the other ranks. The one home of "rank 0 refuses, all stop"."""
        result, failure = None, None
        if self.is_main:
            try:
                result = action()
            except UserError as exc:
                failure = exc
        if not self.all_ok(failure is None):
            raise failure or UserError("rank 0 refused the run; see its message")
        return result

    def broadcast(self, value: object) -> object:
        """Rank 0's ``value`` on every rank (what the others passed is ignored)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: object) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        values: list = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


# For stages whose ranks wait while rank 0 works alone (reads a whole corpus, fine-tunes a teacher).
LONG_WAIT = timedelta(hours=24)


def init_distributed(timeout: timedelta | None = None) -> DistContext:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on GPU).

    ``timeout`` bounds every collective: how long a rank waits for the others at a barrier.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        # NCCL serves CUDA tensors only; the small CPU flags and objects of all_ok, broadcast and
        # gather go through gloo in the same group.
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=timeout)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def finish_distributed() -> None:
    """Wait for every rank, then leave the group: a rank exiting with the group alive can abort."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
