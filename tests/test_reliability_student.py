"""`pipeline train-student`: killed (-9) anywhere and resumed, it ends where an uninterrupted run
ends; damaged shards and student directories are refused in one line."""

from __future__ import annotations

import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from student.sentence import SentenceStudent
from student.train import Trainer
from tests.helpers import (
    assert_one_line_error,
    copy_shards,
    die_at_call,
    edit_json,
    kill_self_at,
    pipeline_main,
    rewrite_shard,
    run_forked,
)

TRAIN = ["--hidden", "16", "--batch-size", "32", "--heldout", "0.1", "--max-steps", "12",
         "--checkpoint-every", "4", "--eval-every", "4", "--log-every", "2", "--no-progress"]
SHARD1 = "train-00001-of-00004.arrow"


def _train_args(shards, out, *extra) -> list[str]:
    return ["train-student", "--shards", str(shards), "--out", str(out), *TRAIN, *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_shards):
    out = tmp_path_factory.mktemp("student_reference") / "s"
    assert run_forked(_train_args(tiny_shards, out)) == 0
    return out


def _metrics(out) -> list[dict]:
    timing = {"sent_per_s", "data_wait"}
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


KILL_POINTS = {
    "before-first-checkpoint": lambda: die_at_call(SentenceStudent, "save_module", 1),
    "mid-step-after-checkpoint": lambda: die_at_call(Trainer, "train_step", 7),
    "checkpoint-written-not-renamed": lambda: kill_self_at(os, "replace", r"/checkpoint\.pt$", 2,
                                                            False),
    "checkpoint-renamed": lambda: kill_self_at(os, "replace", r"/checkpoint\.pt$", 2, True),
    "summary-written": lambda: kill_self_at(os, "replace", r"/training_summary\.json$", 1, True),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_resume_gives_the_uninterrupted_student(point, tmp_path, tiny_shards, reference):
    out = tmp_path / "s"
    assert run_forked(_train_args(tiny_shards, out), KILL_POINTS[point]) == -signal.SIGKILL
    assert run_forked(_train_args(tiny_shards, out, "--resume")) == 0
    expected, got = load_file(reference / "model.safetensors"), load_file(out / "model.safetensors")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert _metrics(out) == _metrics(reference)
    assert json.loads((out / "training_summary.json").read_text())["steps"] == 12
    assert not (out / "checkpoint.pt").exists()


def test_kill_9_then_rerun_without_resume_is_refused(tmp_path, tiny_shards, capsys, monkeypatch):
    out = tmp_path / "s"
    assert run_forked(_train_args(tiny_shards, out), KILL_POINTS["mid-step-after-checkpoint"]) \
        == -signal.SIGKILL
    code, _, err = pipeline_main(capsys, monkeypatch, *_train_args(tiny_shards, out))
    assert_one_line_error(code, err, "already holds a training run; pass --resume")


# -- damaged shards: named, and nothing trained ----------------------------------------------------
def _nan_vector(ids, vectors):
    vectors[5, 0] = np.nan


def _nan_vector_shard(shards):
    """Shard 1 rewritten with a NaN vector and registered in the manifest (sha256 matches)."""
    rewrite_shard(shards, 1, _nan_vector)


@pytest.mark.parametrize("damage, fragments", [
    (lambda d: (d / SHARD1).write_bytes((d / SHARD1).read_bytes()[:-100]), [SHARD1, "truncated"]),
    (lambda d: (d / SHARD1).unlink(), [SHARD1, "missing"]),
    (lambda d: (d / "tokenizer" / "tokenizer.json").unlink(), ["tokenizer files missing"]),
    (_nan_vector_shard, [SHARD1, "NaN"]),
], ids=["truncated", "missing", "no-tokenizer", "nan-vector"])
def test_train_student_refuses_a_damaged_shard_directory(damage, fragments, tmp_path, tiny_shards,
                                                         capsys, monkeypatch):
    shards = copy_shards(tiny_shards, tmp_path / "shards")
    damage(shards)
    code, _, err = pipeline_main(capsys, monkeypatch,
                                 *_train_args(shards, tmp_path / "s", "--max-steps", "1"))
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "s" / "model.safetensors").exists()


# -- damaged student directories (embed loads a student like glue-eval does) ----------------------
def _edit_config(directory, edit):
    edit_json(directory / "config.json", edit)


@pytest.mark.parametrize("damage, fragment", [
    (lambda d: (d / "config.json").unlink(), "no config.json"),
    (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
    (lambda d: _edit_config(d, lambda c: c.update(colour="red")), "unknown student config keys"),
    (lambda d: (d / "config.json").write_text("{"), "config.json"),
    (lambda d: _edit_config(d, lambda c: c.pop("vocab_size")), "vocab_size"),
    (lambda d: _edit_config(d, lambda c: c.update(hidden=32)), "model.safetensors"),
    (lambda d: (d / "model.safetensors").write_bytes(b"junk"), "model.safetensors"),
], ids=["no-config", "no-weights", "unknown-key", "config-not-json", "config-missing-key",
        "config-mismatches-weights", "weights-corrupt"])
def test_embed_refuses_a_damaged_student(damage, fragment, tmp_path, reference, tiny_corpus_file,
                                         capsys, monkeypatch):
    directory = shutil.copytree(reference, tmp_path / "student")
    damage(directory)
    code, _, err = pipeline_main(capsys, monkeypatch, "embed", "--student", directory, "--input",
                                 tiny_corpus_file, "--out", tmp_path / "v.npy", "--no-progress")
    assert_one_line_error(code, err, fragment)
