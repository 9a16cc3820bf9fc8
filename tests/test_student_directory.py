"""StudentDirectory: the one reader of a saved student directory (files, summary, fingerprint)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest

import student.pretrained
from core.errors import UserError
from student.config import StudentConfig, TrainConfig
from student.directory import (
    CONFIG_NAME,
    SUMMARY_NAME,
    TOKENIZER_NAME,
    WEIGHTS_NAME,
    StudentDirectory,
    TrainingSummary,
)
from student.train import run_train_student
from tests.helpers import edit_json, save_random_student


@pytest.fixture
def saved(tmp_path, tiny_teacher_dir) -> Path:
    """A tiny random student of its own (the tests below change its files)."""
    return save_random_student(tmp_path / "student", tiny_teacher_dir)


def write_summary(directory: Path, **fields) -> None:
    (directory / SUMMARY_NAME).write_text(json.dumps(fields))


def test_open_reads_the_saved_student(saved):
    directory = StudentDirectory.open(saved)
    assert directory == StudentDirectory(saved) == StudentDirectory(str(saved))
    assert StudentDirectory.is_student(saved)
    assert directory.config == StudentConfig.load(saved)
    assert directory.config.hidden == 16
    assert directory.config_path == saved / CONFIG_NAME and directory.config_path.is_file()
    assert directory.weights_path == saved / WEIGHTS_NAME and directory.weights_path.is_file()
    assert directory.tokenizer_path == saved / TOKENIZER_NAME and directory.tokenizer_path.is_file()
    assert directory.summary is None  # saved through the student API, not by train-student
    assert StudentDirectory.open(str(saved)).path == saved


def test_open_finds_a_shipped_student_by_its_short_name(saved, tmp_path, monkeypatch):
    root = tmp_path / "pretrained"
    shutil.copytree(saved, root / "tiny-shipped")
    monkeypatch.setattr(student.pretrained, "PRETRAINED_ROOT", root)
    assert StudentDirectory.open("tiny-shipped").path == root / "tiny-shipped"


@pytest.mark.parametrize("damage, message", [
    (lambda d: shutil.rmtree(d), "no config.json; not a saved student directory"),
    (lambda d: (d / CONFIG_NAME).unlink(), "no config.json; not a saved student directory"),
    (lambda d: (d / WEIGHTS_NAME).unlink(), "no model.safetensors"),
])
def test_open_refuses_what_is_not_a_saved_student(saved, damage, message):
    damage(saved)
    assert not StudentDirectory.is_student(saved)
    with pytest.raises(UserError, match=message):
        StudentDirectory.open(saved)


def test_a_broken_config_is_a_user_error(saved):
    (saved / CONFIG_NAME).write_text("{")
    with pytest.raises(UserError, match="config.json: not valid JSON"):
        StudentDirectory.open(saved).config


def test_fingerprint_follows_the_contents_not_the_file_times(saved, tmp_path, tiny_teacher_dir):
    before = StudentDirectory(saved).fingerprint()
    assert len(before) == 16 and before == StudentDirectory(saved).fingerprint()
    stat = (saved / WEIGHTS_NAME).stat()
    for name in (CONFIG_NAME, WEIGHTS_NAME):  # touched: a later mtime, same bytes
        os.utime(saved / name, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert StudentDirectory(saved).fingerprint() == before
    copy = shutil.copytree(saved, tmp_path / "copy")  # copied elsewhere: the same student
    assert StudentDirectory(copy).fingerprint() == before
    # other weights of the same architecture (another seed): another student
    other = save_random_student(tmp_path / "other", tiny_teacher_dir, seed=1)
    assert (other / CONFIG_NAME).read_bytes() == (saved / CONFIG_NAME).read_bytes()
    shutil.copyfile(other / WEIGHTS_NAME, saved / WEIGHTS_NAME)
    retrained = StudentDirectory(saved).fingerprint()
    assert retrained != before
    edit_json(saved / CONFIG_NAME, lambda config: config.update(dropout=0.1))
    assert StudentDirectory(saved).fingerprint() not in (before, retrained)
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(UserError, match="no model.safetensors"):
        StudentDirectory(saved).fingerprint()


def test_summary_is_a_typed_view_with_the_defaults_of_old_summaries(saved):
    write_summary(saved, finished=True, steps=12, final={"val_cosine": 0.5}, best_step=8,
                  best_val_cosine=0.6, train_rows=90,
                  train={"shards": ["a/shards", "b"], "seed": 3, "init_embeddings": "contextual"})
    assert StudentDirectory(saved).summary == TrainingSummary(
        steps=12, final={"val_cosine": 0.5}, best_step=8, best_val_cosine=0.6, train_rows=90,
        shards=(Path("a/shards"), Path("b")), seed=3, init_embeddings="contextual")
    write_summary(saved, steps=4, final=None, best_step=None, train={"shards": ["s"]})
    old = StudentDirectory(saved).summary
    assert (old.final, old.best_step, old.train_rows, old.seed, old.init_embeddings) == (
        {}, None, None, 0, "teacher")


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ("[]", "not a training summary"),
    (json.dumps({"steps": "many"}), "not a training summary"),
    (json.dumps({"train": ["shards"]}), "train is not an object"),
])
def test_an_unreadable_summary_is_a_user_error(saved, content, message):
    (saved / SUMMARY_NAME).write_text(content)
    with pytest.raises(UserError, match=message):
        StudentDirectory(saved).summary


def test_source_shards_refuses_without_a_record_of_them(saved, tmp_path):
    directory = StudentDirectory(saved)
    with pytest.raises(UserError, match=re.escape(f"embeddings:{saved}: no training_summary.json, "
                                                  "so no record of the shard directory")):
        directory.source_shards()
    write_summary(saved, steps=1)
    with pytest.raises(UserError, match=re.escape(f"{saved / SUMMARY_NAME}: names no shard")):
        directory.source_shards()
    write_summary(saved, steps=1, train={"shards": [str(tmp_path / "gone")]})
    gone = f"embeddings:{saved}: its shard directory {tmp_path / 'gone'} is not readable"
    with pytest.raises(UserError, match=re.escape(gone)):
        directory.source_shards()


@pytest.mark.parametrize("init, kind", [
    ("contextual", "contextual"), ("teacher", "input"), ("random", "input"), (None, "input")])
def test_source_shards_names_the_matrix_the_student_started_from(saved, tiny_shards, init, kind):
    train = {"shards": [str(tiny_shards), "/elsewhere"], "seed": 7}
    if init is not None:
        train["init_embeddings"] = init
    write_summary(saved, steps=1, train=train)
    shards, seed, found = StudentDirectory(saved).source_shards()
    assert (shards.path, seed, found) == (tiny_shards, 7, kind)


def test_a_train_student_run_reads_back_and_resumes_from_its_summary(tmp_path, tiny_shards):
    config = TrainConfig(shards=[str(tiny_shards)], out=str(tmp_path / "run"), hidden=8,
                         batch_size=16, heldout=0.1, max_steps=2, eval_every=2, progress=False)
    result = run_train_student(config)
    directory = StudentDirectory.open(config.out)
    summary = directory.summary
    assert (summary.steps, summary.final, summary.best_step) == (2, result.metrics, 2)
    assert summary.shards == (tiny_shards,) and summary.seed == 0
    assert summary.init_embeddings == "contextual" and summary.train_rows > 0
    assert directory.source_shards()[0].path == tiny_shards
    # --resume of a finished run reads the summary and trains nothing
    again = run_train_student(dataclasses.replace(config, resume=True))
    assert (again.steps, again.finished, again.best_step) == (2, True, 2)
    assert again.metrics == result.metrics
    assert StudentDirectory(config.out).fingerprint() == directory.fingerprint()
