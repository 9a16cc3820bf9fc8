"""Sentence encoders being fine-tuned: the BiLSTM student and the teacher (BERT, MPNet, ...),
behind one interface.

A backbone tokenizes a split once (ragged token id arrays) and encodes padded batches of ids:
``forward(ids (B, T), lengths (B,)) -> (B, dim)``. Both keep their own tokenizer, special tokens
and truncation, so every system sees its sentences exactly as it does outside GLUE.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from core.teacher import Teacher, pool

TOKENIZE_CHUNK = 1024  # sentences per tokenizer call: bounds the padded (chunk, T) tensor


class Backbone(nn.Module):
    """A trainable sentence encoder with its tokenizer."""

    dim: int
    pad_id: int

    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        raise NotImplementedError

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class StudentBackbone(Backbone):
    """A ``SentenceStudent`` (the student API): its encoder module is what gets trained."""

    def __init__(self, student):
        super().__init__()
        self.encoder = student.model
        self._tokenize = student.tokenize
        self.dim = int(student.config.output_dim)
        self.pad_id = int(student.config.pad_token_id)

    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), TOKENIZE_CHUNK):
            ids, lengths = self._tokenize(list(texts[start : start + TOKENIZE_CHUNK]))
            ids, lengths = ids.cpu().numpy(), lengths.cpu().numpy()  # (B, T), (B,)
            rows.extend(ids[i, : lengths[i]].copy() for i in range(len(lengths)))
        return rows

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encoder(ids, lengths)  # (B, D)


class TeacherBackbone(Backbone):
    """A ``core.teacher.Teacher``'s transformer with its pooling (and normalisation)."""

    def __init__(self, teacher: Teacher):
        super().__init__()
        self.teacher = teacher  # its identity (spec) and settings; not a submodule
        self.model = teacher.model
        self.tokenizer, self.max_length = teacher.tokenizer, teacher.max_length
        self._tokenize = teacher.tokenize
        self.pooling, self.normalize, self.layer = teacher.pooling, teacher.normalize, teacher.layer
        self.dim = teacher.dim
        self.pad_id = teacher.pad_id  # MPNet counts its positions from it: never assume 0

    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(ids, dtype=np.int64) for ids in self._tokenize(list(texts))]

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(ids.size(1), device=ids.device)  # (T,)
        mask = (steps.unsqueeze(0) < lengths.to(ids.device).unsqueeze(1)).long()  # (B, T)
        # no token_type_ids: BERT's default is all zeros (one segment), MPNet takes none
        output = self.model(
            input_ids=ids, attention_mask=mask, output_hidden_states=self.layer != -1
        )
        hidden = output.last_hidden_state if self.layer == -1 else output.hidden_states[self.layer]
        return pool(hidden.float(), mask, self.pooling, self.normalize)  # (B, D)
