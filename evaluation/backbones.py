"""Sentence encoders being fine-tuned: the BiLSTM student and the teacher (BERT, MPNet, ...),
behind one interface.

A backbone tokenizes a split once (ragged token id arrays) and encodes padded batches of ids:
``forward(ids (B, T), lengths (B,)) -> (B, dim)``. Both keep their own tokenizer, special tokens
and truncation, so every system sees its sentences exactly as it does outside GLUE.

Sentence pairs are encoded side by side (siamese: u and v, then the head on both) by every
backbone, except a teacher built with ``joint_pairs``: it reads a pair as one sequence (``[CLS] a
[SEP] b [SEP]``, BERT's own fine-tuning; token types where the model has them), a cross-encoder,
as a fine-tuned teacher is usually run; its head then sees one vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from core.errors import UserError
from core.teacher import Teacher, pool, takes_token_types
from core.teacher_onnx import TOKEN_TYPES

TEACHER_PAIRS = ("joint", "siamese")  # how a teacher reads a pair: one sequence, or each side apart
JOINT, SIAMESE = TEACHER_PAIRS
TOKENIZE_CHUNK = 1024  # sentences per tokenizer call: bounds the padded (chunk, T) tensor


def check_teacher_pairs(value: str) -> str:
    if value not in TEACHER_PAIRS:
        raise UserError(f"--teacher-pairs {value!r}: choose {' or '.join(TEACHER_PAIRS)}")
    return value


class Backbone(nn.Module):
    """A trainable sentence encoder with its tokenizer."""

    dim: int
    pad_id: int
    joint_pairs: bool = False  # True: a pair is one sequence (tokenize_pairs), not two sides

    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        raise NotImplementedError

    def tokenize_pairs(self, texts: Sequence[str], pairs: Sequence[str]) -> list[np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} encodes the two sides of a pair apart")

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
    """A ``core.teacher.Teacher``'s transformer with its pooling (and normalisation);
    ``joint_pairs``: pairs as one sequence (a cross-encoder)."""

    def __init__(self, teacher: Teacher, joint_pairs: bool = False):
        super().__init__()
        self.joint_pairs = joint_pairs
        self.teacher = teacher  # its identity (spec) and settings; not a submodule
        self.model = teacher.model
        self.tokenizer, self.max_length = teacher.tokenizer, teacher.max_length
        self._tokenize = teacher.tokenize
        self.pooling, self.normalize, self.layer = teacher.pooling, teacher.normalize, teacher.layer
        self.dim = teacher.dim
        self.pad_id = teacher.pad_id  # MPNet counts its positions from it: never assume 0
        # a joint pair's second segment gets token type 1 where the model has token types (BERT);
        # MPNet has none, and its tokenizer marks the seam with separators alone
        self._segments = (joint_pairs and takes_token_types(self.model)
                          and getattr(self.model.config, "type_vocab_size", 1) > 1)
        self._sep_id = self.tokenizer.sep_token_id

    @property
    def pairs(self) -> str:
        """How it reads a pair, as ``--teacher-pairs`` names it: ``joint`` or ``siamese``."""
        return JOINT if self.joint_pairs else SIAMESE

    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(ids, dtype=np.int64) for ids in self._tokenize(list(texts))]

    def tokenize_pairs(self, texts: Sequence[str], pairs: Sequence[str]) -> list[np.ndarray]:
        """One sequence a pair, with the tokenizer's own frame (``[CLS] a [SEP] b [SEP]``,
        ``<s> a </s></s> b </s>``), the longer side truncated first to ``max_length``."""
        encoded = self.tokenizer(list(texts), list(pairs), truncation="longest_first",
                                 max_length=self.max_length, add_special_tokens=True)
        return [np.asarray(ids, dtype=np.int64) for ids in encoded["input_ids"]]

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(ids.size(1), device=ids.device)  # (T,)
        mask = (steps.unsqueeze(0) < lengths.to(ids.device).unsqueeze(1)).long()  # (B, T)
        # token types: all zeros (BERT's default, one segment) unless a joint pair has a second
        # segment: 1 after the first separator (that separator itself is 0, as BERT's tokenizer has it)
        types = {}
        if self._segments:
            sep = (ids == self._sep_id).long()  # (B, T)
            types[TOKEN_TYPES] = ((sep.cumsum(1) - sep) > 0).long() * mask  # (B, T)
        output = self.model(
            input_ids=ids, attention_mask=mask, output_hidden_states=self.layer != -1, **types
        )
        hidden = output.last_hidden_state if self.layer == -1 else output.hidden_states[self.layer]
        return pool(hidden.float(), mask, self.pooling, self.normalize)  # (B, D)
