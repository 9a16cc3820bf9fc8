"""`pipeline finetune` / `pipeline predict` end to end with the tiny teacher and a tiny student."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from data.user_task import read_table
from evaluation.classifier import load_classifier
from evaluation.metrics import split_metrics
from tests.helpers import GLUE_FIXTURES, assert_one_line_error, pipeline_main, write_file
from tests.helpers import USER_FIXTURES as FIXTURES

PAIR_OPTIONS = ["--text-column", "question1", "--text-pair-column", "question2",
                "--label-column", "is_duplicate"]
QUICK = ["--epochs", "2", "--head-hidden", "8", "--device", "cpu"]


def finetune(capsys, monkeypatch, *args):
    return pipeline_main(capsys, monkeypatch, "finetune", *args)


def test_finetune_saves_a_classifier_whose_predictions_reproduce_dev(
        tmp_path, capsys, monkeypatch, tiny_student_dir):
    out = tmp_path / "reviews_model"
    code, stdout, err = finetune(capsys, monkeypatch, "--student", tiny_student_dir, "--train",
                                 FIXTURES / "reviews.csv", "--dev-fraction", "0.25", "--out", out,
                                 "--lr-grid", "1e-2,3e-3", "--seeds", "2", *QUICK)
    assert code == 0, err
    assert "reviews: binary classification (labels: neg, pos); 36 training rows, 12 dev rows" in err
    meta = json.loads((out / "classifier.json").read_text())
    assert meta["task_type"] == "binary classification" and meta["labels"] == ["neg", "pos"]
    assert meta["columns"] == {"text": "text", "pair": None, "label": "label"}
    assert set(meta["dev_metrics"]) == {"acc", "macro_f1", "mcc"} and meta["lr"] in (1e-2, 3e-3)
    assert meta["command"].startswith("pipeline finetune --student")
    results = json.loads((out / "results.json").read_text())
    assert [run["seed"] for run in results["runs"]] == [0, 1]
    assert meta["dev_score"] == max(run["score"] for run in results["runs"])  # the dev-best seed
    assert [p["lr"] for p in results["runs"][0]["lr_grid"]] == [1e-2, 3e-3]
    assert f"| student:{tiny_student_dir} |" in (out / "results.md").read_text()
    assert not list(tmp_path.glob(".reviews_model.*"))  # no temporary directory left behind

    # predict reproduces the dev predictions that finetune scored, and their metrics
    scored = read_table(out / "dev_predictions.csv")
    code, _, err = pipeline_main(capsys, monkeypatch, "predict", "--model", out, "--input",
                                 out / "dev_predictions.csv", "--out", tmp_path / "again.parquet")
    assert code == 0, err
    again = read_table(tmp_path / "again.parquet")
    assert again["prediction"].to_list() == scored["prediction"].to_list()
    np.testing.assert_allclose(again["prob_pos"].to_numpy(), scored["prob_pos"].to_numpy(), rtol=1e-6)
    classifier = load_classifier(out)
    gold = np.array([("neg", "pos").index(y) for y in scored["label"]])
    predicted = np.array([("neg", "pos").index(y) for y in again["prediction"]])
    assert split_metrics(classifier.task, gold, predicted) == pytest.approx(meta["dev_metrics"])

    # the Python API gives the same, and new rows keep their order and other columns
    api = classifier.predict(scored["text"].to_list())
    assert api.labels == scored["prediction"].to_list()
    np.testing.assert_allclose(api.probabilities.sum(1), 1.0, rtol=1e-6)
    code, _, err = pipeline_main(capsys, monkeypatch, "predict", "--model", out, "--input",
                                 FIXTURES / "new_reviews.csv", "--out", tmp_path / "new.csv")
    assert code == 0, err
    new = read_table(tmp_path / "new.csv")
    assert new.columns == ["id", "text", "prediction", "prob_neg", "prob_pos"]
    assert new["id"].to_list() == [f"r{i}" for i in range(6)]
    assert new["prediction"].to_list() == classifier.predict(new["text"].to_list()).labels


def test_pairs_teacher_then_student_distilled_from_it_with_augmentation(
        tmp_path, capsys, monkeypatch, tiny_teacher_dir, tiny_student_dir):
    teacher_out = tmp_path / "teacher_model"
    code, _, err = finetune(capsys, monkeypatch, "--system", "teacher", "--teacher", tiny_teacher_dir,
                            "--train", FIXTURES / "pairs.jsonl", *PAIR_OPTIONS, "--out", teacher_out,
                            "--teacher-lr-grid", "1e-4", *QUICK)
    assert code == 0, err
    teacher = load_classifier(teacher_out)
    assert teacher.pair and teacher.label_names == ("0", "1")
    assert json.loads((teacher_out / "classifier.json").read_text())["encoder"]["kind"] == "teacher"

    out = tmp_path / "student_model"
    code, _, err = finetune(capsys, monkeypatch, "--student", tiny_student_dir, "--system", "scratch",
                            "--kd-teacher", teacher_out, "--augment", "2", "--train",
                            FIXTURES / "pairs.jsonl", *PAIR_OPTIONS, "--out", out, "--lr-grid", "1e-2",
                            *QUICK)
    assert code == 0, err
    assert "72 variants (2 per training row" in err  # 36 training rows x 2
    systems = json.loads((out / "results.json").read_text())["systems"]
    assert list(systems) == [f"student:{tiny_student_dir}+kd", "scratch"]
    student = load_classifier(out)
    pairs = read_table(FIXTURES / "pairs.jsonl")
    result = student.predict(pairs["question1"].to_list(), pairs["question2"].to_list())
    assert len(result.labels) == 40 and set(result.labels) <= {"0", "1"}
    with pytest.raises(UserError, match="this classifier takes sentence pairs"):
        student.predict(["one side only"])


def test_kd_teacher_auto_is_fine_tuned_once_and_cached(
        tmp_path, capsys, monkeypatch, tiny_teacher_dir, tiny_student_dir):
    args = ["--student", tiny_student_dir, "--kd-teacher", "auto", "--teacher", tiny_teacher_dir,
            "--system", f"student:{tiny_student_dir}", "--teacher-lr-grid", "1e-4", "--train",
            FIXTURES / "reviews.csv", "--lr-grid", "1e-2", "--out", tmp_path / "m", *QUICK]
    code, _, err = finetune(capsys, monkeypatch, *args)
    assert code == 0, err
    assert "fine-tuning the teacher" in err
    assert (tmp_path / "m.cache" / "finetuned-teacher" / "reviews" / "glue_model.json").is_file()
    distilled, plain = json.loads((tmp_path / "m" / "results.json").read_text())["runs"]
    assert distilled["system"].endswith("+kd") and not plain["system"].endswith("+kd")
    # the same student, seed and rate: only the teacher's logits in the loss differ
    assert [r["train_loss"] for r in distilled["history"]] != [r["train_loss"] for r in plain["history"]]
    first = json.loads((tmp_path / "m" / "classifier.json").read_text())["dev_metrics"]
    code, _, err = finetune(capsys, monkeypatch, *args)
    assert code == 0, err
    # its logits are in the kd cache (--cache-dir's kd-cache): no teacher is even loaded
    assert "teacher logits from the cache" in err and "teacher (seed 0)" not in err
    assert json.loads((tmp_path / "m" / "classifier.json").read_text())["dev_metrics"] == first
    shutil.rmtree(tmp_path / "m.cache" / "kd-cache")
    code, _, err = finetune(capsys, monkeypatch, *args)
    assert code == 0, err
    assert "fine-tuning the teacher" not in err and "fine-tuned teacher (seed 0) from" in err
    assert json.loads((tmp_path / "m" / "classifier.json").read_text())["dev_metrics"] == first


def test_regression_from_tsv(tmp_path, capsys, monkeypatch, tiny_student_dir):
    out = tmp_path / "scores_model"
    code, _, err = finetune(capsys, monkeypatch, "--student", tiny_student_dir, "--train",
                            FIXTURES / "scores.tsv", "--text-column", "sentence", "--label-column",
                            "score", "--out", out, "--lr-grid", "1e-2", *QUICK)
    assert code == 0, err
    assert "scores: regression; 36 training rows, 4 dev rows" in err
    meta = json.loads((out / "classifier.json").read_text())
    assert meta["labels"] is None and set(meta["dev_metrics"]) == {"pearson", "spearman"}
    code, _, err = pipeline_main(capsys, monkeypatch, "predict", "--model", out, "--input",
                                 FIXTURES / "scores.tsv", "--out", tmp_path / "p.jsonl")
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and all(isinstance(r["prediction"], float) for r in rows)
    assert rows[0]["score"] == pytest.approx(0.046)  # the input columns are kept


@pytest.mark.parametrize(("train", "extra", "fragments"), [
    ("text,label\nx,1\ny,2\n", ["--label-column", "stars"], ["no column 'stars'", "columns: text, label"]),
    ("text,label\nx,pos\ny,pos\n", [], ["one class only"]),
    ('{"text": "x", "label": {"a": 1}}\n{"text": "y", "label": {"a": 2}}\n', [], ["neither classes"]),
    ("", [], ["empty file"]),
    ("text,label\nx,pos\ny,neg\n", ["--dev", "DEV"], ["'meh' not in the training file"]),
    ("text,other,label\nx,a,pos\ny,,neg\n", ["--text-pair-column", "other"],
     ["column 'other' has 1 empty cell"]),
    ("text,label\n" + "".join(f"row {i},{('pos', 'neg')[i % 2]}\n" for i in range(20)),
     ["--precision", "fp16"], ["fp16 runs on CUDA only"]),
])
def test_bad_input_is_one_line_and_leaves_out_untouched(
        tmp_path, capsys, monkeypatch, tiny_student_dir, train, extra, fragments):
    suffix = ".jsonl" if train.startswith("{") else ".csv"
    train_path = write_file(tmp_path, f"data{suffix}", train)
    dev = write_file(tmp_path, "dev.csv", "text,label\nx,pos\nz,meh\n")
    extra = [str(dev) if item == "DEV" else item for item in extra]
    out = tmp_path / "model"
    code, _, err = finetune(capsys, monkeypatch, "--student", tiny_student_dir, "--train", train_path,
                            "--out", out, *extra, *QUICK)
    assert_one_line_error(code, err, *fragments, after_log=True)
    assert not out.exists() and not list(tmp_path.glob(".model.*"))


def test_a_failed_run_keeps_the_previous_classifier_and_foreign_dirs_are_refused(
        tmp_path, capsys, monkeypatch, tiny_student_dir):
    out = tmp_path / "model"
    base = ["--student", tiny_student_dir, "--out", out, "--lr-grid", "1e-2", *QUICK]
    code, _, err = finetune(capsys, monkeypatch, "--train", FIXTURES / "reviews.csv", *base)
    assert code == 0, err
    before = (out / "classifier.json").read_text()
    code, _, err = finetune(capsys, monkeypatch, "--train", FIXTURES / "reviews.csv", "--label-column",
                            "nope", *base)
    assert_one_line_error(code, err, "no column 'nope'", after_log=True)
    assert (out / "classifier.json").read_text() == before
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    code, _, err = finetune(capsys, monkeypatch, "--train", FIXTURES / "reviews.csv", "--student",
                            tiny_student_dir, "--out", foreign, *QUICK)
    assert_one_line_error(code, err, "not a classifier directory")
    code, _, err = pipeline_main(capsys, monkeypatch, "predict", "--model", foreign, "--input",
                                 FIXTURES / "new_reviews.csv", "--out", tmp_path / "p.csv")
    assert_one_line_error(code, err, "no classifier.json")
    code, _, err = pipeline_main(capsys, monkeypatch, "predict", "--model", out, "--input",
                                 FIXTURES / "new_reviews.csv", "--out", tmp_path / "p.xlsx")
    assert_one_line_error(code, err, "unsupported output type")
    assert not (tmp_path / "p.csv").exists()


def test_a_crash_while_saving_leaves_no_half_written_classifier(
        tmp_path, capsys, monkeypatch, tiny_student_dir):
    out = tmp_path / "model"
    base = ["--student", tiny_student_dir, "--train", FIXTURES / "reviews.csv", "--out", out,
            "--lr-grid", "1e-2", *QUICK]
    code, _, err = finetune(capsys, monkeypatch, *base)
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("evaluation.user_run.write_results", disk_full)
    code, _, err = finetune(capsys, monkeypatch, *base, "--seeds", "2")
    assert_one_line_error(code, err, "No space left on device", after_log=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.cache"]


def test_the_saved_system_must_be_one_a_classifier_holds(tmp_path, capsys, monkeypatch):
    code, _, err = finetune(capsys, monkeypatch, "--system", "model2vec", "--train",
                            FIXTURES / "reviews.csv", "--out", tmp_path / "m", *QUICK)
    assert_one_line_error(code, err, "--system model2vec", "put one first")


def _epochs(records: list[dict]) -> list[tuple]:
    return [(r["epoch"], round(r["train_loss"], 6), r["acc"]) for r in records]


def _same_as_glue_eval(tmp_path, capsys, monkeypatch, glue_dir: Path, system: str, extra: list[str]):
    """glue-eval on SST-2 and finetune on SST-2's files as a user's: the same epochs."""
    glue_out = tmp_path / "glue"
    code, _, err = pipeline_main(capsys, monkeypatch, "glue-eval", "--glue-dir", glue_dir, "--tasks",
                                 "SST-2", "--system", system, "--out", glue_out, *extra)
    assert code == 0, err
    glue_run = json.loads((glue_out / "runs.jsonl").read_text().splitlines()[0])
    slug = next((glue_out / "logs").iterdir())
    glue_epochs = [json.loads(line) for line in (slug / "SST-2" / "seed0.jsonl").read_text().splitlines()]
    out = tmp_path / "user"
    code, _, err = finetune(capsys, monkeypatch, "--system", system, "--train",
                            glue_dir / "SST-2" / "train.tsv", "--dev", glue_dir / "SST-2" / "dev.tsv",
                            "--text-column", "sentence", "--out", out, *extra)
    assert code == 0, err
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert _epochs(run["history"]) == _epochs(glue_epochs)
    return glue_run["metrics"]["acc"], run["metrics"]["acc"]


def test_same_dev_scores_as_glue_eval_on_sst2_fixture(tmp_path, capsys, monkeypatch, tiny_student_dir):
    glue_acc, user_acc = _same_as_glue_eval(
        tmp_path, capsys, monkeypatch, GLUE_FIXTURES, f"student:{tiny_student_dir}",
        ["--epochs", "3", "--lr-grid", "1e-2", "--head-hidden", "8", "--device", "cpu"])
    assert glue_acc == user_acc


@pytest.mark.slow
def test_same_dev_scores_as_glue_eval_on_real_sst2(tmp_path, capsys, monkeypatch, shared_data):
    """The real SST-2 dev set (872 rows), 500 training rows, one epoch, the MiniLM teacher."""
    glue_acc, user_acc = _same_as_glue_eval(
        tmp_path, capsys, monkeypatch, shared_data / "glue", "teacher",
        ["--epochs", "1", "--max-train-samples", "500", "--teacher-lr-grid", "1e-4", "--device", "cpu"])
    print(f"SST-2 dev acc: glue-eval {glue_acc:.2f}, pipeline finetune {user_acc:.2f}")
    assert glue_acc == user_acc
