"""SRA losses: a distance between student and cached teacher vectors, chosen by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from core.errors import UserError


def mse_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all (B, D) entries."""
    return F.mse_loss(student, teacher)


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity, averaged over the batch."""
    return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()


# TextBrewer-style table: add a loss here and it becomes a valid --loss name.
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": mse_loss,
    "cosine": cosine_loss,
}


class SRALoss:
    """A weighted sum of named losses, e.g. ``SRALoss("mse+cosine", [1.0, 1.0])``."""

    def __init__(self, spec: str, weights: list[float] | None = None):
        self.names = [name.strip() for name in spec.split("+") if name.strip()]
        unknown = [name for name in self.names if name not in LOSSES]
        if not self.names or unknown:
            raise UserError(
                f"unknown loss {', '.join(unknown) or spec!r}; choose from {', '.join(LOSSES)} "
                "joined with '+', e.g. mse+cosine"
            )
        if len(set(self.names)) != len(self.names):
            raise UserError(f"loss {spec!r} names a part twice")
        self.weights = list(weights) if weights else [1.0] * len(self.names)
        if len(self.weights) != len(self.names):
            raise UserError(
                f"--loss-weights has {len(self.weights)} values for {len(self.names)} loss parts"
            )

    def __call__(
        self, student: torch.Tensor, teacher: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total and each part unweighted (for logging), computed in fp32."""
        student, teacher = student.float(), teacher.float()
        parts = {name: LOSSES[name](student, teacher) for name in self.names}
        total = sum(weight * parts[name] for name, weight in zip(self.names, self.weights))
        return total, parts
