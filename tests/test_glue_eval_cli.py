"""`pipeline glue-eval` end to end on the fixture tasks with the tiny teacher and a tiny student."""

from __future__ import annotations

import json

import pytest

from tests.helpers import GLUE_FIXTURES, assert_one_line_error, pipeline_main


@pytest.fixture
def glue_eval(capsys, monkeypatch):
    """``glue_eval(*args)``: `pipeline glue-eval --glue-dir FIXTURES ARGS` in-process: (exit code,
    stdout, stderr)."""

    def run(*args):
        return pipeline_main(capsys, monkeypatch, "glue-eval", "--glue-dir", GLUE_FIXTURES, *args)

    return run


def test_teacher_end_to_end_with_submissions(tmp_path, tiny_teacher_dir, glue_eval):
    out = tmp_path / "out"
    code, _, err = glue_eval("--tasks", "SST-2,STS-B", "--tasks", "mnli", "--system", "teacher",
                             "--teacher", str(tiny_teacher_dir), "--epochs", "1", "--head-hidden", "8",
                             "--out", str(out), "--predict-test", "--device", "cpu")
    assert code == 0, err
    table = (out / "results.md").read_text()
    assert "| system | SST-2 (acc) | STS-B (P/S) | MNLI (m/mm acc) | GLUE avg |" in table
    assert "| teacher |" in table and "Zero-shot STS-B" in table
    results = json.loads((out / "results.json").read_text())
    assert set(results["systems"]["teacher"]["tasks"]["MNLI"]["metrics"]) == {"acc_m", "acc_mm"}
    assert "teacher" in results["zero_shot_stsb_spearman"]
    submissions = out / "submissions" / "teacher" / "seed0"
    assert sorted(p.name for p in submissions.iterdir()) == [
        "AX.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "SST-2.tsv", "STS-B.tsv"]
    ax = (submissions / "AX.tsv").read_text().splitlines()
    assert ax[0] == "index\tprediction" and len(ax) == 6
    assert {line.split("\t")[1] for line in ax[1:]} <= {"contradiction", "entailment", "neutral"}
    epochs = (out / "logs" / "teacher" / "MNLI" / "seed0.jsonl").read_text().splitlines()
    assert json.loads(epochs[0])["epoch"] == 1
    assert len((out / "runs.jsonl").read_text().splitlines()) == 3


def test_students_baselines_and_kd_end_to_end(tmp_path, tiny_teacher_dir, tiny_student_dir, glue_eval):
    out = tmp_path / "out"
    args = ["--tasks", "RTE,STS-B", "--system", f"student:{tiny_student_dir}",
            "--system", f"student:{tiny_student_dir}+kd", "--system", "scratch", "--system", "kd",
            "--system", "teacher", "--teacher", str(tiny_teacher_dir), "--epochs", "2",
            "--seeds", "2", "--teacher-seeds", "1", "--head-hidden", "8", "--out", str(out),
            "--device", "cpu"]
    code, _, err = glue_eval(*args)
    assert code == 0, err
    summary = json.loads((out / "results.json").read_text())["systems"]
    assert list(summary) == [f"student:{tiny_student_dir}", f"student:{tiny_student_dir}+kd",
                             "scratch", "kd", "teacher"]
    runs = {name: len(s["average"]["values"]) for name, s in summary.items()}
    assert runs == {**dict.fromkeys(list(summary)[:4], 2), "teacher": 1}
    assert "over 2 seed(s) (the teacher: 1)" in (out / "results.md").read_text()
    zero_shot = json.loads((out / "results.json").read_text())["zero_shot_stsb_spearman"]
    assert set(zero_shot) == {"teacher", f"student:{tiny_student_dir}"}
    # a rerun reuses the cached teacher logits instead of fine-tuning the teacher again
    code, out_again, err = glue_eval(*args, "--max-train-samples", "1000")
    assert code == 0, err
    assert (out_again + err).count("teacher logits from the cache") == 2


def test_zero_shot_only(tmp_path, tiny_teacher_dir, glue_eval):
    out = tmp_path / "out"
    code, _, err = glue_eval("--tasks", "STS-B", "--system", "teacher", "--teacher",
                             str(tiny_teacher_dir), "--zero-shot", "--out", str(out))
    assert code == 0, err
    assert not (out / "runs.jsonl").exists()
    assert "| teacher |" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--system", "bert"], "bad --system"),
        (["--system", "teacher", "--tasks", "squad"], "unknown GLUE task"),
        (["--system", "teacher", "--tasks", "RTE", "--zero-shot"], "not among the tasks"),
        (["--system", "teacher", "--hub"], "not both"),
    ],
)
def test_bad_input_is_one_line_user_error(args, message, tmp_path, glue_eval):
    code, _, err = glue_eval(*args, "--out", tmp_path / "out")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "out").exists()
