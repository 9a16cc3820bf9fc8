"""glue-eval --resume: finished runs are kept while their inputs are unchanged, the rest retrained."""

from __future__ import annotations

import json
import os

import pytest

from evaluation import finetune as finetune_module
from evaluation.run import weights_fingerprint
from evaluation.systems import SystemSpec
from tests.helpers import GLUE_FIXTURES, Stop, StoppedFinetune, pipeline_main


def scores(out):
    return {(r["system"], r["seed"]): r["score"]
            for r in map(json.loads, (out / "runs.jsonl").read_text().splitlines())}


def test_resume_keeps_finished_runs_and_retrains_the_rest(tmp_path, tiny_teacher_dir, capsys,
                                                          monkeypatch):
    out = tmp_path / "out"
    common = ["glue-eval", "--glue-dir", GLUE_FIXTURES, "--tasks", "RTE", "--system", "scratch",
              "--teacher", str(tiny_teacher_dir), "--epochs", "2", "--seeds", "2", "--grid-seeds",
              "1", "--lr-grid", "3e-3,1e-4", "--head-hidden", "8", "--device", "cpu",
              "--out", str(out)]
    code, _, err = pipeline_main(capsys, monkeypatch, *common)
    assert code == 0, err
    first = scores(out)
    records = out / "records" / "scratch" / "RTE"
    assert sorted(p.name for p in records.iterdir()) == ["seed0.json", "seed1.json"]

    # a stop after seed 0: its record stays, seed 1's is gone
    (records / "seed1.json").unlink()
    code, _, err = pipeline_main(capsys, monkeypatch, *common, "--resume")
    assert code == 0, err
    assert "RTE scratch seed 0: dev score" in err and "kept from" in err
    assert err.count("kept from") == 1  # seed 1 trained again, at the rate seed 0 chose
    assert scores(out) == first  # CPU runs are deterministic: the same table either way

    # a changed setting keeps nothing; so does a damaged record
    code, _, err = pipeline_main(capsys, monkeypatch, *common[:-2], "--out", str(out),
                                 "--resume", "--head-hidden", "16")
    assert code == 0, err
    assert "kept from" not in err
    (records / "seed0.json").write_text("{not json")
    code, _, err = pipeline_main(capsys, monkeypatch, *common, "--resume", "--head-hidden", "16")
    assert code == 0, err
    assert err.count("kept from") == 1  # seed 1 only


def test_a_run_stopped_inside_its_grid_resumes_after_its_last_finished_point(
        tmp_path, tiny_teacher_dir, capsys, monkeypatch):
    common = ["glue-eval", "--glue-dir", GLUE_FIXTURES, "--tasks", "RTE", "--system", "scratch",
              "--teacher", str(tiny_teacher_dir), "--epochs", "2", "--seeds", "1",
              "--lr-grid", "3e-3,1e-4", "--head-hidden", "8", "--device", "cpu"]
    code, _, err = pipeline_main(capsys, monkeypatch, *common, "--out", tmp_path / "whole")
    assert code == 0, err
    finetune = StoppedFinetune("lr", at=1e-4)
    monkeypatch.setattr(finetune_module, "finetune", finetune)
    out = tmp_path / "cut"
    with pytest.raises(Stop):
        pipeline_main(capsys, monkeypatch, *common, "--out", out)
    partial = out / "partial" / "scratch" / "RTE" / "seed0"
    assert [p["lr"] for p in json.loads((partial / "points.json").read_text())["points"]] == [3e-3]
    finetune.trained.clear()
    finetune.armed = False
    code, _, err = pipeline_main(capsys, monkeypatch, *common, "--out", out, "--resume")
    assert code == 0, err
    assert finetune.trained == [1e-4]  # the first point was kept
    assert scores(out) == scores(tmp_path / "whole")
    assert not partial.exists()  # cleared once the run's record is written
    logged = (out / "logs" / "scratch" / "RTE" / "seed0.jsonl").read_text().splitlines()
    assert [json.loads(line)["lr"] for line in logged] == [3e-3, 3e-3, 1e-4, 1e-4]  # 2 epochs each


def test_without_resume_every_run_is_trained_again(tmp_path, tiny_teacher_dir, capsys, monkeypatch):
    common = ["glue-eval", "--glue-dir", GLUE_FIXTURES, "--tasks", "RTE", "--system", "scratch",
              "--teacher", str(tiny_teacher_dir), "--epochs", "1", "--lr-grid", "1e-3",
              "--head-hidden", "8", "--device", "cpu", "--out", str(tmp_path / "out")]
    for _ in range(2):
        code, _, err = pipeline_main(capsys, monkeypatch, *common)
        assert code == 0, err
        assert "kept from" not in err


def test_the_weights_fingerprint_follows_content_not_mtimes(tmp_path):
    student = tmp_path / "student"
    student.mkdir()
    (student / "config.json").write_text("{}")
    (student / "model.safetensors").write_bytes(b"weights")
    spec = SystemSpec(f"student:{student}", "student", student, kd=False)
    before = weights_fingerprint(spec, teacher=None)
    stat = (student / "model.safetensors").stat()
    os.utime(student / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert weights_fingerprint(spec, teacher=None) == before  # touched, not retrained
    (student / "model.safetensors").write_bytes(b"retrained")
    assert weights_fingerprint(spec, teacher=None) != before
    assert weights_fingerprint(SystemSpec("scratch", "scratch", None, kd=False), teacher=None) is None
