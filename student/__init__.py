"""Stage two: the BiLSTM student, its training on cached teacher vectors, and inference."""

from __future__ import annotations

from student.config import StudentConfig, TrainConfig
from student.model import StudentEncoder
from student.sentence import SentenceStudent, load_student

__all__ = ["StudentConfig", "StudentEncoder", "SentenceStudent", "TrainConfig", "load_student"]
