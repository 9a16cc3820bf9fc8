"""Shipped students: loadable by a short name wherever a student directory is accepted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import student.pretrained
from evaluation.systems import parse_system
from student import load_student
from student.export import ExportConfig
from student.pretrained import shipped_students, student_path

TEXTS = ["The river flows into the sea.", "A short one.", "The old king died in 1901 after a long reign."]


@pytest.fixture
def shipped(tmp_path, monkeypatch, tiny_student_dir):
    """The tiny student, saved in half precision as the package's only shipped student."""
    root = tmp_path / "pretrained"
    load_student(tiny_student_dir).save(root / "tiny-shipped", half=True)
    monkeypatch.setattr(student.pretrained, "PRETRAINED_ROOT", root)
    return root / "tiny-shipped"


def test_a_shipped_student_loads_by_its_short_name_in_half_precision(shipped, tiny_student_dir):
    assert shipped_students() == ["tiny-shipped"]
    assert student_path("tiny-shipped") == shipped
    full = load_student(tiny_student_dir).encode(TEXTS)
    half = load_student("tiny-shipped").encode(TEXTS)
    cosine = (full * half).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(half, axis=1)
    assert cosine.min() > 0.999 and not np.array_equal(full, half)
    sizes = [(d / "model.safetensors").stat().st_size for d in (shipped, tiny_student_dir)]
    assert sizes[0] < 0.6 * sizes[1]


def test_short_name_in_systems_and_export_and_an_existing_path_wins(shipped, tmp_path, monkeypatch):
    assert parse_system("student:tiny-shipped").path == shipped
    assert ExportConfig(student="tiny-shipped").out_dir.name == "tiny-shipped.onnx"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-shipped").mkdir()  # a local directory of that name is what the user means
    assert student_path("tiny-shipped").resolve() == (tmp_path / "tiny-shipped").resolve()
    assert student_path("no-such-student") == Path("no-such-student")  # left for the caller to refuse
