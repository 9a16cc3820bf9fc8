"""A sentence-transformers input module wrapping a saved student.

``SentenceTransformer(student_dir, trust_remote_code=True)`` loads it through modules.json (since
sentence-transformers 6.0 any module class outside its own namespace needs ``trust_remote_code``).
Its forward pass is ``StudentEncoder.forward`` itself, so the vectors equal ``SentenceStudent.encode``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sentence_transformers.base.modules.input_module import InputModule

from student.sentence import SentenceStudent


class SRAStudentModule(InputModule):
    """Tokenizes with the student's tokenizer and returns ``sentence_embedding``."""

    save_in_root = True

    def __init__(self, student: SentenceStudent):
        super().__init__()
        self.student = student
        self.encoder = student.model  # registered here so that .to() / .eval() reach it
        self.tokenizer = student.tokenizer

    @property
    def max_seq_length(self) -> int:
        return self.student.config.max_length

    def get_embedding_dimension(self) -> int:
        return self.student.config.output_dim

    def preprocess(self, inputs: Sequence[str], prompt: str | None = None, **kwargs) -> dict[str, Any]:
        texts = [prompt + text for text in inputs] if prompt else list(inputs)
        input_ids, lengths = self.student.tokenize(texts)
        return {"input_ids": input_ids, "lengths": lengths}

    def forward(self, features: dict[str, torch.Tensor | Any], **kwargs) -> dict[str, Any]:
        features["sentence_embedding"] = self.encoder(features["input_ids"], features["lengths"])
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.student.save_module(output_path)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs,
    ) -> SRAStudentModule:
        directory = cls.load_dir_path(
            model_name_or_path,
            subfolder=subfolder,
            token=token,
            cache_folder=cache_folder,
            revision=revision,
            local_files_only=local_files_only,
        )
        return cls(SentenceStudent.load(directory, device="cpu"))
