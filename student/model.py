"""The BiLSTM sentence encoder: embedding -> BiLSTM (packed) -> pooling -> projection."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

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
        # pack_padded_sequence wants lengths on the CPU; padding is never run through the LSTM.
        lengths = lengths.to("cpu", torch.int64).clamp(min=1)
        embedded = self.dropout(self.embedding(input_ids))  # (B, T, E)
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        output, (h_n, _) = self.lstm(packed)
        pooled = self._pool(output, h_n, lengths)  # (B, 2H)
        vectors = self.projection(self.dropout(pooled))  # (B, D)
        if self.config.normalize:
            vectors = nn.functional.normalize(vectors.float(), p=2, dim=-1)
        return vectors

    def _pool(self, output, h_n: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.config.pooling == "last":
            # h_n: (layers * 2, B, H); the top layer's forward state after the last real token and
            # its backward state after the first token; already in the input's batch order.
            return torch.cat([h_n[-2], h_n[-1]], dim=-1)  # (B, 2H)
        padded, _ = pad_packed_sequence(output, batch_first=True)  # (B, T', 2H), T' = max length
        steps = torch.arange(padded.size(1), device=padded.device)  # (T',)
        mask = steps.unsqueeze(0) < lengths.to(padded.device).unsqueeze(1)  # (B, T')
        if self.config.pooling == "max":
            return padded.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)  # (B, 2H)
        # mean: pad positions are zeros after pad_packed_sequence, so a plain sum is exact.
        return padded.sum(dim=1) / lengths.to(padded.device, padded.dtype).unsqueeze(1)  # (B, 2H)

    @torch.no_grad()
    def init_embeddings(self, matrix: np.ndarray, seed: int = 0) -> None:
        """Copy the teacher's (V, D_emb) input embeddings in, projected to embed_dim if needed."""
        weight = torch.from_numpy(np.array(matrix, dtype=np.float32))  # a copy: matrix is an mmap
        rows = min(weight.shape[0], self.config.vocab_size)
        self.embedding.weight[:rows] = project_embeddings(weight[:rows], self.config.embed_dim, seed)


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
