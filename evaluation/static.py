"""The ``model2vec`` system: the teacher distilled into static token vectors by model2vec.

model2vec runs every token of the teacher's vocabulary through the teacher once, reduces the
vectors with PCA and weights them (SIF); a sentence is the mean of its tokens' vectors. The
distilled model is cached under ``OUT/model2vec/<key>/``, keyed by the teacher's weights and the
distillation settings, so a rerun does not distil again. For fine-tuning, its table becomes a
trainable ``nn.Embedding`` under the same head as every other system.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.io import atomic_output, fingerprint
from core.teacher import Teacher, teacher_spec
from evaluation.backbones import Backbone

CACHE_DIR = "model2vec"
PCA_DIMS = 256  # model2vec's default; a smaller teacher keeps its own width
MAX_TOKENS = 512  # model2vec's default truncation of a sentence


def model2vec_dir(teacher: str | None, cache: Path) -> Path:
    """The cache folder of the distilled teacher: named by the teacher's identity."""
    key = fingerprint({"teacher": teacher_spec(teacher).teacher_fingerprint, "pca_dims": PCA_DIMS})
    return cache / CACHE_DIR / key[:16]


def prepare_model2vec(teacher_name: str | None, cache: Path, log: Callable[[str], None]) -> Path:
    """Distil the teacher with model2vec unless the cache holds it; returns the model's folder."""
    from model2vec.distill import distill_from_model

    directory = model2vec_dir(teacher_name, cache)
    if (directory / "config.json").is_file():
        log(f"model2vec: the distilled teacher from {directory}")
        return directory
    teacher = Teacher(teacher_name, device="cpu")
    log(f"model2vec: distilling the teacher ({teacher.tokenizer.vocab_size} tokens, PCA {PCA_DIMS})")
    # model2vec's PCA-wider-than-the-model warning of a small teacher; skeletoken's note that a
    # tokenizer.json without padding (MPNet's) takes the pad token tokenizer_config.json names
    quiet = [logging.getLogger(name) for name in ("model2vec", "skeletoken")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        static = distill_from_model(teacher.model, teacher.tokenizer, device="cpu",
                                    pca_dims=min(PCA_DIMS, teacher.dim))
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    with atomic_output(directory, directory=True) as partial:  # a present folder is a complete one
        static.save_pretrained(partial)
    return directory


def load_model2vec(teacher: str | None, cache: Path):
    """The cached distilled teacher (a model2vec StaticModel); distils it first if needed."""
    from model2vec import StaticModel

    return StaticModel.from_pretrained(prepare_model2vec(teacher, cache, lambda message: None))


class StaticBackbone(Backbone):
    """A model2vec StaticModel as a trainable encoder: mean of token vectors, L2-normalised when
    the model normalises (as ``StaticModel.encode`` does); its own tokenizer."""

    def __init__(self, static_model):
        super().__init__()
        vectors = np.asarray(static_model.embedding, dtype=np.float32)  # (V, D); stored as float16
        self.embedding = nn.Embedding.from_pretrained(torch.from_numpy(vectors), freeze=False)
        mapping = static_model.token_mapping  # vocabulary quantisation: token id -> row
        self._mapping = None if mapping is None else np.asarray(mapping, dtype=np.int64)
        self._tokenize = static_model.tokenize
        self.normalize = bool(static_model.normalize)
        self.dim = int(vectors.shape[1])
        self.pad_id = 0  # padding is masked by the lengths, any row will do

    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        rows = [np.asarray(ids[:MAX_TOKENS], dtype=np.int64) for ids in self._tokenize(list(texts))]
        return rows if self._mapping is None else [self._mapping[row] for row in rows]

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.to(ids.device)
        steps = torch.arange(ids.size(1), device=ids.device)  # (T,)
        mask = (steps.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
        summed = (self.embedding(ids) * mask).sum(dim=1)  # (B, D)
        vectors = summed / lengths.clamp(min=1).unsqueeze(1).to(summed.dtype)  # (B, D)
        return nn.functional.normalize(vectors, dim=-1) if self.normalize else vectors
