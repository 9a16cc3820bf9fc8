"""The BiLSTM sentence encoder: embedding -> BiLSTM -> pooling -> projection.

Padding never reaches a real position: the forward direction runs over the padded batch (pads
come after every real token, so they change nothing before them), and the backward direction runs
forward over each sentence reversed within its own length (pads stay at the end). That gives
exactly what a packed sequence gives, at the cost of the plain LSTM kernel: packing cost about
1.4x more per training step on CPU (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from student.config import StudentConfig


class StudentEncoder(nn.Module):
    """Token ids (B, T) and lengths (B,) -> sentence vectors (B, output_dim)."""

    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.embed_dim,
            config.hidden,
            num_layers=config.layers,
            bidirectional=True,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.projection = nn.Linear(2 * config.hidden, config.output_dim)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.to(input_ids.device, torch.int64).clamp(min=1)  # (B,)
        input_ids = input_ids[:, : int(lengths.max())]  # no all-padding columns
        embedded = self.dropout(self.embedding(input_ids))  # (B, T, E)
        steps = torch.arange(input_ids.size(1), device=input_ids.device)  # (T,)
        mask = steps.unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        # Position t of a sentence reversed within its length holds token len-1-t; pads stay put.
        # The map is its own inverse.
        reverse = torch.where(mask, lengths.unsqueeze(1) - 1 - steps.unsqueeze(0), steps)  # (B, T)
        states = self._bilstm(embedded, reverse)  # (B, T, 2H); pad positions hold garbage
        pooled = self._pool(states, mask, lengths)  # (B, 2H)
        vectors = self.projection(self.dropout(pooled))  # (B, D)
        if self.config.normalize:
            vectors = nn.functional.normalize(vectors.float(), p=2, dim=-1)
        return vectors

    def _bilstm(self, inputs: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
        """The stacked bidirectional LSTM (``self.lstm``'s weights), exact at real positions."""
        for layer in range(self.config.layers):
            forward = self._direction(inputs, layer, "")  # (B, T, H)
            backward = _gather_time(self._direction(_gather_time(inputs, reverse), layer, "_reverse"),
                                    reverse)  # (B, T, H)
            inputs = torch.cat([forward, backward], dim=-1)  # (B, T, 2H)
            if layer < self.config.layers - 1:  # nn.LSTM's dropout between layers
                inputs = nn.functional.dropout(inputs, self.config.dropout, self.training)
        return inputs

    def _direction(self, inputs: torch.Tensor, layer: int, suffix: str) -> torch.Tensor:
        """One direction of one layer, run left to right over ``inputs`` (B, T, I) -> (B, T, H)."""
        lstm = self.lstm
        weights = [getattr(lstm, f"{name}_l{layer}{suffix}")
                   for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        zeros = inputs.new_zeros(1, inputs.size(0), self.config.hidden)  # (1, B, H)
        output, _, _ = torch.lstm(inputs, (zeros, zeros), weights, True, 1, 0.0, self.training,
                                  False, True)
        return output

    def _pool(self, states: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden = self.config.hidden
        if self.config.pooling == "last":
            # The forward state after the last real token and the backward state after the first.
            last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, hidden)  # (B, 1, H)
            forward = states[:, :, :hidden].gather(1, last).squeeze(1)  # (B, H)
            return torch.cat([forward, states[:, 0, hidden:]], dim=-1)  # (B, 2H)
        if self.config.pooling == "max":
            return states.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)  # (B, 2H)
        summed = states.masked_fill(~mask.unsqueeze(-1), 0.0).sum(dim=1)  # (B, 2H)
        return summed / lengths.to(states.dtype).unsqueeze(1)

    @torch.no_grad()
    def init_embeddings(self, matrix: np.ndarray, seed: int = 0) -> None:
        """Copy a (V, D_emb) token-embedding matrix of the teacher's (contextual or input) in,
        projected to embed_dim if needed."""
        weight = torch.from_numpy(np.array(matrix, dtype=np.float32))  # a copy: matrix is an mmap
        rows = min(weight.shape[0], self.config.vocab_size)
        self.embedding.weight[:rows] = project_embeddings(weight[:rows], self.config.embed_dim, seed)


def _gather_time(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (B, T, C) reordered along time by index (B, T)."""
    return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.size(-1)))


def project_embeddings(weight: torch.Tensor, dim: int, seed: int = 0) -> torch.Tensor:
    """(V, D) -> (V, dim): unchanged if D == dim; PCA to the top ``dim`` directions if smaller;
    a random orthonormal map (distances preserved) if larger. Rescaled to the original spread so
    that the LSTM sees inputs of the usual magnitude."""
    source_dim = weight.shape[1]
    if source_dim == dim:
        return weight.clone()
    centered = weight - weight.mean(dim=0, keepdim=True)
    if dim < source_dim:
        _, _, vh = torch.linalg.svd(centered, full_matrices=False)  # vh: (D, D)
        basis = vh[:dim].T  # (D, dim)
    else:
        generator = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, source_dim, generator=generator))  # (dim, D)
        basis = q.T  # (D, dim), orthonormal rows
    projected = centered @ basis  # (V, dim)
    return projected * (centered.std() / projected.std().clamp(min=1e-12))
