"""One teacher identity (TeacherSpec): made once, the same wherever the teacher lives, and the
source of the manifest's, the kd cache's and a fine-tuned teacher's teacher fields (the kd
cache's: tests/test_eval_finetune.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cache_tools.manifest import SENTENCE_VECTORS, TASK_LOGITS, read_manifest
from core import teacher as teacher_module
from core.teacher import Teacher, TeacherSpec, teacher_spec

FIXTURES = Path(__file__).parent / "fixtures" / "glue"
CPU = torch.device("cpu")


def test_identity_ignores_where_the_teacher_lives(tiny_teacher_dir, tmp_path):
    moved = shutil.copytree(tiny_teacher_dir, tmp_path / "elsewhere")
    here, there = Teacher(str(tiny_teacher_dir), device="cpu").spec, Teacher(str(moved), device="cpu").spec
    assert here.name != there.name
    assert here.identity() == there.identity()
    assert set(here.identity()) == set(TeacherSpec.IDENTITY)
    assert len(here.teacher_fingerprint) == 64 and len(here.tokenizer_fingerprint) == 64


def test_identity_changes_with_the_weights_and_the_settings(tiny_teacher_dir):
    teacher = Teacher(str(tiny_teacher_dir), device="cpu")
    before = teacher.spec
    with torch.no_grad():
        next(teacher.model.parameters()).add_(1.0)
    assert teacher.spec == before  # hashed once: a frozen teacher's spec is kept
    assert teacher.identify().teacher_fingerprint != before.teacher_fingerprint
    other_layer = Teacher(str(tiny_teacher_dir), layer=1, device="cpu").spec
    assert other_layer.identity() != before.identity() and other_layer.layer == 1


def test_teacher_spec_loads_a_teacher_once_per_process(tiny_teacher_dir, monkeypatch):
    teacher_spec.cache_clear()
    loads = []
    real_init = Teacher.__init__

    def counting_init(self, *args, **kwargs):
        loads.append(args)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(teacher_module.Teacher, "__init__", counting_init)
    first = teacher_spec(str(tiny_teacher_dir))
    assert teacher_spec(str(tiny_teacher_dir)) is first
    assert len(loads) == 1
    teacher_spec.cache_clear()


def test_encode_writes_the_spec_into_settings_shards_and_manifest(tiny_shards, tiny_teacher_dir):
    manifest = read_manifest(tiny_shards)
    spec = Teacher(str(tiny_teacher_dir), device="cpu").spec
    assert manifest.kind == SENTENCE_VECTORS
    for name, value in spec.manifest_fields().items():
        assert getattr(manifest, name) == value, name


@pytest.mark.parametrize("kind", [SENTENCE_VECTORS, TASK_LOGITS])
def test_a_manifest_without_a_kind_reads_as_sentence_vectors(kind, tiny_shards, tmp_path):
    copy = shutil.copytree(tiny_shards, tmp_path / "shards")
    raw = json.loads((copy / "manifest.json").read_text())
    raw.pop("kind", None)  # as every manifest written before kinds existed
    (copy / "manifest.json").write_text(json.dumps(raw))
    assert read_manifest(copy).kind == SENTENCE_VECTORS
    raw["kind"] = kind
    (copy / "manifest.json").write_text(json.dumps(raw))
    assert read_manifest(copy).kind == kind


@pytest.mark.parametrize("field, value", [("pooling", "cls"), ("teacher_fingerprint", "0" * 64),
                                          ("dim", 7)])
def test_shards_of_another_vector_space_are_not_mixed(field, value, tiny_shards, tmp_path):
    from cache_tools.format import ShardError
    from cache_tools.reader import ShardDirectory
    from student.data import check_same_teacher

    other = shutil.copytree(tiny_shards, tmp_path / "other")
    raw = json.loads((other / "manifest.json").read_text())
    assert raw[field] != value
    (other / "manifest.json").write_text(json.dumps({**raw, field: value}))
    same = ShardDirectory(shutil.copytree(tiny_shards, tmp_path / "same"))
    assert check_same_teacher([ShardDirectory(tiny_shards), same]).pooling == raw["pooling"]
    with pytest.raises(ShardError, match=f"come from different teachers or settings \\({field}"):
        check_same_teacher([ShardDirectory(tiny_shards), ShardDirectory(other)])
