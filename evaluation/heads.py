"""Task heads and the model that is fine-tuned: backbone + head, siamese for sentence pairs
(except over a backbone that reads a pair as one sequence: a cross-encoding teacher)."""

from __future__ import annotations

import torch
from torch import nn

from data.glue import GlueTask
from evaluation.backbones import Backbone


class TaskHead(nn.Module):
    """An MLP on u (one sentence) or on [u; v; |u - v|; u * v] (a pair, as in InferSent/SBERT)."""

    def __init__(self, dim: int, num_outputs: int, pair: bool, hidden: int, dropout: float):
        super().__init__()
        self.pair, self.hidden, self.num_outputs = pair, hidden, num_outputs
        features = 4 * dim if pair else dim
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(features, hidden),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        if self.pair:
            u = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)  # (B, 4D)
        return self.mlp(u)  # (B, C)


def task_head(backbone: Backbone, task: GlueTask, hidden: int, dropout: float) -> TaskHead:
    """The head for ``task`` over ``backbone``: on [u; v; |u - v|; u * v] for a pair read side by
    side, on one vector for a single sentence or a pair read as one sequence."""
    return TaskHead(backbone.dim, task.num_outputs, task.pair and not backbone.joint_pairs, hidden,
                    dropout)


class TaskModel(nn.Module):
    """Backbone + head. Pairs run as one (2B, T) batch: the first B rows are u, the rest v."""

    def __init__(self, backbone: Backbone, head: TaskHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        vectors = self.backbone(ids, lengths).float()  # (B, D) or (2B, D)
        if self.head.pair:
            u, v = vectors.chunk(2)  # (B, D) each
            return self.head(u, v)
        return self.head(vectors)  # (B, C)
