"""Precisions below fp32, each an explicit choice. A bf16 teacher (`encode --teacher-precision
bf16`) is measured against the same teacher in fp32, written in the manifest and part of the
vectors' space; fp32 teachers, and everything keyed by their identity, are as they were before
precisions existed. bf16 training steps (`train-student --precision bf16`) keep fp32 weights and
are a setting a checkpoint resumes only with. bf16 fine-tuning steps (`glue-eval`/`finetune
--precision bf16`) score dev in fp32 and make runs of their own; runs at the device's precision keep
their fingerprints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.numpy import load_file

from cache_tools.format import MANIFEST_NAME
from cache_tools.manifest import read_manifest
from core.device import precision_context, precision_override, resolve_precision
from core.errors import UserError
from core.teacher import Teacher, TeacherSpec
from encoding.config import EncodeConfig
from evaluation.finetune import TrainSettings
from evaluation.heads import TaskModel
from pipeline.cli import cli
from tests.helpers import GLUE_FIXTURES, assert_one_line_error, pipeline_main

CPU = torch.device("cpu")


def test_precision_resolves_per_device():
    assert resolve_precision("auto", CPU) == "fp32"  # exact, and the ONNX graph's
    assert resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(UserError, match="fp16 runs on CUDA only"):
        resolve_precision("fp16", CPU)
    with pytest.raises(UserError, match="precision must be one of"):
        resolve_precision("fp8", CPU)
    with pytest.raises(UserError, match="--teacher-precision must be one of"):
        EncodeConfig(out="x", teacher_precision="half")
    with precision_context("bf16", CPU):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16


def test_a_bf16_teacher_is_a_teacher_of_its_own(tiny_teacher_dir):
    fp32 = Teacher(str(tiny_teacher_dir), device="cpu")
    bf16 = Teacher(str(tiny_teacher_dir), device="cpu", precision="bf16")
    assert fp32.spec.precision == "fp32" and bf16.spec.precision == "bf16"
    # fp32's identity has the fields it had before precisions existed: old directories resume
    assert set(fp32.spec.identity()) == set(TeacherSpec.IDENTITY)
    assert bf16.spec.identity() == {**fp32.spec.identity(), "precision": "bf16"}
    assert "precision" in TeacherSpec.SPACE
    assert bf16.backend == "torch"  # the ONNX graph is fp32
    with pytest.raises(UserError, match="runs an fp32 graph"):
        Teacher(str(tiny_teacher_dir), device="cpu", backend="onnx", precision="bf16")


def test_fidelity_measures_the_arithmetic_alone(tiny_teacher_dir, tiny_sentences):
    texts = tiny_sentences[:40]
    bf16 = Teacher(str(tiny_teacher_dir), device="cpu", precision="bf16")
    check = bf16.precision_fidelity(texts, batch_size=16)
    assert check["sentences"] == 40
    assert 0.999 < check["min_cosine"] <= check["mean_cosine"] <= 1.0 + 1e-6
    vectors = bf16.encode(texts, batch_size=16)
    exact = Teacher(str(tiny_teacher_dir), device="cpu", backend="torch").encode(texts, batch_size=16)
    assert np.abs(vectors - exact).max() > 1e-6  # the arithmetic changed: other vectors
    cosines = (vectors * exact).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(exact, axis=1)
    assert cosines.min() == pytest.approx(check["min_cosine"], abs=1e-6)
    same = Teacher(str(tiny_teacher_dir), device="cpu").precision_fidelity(texts)
    assert same["min_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert bf16.precision_fidelity([]) == {"sentences": 0, "min_cosine": 1.0, "mean_cosine": 1.0}


def test_bf16_shards_record_their_precision_and_train_alone(tmp_path, tiny_corpus_file,
                                                           tiny_teacher_dir, tiny_shards,
                                                           capsys, monkeypatch):
    runner = CliRunner()
    out = tmp_path / "bf16"
    common = ["--corpus", str(tiny_corpus_file), "--teacher", str(tiny_teacher_dir), "--quiet",
              "--limit", "50", "--out", str(out)]
    result = runner.invoke(cli, ["encode", *common, "--teacher-precision", "bf16"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest.precision == "bf16" and manifest.extra.teacher_backend == "torch"
    check = manifest.extra.precision_check
    assert check["sentences"] == 50 and 0.999 < check["min_cosine"] <= 1.0 + 1e-6
    info = runner.invoke(cli, ["shards-info", str(out)])
    assert "torch, bf16 (against fp32 on 50 sentences: min cosine" in info.output
    assert read_manifest(tiny_shards).precision == "fp32"
    assert "precision_check" not in json.loads((tiny_shards / MANIFEST_NAME).read_text())["extra"]
    # another precision is another teacher: no resume into this directory, no training together
    code, _, err = pipeline_main(capsys, monkeypatch, "encode", *common)
    assert_one_line_error(code, err, "different teacher, corpus or settings")
    code, _, err = pipeline_main(capsys, monkeypatch, "train-student", "--shards", tiny_shards,
                                 "--shards", out, "--out", tmp_path / "student", "--max-steps", "1")
    assert_one_line_error(code, err, "precision: 'bf16' vs 'fp32'")
    result = runner.invoke(cli, ["train-student", "--shards", str(out), "--out", str(tmp_path / "s"),
                                 "--max-steps", "2", "--batch-size", "8", "--hidden", "8",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s" / "training_summary.json").read_text())
    assert summary["teacher_precision"] == "bf16"


def test_a_manifest_written_before_precisions_is_fp32(tmp_path, tiny_shards):
    raw = json.loads((tiny_shards / MANIFEST_NAME).read_text())
    del raw["precision"]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(raw))
    assert read_manifest(tmp_path).precision == "fp32"


def _train(capsys, monkeypatch, shards, out, *extra):
    return pipeline_main(capsys, monkeypatch, "train-student", "--shards", shards, "--out", out,
                         "--batch-size", "8", "--hidden", "8", "--no-progress", "--eval-every", "2",
                         "--checkpoint-every", "2", *extra)


def test_bf16_training_steps_keep_fp32_weights_and_resume_only_in_bf16(tmp_path, tiny_shards,
                                                                      capsys, monkeypatch):
    code, _, err = _train(capsys, monkeypatch, tiny_shards, tmp_path / "bf16", "--max-steps", "4",
                          "--precision", "bf16", "--stop-after", "2")
    assert code == 0, err
    code, _, err = _train(capsys, monkeypatch, tiny_shards, tmp_path / "bf16", "--max-steps", "4",
                          "--resume")  # precision auto: fp32 here, not what the checkpoint took
    assert_one_line_error(code, err, "different settings (precision)")
    code, _, err = _train(capsys, monkeypatch, tiny_shards, tmp_path / "bf16", "--max-steps", "4",
                          "--precision", "bf16", "--resume")
    assert code == 0, err
    summary = json.loads((tmp_path / "bf16" / "training_summary.json").read_text())
    assert summary["train"]["precision"] == "bf16" and summary["steps"] == 4
    code, _, err = _train(capsys, monkeypatch, tiny_shards, tmp_path / "fp32", "--max-steps", "4")
    assert code == 0, err
    weights = {name: load_file(str(tmp_path / name / "model.safetensors")) for name in ("bf16", "fp32")}
    assert {array.dtype for array in weights["bf16"].values()} == {np.dtype("float32")}
    lstm = "lstm.weight_hh_l0"
    assert not np.array_equal(weights["bf16"][lstm], weights["fp32"][lstm])  # other arithmetic
    assert np.abs(weights["bf16"][lstm] - weights["fp32"][lstm]).max() < 1e-2  # the same steps
    code, _, err = _train(capsys, monkeypatch, tiny_shards, tmp_path / "fp16", "--max-steps", "1",
                          "--precision", "fp16")
    assert_one_line_error(code, err, "fp16 runs on CUDA only")


# --- fine-tuning (glue-eval, finetune): bf16 training steps, fp32 predictions ---

def _glue(out, teacher_dir, *extra):
    return ["glue-eval", "--glue-dir", GLUE_FIXTURES, "--tasks", "RTE", "--teacher", str(teacher_dir),
            "--epochs", "1", "--lr-grid", "1e-3", "--teacher-lr-grid", "1e-4", "--head-hidden", "8",
            "--device", "cpu", "--out", str(out), *extra]


def test_a_run_at_the_devices_precision_keeps_the_settings_it_had():
    # the fingerprints of every record and fine-tuned teacher made before precisions existed
    assert list(TrainSettings().identity("lr", "encoder_lr")) == [
        "epochs", "batch_size", "weight_decay", "warmup", "grad_clip", "patience", "kd_alpha", "seed"]
    assert TrainSettings(precision="bf16").identity()["precision"] == "bf16"
    assert precision_override("auto", CPU) is None and precision_override("fp32", CPU) is None
    assert precision_override("bf16", CPU) == "bf16"


def test_bf16_fine_tuning_trains_in_bf16_and_scores_in_fp32(tmp_path, tiny_teacher_dir, capsys,
                                                            monkeypatch):
    seen = []
    forward = TaskModel.forward

    def watched(self, ids, lengths):
        seen.append((self.training, torch.is_autocast_enabled("cpu")))
        return forward(self, ids, lengths)

    monkeypatch.setattr(TaskModel, "forward", watched)
    out = tmp_path / "out"
    code, _, err = pipeline_main(capsys, monkeypatch, *_glue(out, tiny_teacher_dir, "--system",
                                                             "scratch", "--precision", "bf16"))
    assert code == 0, err
    assert {autocast for training, autocast in seen if training} == {True}
    assert {autocast for training, autocast in seen if not training} == {False}  # dev scores
    record = json.loads((out / "runs.jsonl").read_text().splitlines()[0])
    assert record["precision"] == "bf16"


def test_a_bf16_fine_tuning_run_is_a_run_of_its_own(tmp_path, tiny_teacher_dir, capsys, monkeypatch):
    out = tmp_path / "out"
    systems = ("--system", "teacher", "--system", "scratch")
    code, _, err = pipeline_main(capsys, monkeypatch, *_glue(out, tiny_teacher_dir, *systems))
    assert code == 0, err
    assert all("precision" not in json.loads(line) for line in (out / "runs.jsonl").open())
    teacher_meta = out / "finetuned-teacher" / "RTE" / "glue_model.json"
    assert "train_precision" not in json.loads(teacher_meta.read_text())
    code, _, err = pipeline_main(capsys, monkeypatch, *_glue(out, tiny_teacher_dir, *systems,
                                                             "--resume", "--precision", "bf16"))
    assert code == 0, err
    assert "kept from" not in err and "fine-tuning the teacher" in err  # nothing taken from fp32
    assert json.loads(teacher_meta.read_text())["train_precision"] == "bf16"
    code, _, err = pipeline_main(capsys, monkeypatch, *_glue(out, tiny_teacher_dir, *systems,
                                                             "--resume", "--precision", "bf16"))
    assert code == 0, err
    assert err.count("kept from") == 2  # bf16 resumes bf16


def test_fp16_fine_tuning_on_the_cpu_is_a_one_line_error(tmp_path, tiny_teacher_dir, capsys,
                                                         monkeypatch):
    out = tmp_path / "out"
    code, _, err = pipeline_main(capsys, monkeypatch, *_glue(out, tiny_teacher_dir, "--system",
                                                             "scratch", "--precision", "fp16"))
    assert_one_line_error(code, err, "fp16 runs on CUDA only", after_log=True)
    assert not (out / "runs.jsonl").exists()
