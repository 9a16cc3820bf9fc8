"""glue-eval run bare, its baselines (model2vec, embeddings:DIR), the learning-rate grid, the
frozen probes, the caps and the speed picture, on the fixture tasks with the tiny BERT (offline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data.glue import load_task
from evaluation.config import EvalConfig
from evaluation.systems import SystemSpec
from tests.helpers import GLUE_FIXTURES as FIXTURES
from tests.helpers import assert_one_line_error, pipeline_main

QUICK = ["--epochs", "1", "--head-hidden", "8", "--device", "cpu", "--teacher-lr-grid", "1e-4"]


@pytest.fixture
def workdir(tmp_path, monkeypatch, tiny_student_dir) -> Path:
    """A working directory with one student in students/x (and its best/ checkpoint inside)."""
    shutil.copytree(tiny_student_dir, tmp_path / "students" / "x")
    shutil.copytree(tiny_student_dir, tmp_path / "students" / "x" / "best")
    (tmp_path / "students" / "notes").mkdir()  # not a student: ignored
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def glue_eval(capsys, monkeypatch, tiny_teacher_dir):
    def run(*args):
        return pipeline_main(capsys, monkeypatch, "glue-eval", "--teacher", tiny_teacher_dir, *args)
    return run


def test_bare_run_scores_the_students_and_the_baselines(workdir, glue_eval):
    code, out, err = glue_eval("--glue-dir", FIXTURES, "--tasks", "RTE", "--max-train-samples", "8",
                               "--lr-grid", "1e-3,1e-2", *QUICK)
    assert code == 0, err
    results = json.loads((workdir / "glue_results" / "results.json").read_text())
    assert list(results["systems"]) == ["student:students/x", "scratch", "model2vec", "teacher"]
    assert results["mode"] == "fine-tuned"
    runs = [json.loads(line) for line in (workdir / "glue_results" / "runs.jsonl").open()]
    for run in runs:  # each chosen rate is the dev-best of the grid, and recorded
        grid = run["lr_grid"]
        best = max(grid, key=lambda point: point["score"])
        assert run["score"] == best["score"] and (run["lr"], run["encoder_lr"]) == (
            best["lr"], best["encoder_lr"])
        expected = [(1e-3, 1e-4)] if run["system"] == "teacher" else [(1e-3, None), (1e-2, None)]
        assert [(p["lr"], p["encoder_lr"]) for p in grid] == expected
    chosen = results["systems"]["model2vec"]["tasks"]["RTE"]["chosen"]
    assert chosen["lr"][0] in (1e-3, 1e-2) and chosen["encoder_lr"] == [None]
    assert results["caps"] == {"max_train_samples": 8, "teacher_max_train_samples": None}
    assert results["train_rows"]["RTE"] == {"available": 12, "systems": 8, "teacher": 8}
    assert set(results["speed_sentences_per_s"]) == set(results["systems"])
    assert all(v > 0 for v in results["speed_sentences_per_s"].values())
    table = (workdir / "glue_results" / "results.md").read_text()
    assert table.startswith("Fine-tuned") and "Protocol:" in table
    assert "Rates: 0.001, 0.01 for the whole model" in table
    assert "Learning rates chosen on dev" in table and "RTE 8 of 12 (--max-train-samples 8)" in table
    assert "| model2vec |" in table and "sentences/s" in table
    assert (workdir / "glue_results" / "pareto.png").stat().st_size > 1000
    # model2vec was distilled once and cached under OUT
    assert len(list((workdir / "glue_results" / "model2vec").iterdir())) == 1


def test_teacher_cap_and_probe_mode(workdir, glue_eval):
    code, _, err = glue_eval("--glue-dir", FIXTURES, "--tasks", "RTE,STS-B", "--probe",
                             "--max-train-samples", "10", "--teacher-max-train-samples", "6",
                             "--system", "student:students/x", "--system", "student:students/x+kd",
                             "--system", "scratch", "--system", "teacher", *QUICK)
    assert code == 0, err
    out = workdir / "glue_results"
    assert not (out / "results.json").exists()  # a probe run keeps its own files
    probe = json.loads((out / "probe.json").read_text())
    assert probe["mode"] == "frozen probe"
    assert list(probe["systems"]) == ["student:students/x", "scratch", "teacher"]  # +kd: same encoder
    rte = probe["systems"]["teacher"]["tasks"]["RTE"]
    assert rte["train_rows"] == 6 and probe["systems"]["scratch"]["tasks"]["RTE"]["train_rows"] == 10
    assert rte["chosen"]["probe_c"][0] in probe["config"]["probe_c_grid"]
    assert set(probe["systems"]["scratch"]["tasks"]["STS-B"]["metrics"]) == {"pearson", "spearman"}
    table = (out / "probe.md").read_text()
    assert table.startswith("Frozen probe") and "logistic regression" in table
    assert "(--teacher-max-train-samples 6)" in table and "C chosen on dev" in table
    assert (out / "pareto.png").is_file()


def test_model2vec_backbone_is_model2vecs_mean_pooling(tmp_path, tiny_teacher_dir):
    from model2vec import StaticModel

    from evaluation.static import load_model2vec, prepare_model2vec

    config = EvalConfig(out=tmp_path, systems=["model2vec"], glue_dir=FIXTURES,
                        teacher=str(tiny_teacher_dir))
    rte = load_task("RTE", FIXTURES)
    model = config.builder.model(SystemSpec("model2vec", "model2vec", None, False), rte.task, seed=0)
    texts = list(rte.dev[""].text_a)
    ids = model.backbone.tokenize(texts)
    from core.batching import pad_batch

    with torch.inference_mode():
        ours = model.backbone(*pad_batch(ids, model.backbone.pad_id)).numpy()  # (N, D)
    static: StaticModel = load_model2vec(config.teacher, config.out)
    np.testing.assert_allclose(ours, static.encode(texts), rtol=1e-3, atol=1e-3)
    assert any(p.requires_grad for p in model.backbone.parameters())  # its table is fine-tuned
    messages: list[str] = []
    prepare_model2vec(config.teacher, config.out, messages.append)  # cached: no second distillation
    assert not any("distilling" in m for m in messages)


@pytest.mark.parametrize("init, matrix", [("contextual", "contextual"), ("teacher", "input")])
def test_embeddings_system_takes_the_shards_matrix_and_nothing_else(init, matrix, tmp_path,
                                                                  tiny_shards, tiny_teacher_dir):
    from cache_tools.reader import ShardDirectory
    from student import StudentEncoder, TrainConfig, load_student
    from student.train import run_train_student

    student_dir = tmp_path / "student"
    run_train_student(TrainConfig(shards=[str(tiny_shards)], out=str(student_dir), hidden=16,
                                  batch_size=32, heldout=0.1, max_steps=2, progress=False,
                                  init_embeddings=init))
    config = EvalConfig(out=tmp_path / "out", systems=[f"embeddings:{student_dir}"],
                        glue_dir=FIXTURES, teacher=str(tiny_teacher_dir))
    task = load_task("SST-2", FIXTURES).task
    spec = SystemSpec(f"embeddings:{student_dir}", "embeddings", student_dir, False)
    encoder = config.builder.model(spec, task, seed=3).backbone.encoder
    fresh = StudentEncoder(encoder.config)
    fresh.init_embeddings(ShardDirectory(tiny_shards).load_embeddings(matrix), seed=0)
    torch.testing.assert_close(encoder.embedding.weight, fresh.embedding.weight)
    trained = load_student(student_dir).model
    assert not torch.equal(encoder.lstm.weight_ih_l0, trained.lstm.weight_ih_l0)  # no SRA weights
    again = config.builder.model(spec, task, seed=3).backbone.encoder
    torch.testing.assert_close(again.lstm.weight_ih_l0, encoder.lstm.weight_ih_l0)  # seeded


def test_default_scratch_without_students_uses_the_teachers_tokenizer(tmp_path, tiny_teacher_dir):
    from core.teacher import Teacher

    config = EvalConfig(out=tmp_path, systems=["scratch"], glue_dir=FIXTURES,
                        teacher=str(tiny_teacher_dir))
    task = load_task("SST-2", FIXTURES).task
    backbone = config.builder.model(SystemSpec("scratch", "scratch", None, False), task, 0).backbone
    teacher = Teacher(str(tiny_teacher_dir), device="cpu")
    assert backbone.tokenize(["a good film"])[0].tolist() == teacher.tokenize(["a good film"])[0]
    assert backbone.dim == teacher.dim and backbone.encoder.config.hidden == 256


@pytest.mark.parametrize("args, fragments", [
    (["--system", "bert"], ["bad --system 'bert'"]),
    (["--lr-grid", "1e-3,fast"], ["--lr-grid", "'fast' is not a number"]),
    (["--teacher-lr-grid", "0"], ["--teacher-lr-grid", "positive"]),
    (["--students-dir", "empty"], ["--students-dir empty holds no student directory"]),
    (["--students-dir", "missing"], ["--students-dir missing is not a directory"]),
    (["--hub", "--glue-dir", str(FIXTURES)], ["not both"]),
], ids=["unknown-system", "grid-not-a-number", "grid-zero", "empty-students", "no-students",
        "hub-and-dir"])
def test_bad_input_is_one_line_and_keeps_out(args, fragments, tmp_path, monkeypatch, glue_eval):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.md").write_text("an earlier table\n")
    glue = [] if "--glue-dir" in args else ["--glue-dir", FIXTURES]
    code, _, err = glue_eval(*glue, "--tasks", "RTE", "--out", out, *args)
    assert_one_line_error(code, err, *fragments)
    assert sorted(p.name for p in out.iterdir()) == ["results.md"]
    assert (out / "results.md").read_text() == "an earlier table\n"


def test_without_glue_dir_offline_names_glue_dir(workdir, glue_eval, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = workdir / "out"
    out.mkdir()
    (out / "runs.jsonl").write_text("{}\n")
    code, _, err = glue_eval("--tasks", "RTE", "--out", out, *QUICK)
    assert_one_line_error(code, err, "--glue-dir")
    assert (out / "runs.jsonl").read_text() == "{}\n"


def test_help_shows_the_defaults(glue_eval):
    code, out, _ = glue_eval("--help")
    assert code == 0
    text = " ".join(out.split())
    for fragment in ("default: every student under --students-dir, then scratch, model2vec, teacher",
                     "default: 0.001,0.0003,0.0001", "default: students", "--teacher-max-train-samples",
                     "--probe", "default: nyu-mll/glue from the Hugging Face hub"):
        assert fragment in text, fragment
