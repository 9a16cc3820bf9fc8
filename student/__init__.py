"""Stage two: the BiLSTM student, its training on cached teacher vectors, and inference.

The torch parts (StudentEncoder, SentenceStudent, load_student) are imported on first use, so
that ``student.onnx`` (onnxruntime + tokenizers + numpy) can be imported without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from student.config import StudentConfig, TrainConfig
from student.directory import StudentDirectory

if TYPE_CHECKING:
    from student.model import StudentEncoder
    from student.sentence import SentenceStudent, load_student

_LAZY = {"StudentEncoder": "student.model", "SentenceStudent": "student.sentence",
         "load_student": "student.sentence"}

__all__ = ["StudentConfig", "StudentDirectory", "StudentEncoder", "SentenceStudent", "TrainConfig",
           "load_student"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'student' has no attribute {name!r}")
