"""Bad GLUE data and bad student directories given to `pipeline glue-eval`: one line, exit 2."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import GLUE_FIXTURES as FIXTURES
from tests.helpers import assert_one_line_error, pipeline_main

HEADER = "index\tsentence1\tsentence2\tlabel\n"


@pytest.fixture
def glue_eval(tmp_path, tiny_teacher_dir, capsys, monkeypatch):
    """``glue_eval(files, *systems)``: the RTE fixture with ``files`` replaced (bytes) or removed
    (None), through the real CLI."""

    def run(files: dict[str, bytes | None], *systems: str):
        folder = shutil.copytree(FIXTURES / "RTE", tmp_path / "glue" / "RTE")
        for name, content in files.items():
            if content is None:
                (folder / name).unlink()
            else:
                (folder / name).write_bytes(content)
        args = ["glue-eval", "--glue-dir", tmp_path / "glue", "--tasks", "RTE", "--teacher",
                tiny_teacher_dir, "--epochs", "1", "--head-hidden", "8", "--device", "cpu",
                "--out", tmp_path / "out"]
        return pipeline_main(capsys, monkeypatch, *args,
                             *[x for s in systems or ["teacher"] for x in ("--system", s)])

    return run


@pytest.mark.parametrize("files, fragments", [
    ({"train.tsv": b"index\tpremise\thypothesis\tlabel\n0\ta\tb\tentailment\n"},
     ["missing column(s) 'sentence1'"]),
    ({"train.tsv": HEADER.encode() + b"0\ta\tb\tmaybe\n"}, ["unknown label(s) 'maybe' for RTE"]),
    ({"train.tsv": HEADER.encode() + b"0\ta\tentailment\n"}, ["train.tsv:2: 3 columns, expected 4"]),
    ({"train.tsv": b""}, ["train.tsv: empty file, expected a header row"]),
    ({"dev.tsv": None}, ["RTE: missing dev.tsv"]),
    ({"train.tsv": HEADER.encode() + b"0\tCaf\xe9 au lait\tb\tentailment\n"},
     ["train.tsv: not UTF-8 text"]),
    ({"train.tsv": b"\x00\x01\xff\xfe" * 100}, ["train.tsv: not UTF-8 text"]),
], ids=["wrong-columns", "unknown-label", "short-row", "empty", "missing-file", "invalid-utf8",
        "binary"])
def test_bad_glue_file_is_one_line(files, fragments, glue_eval):
    code, _, err = glue_eval(files)
    assert_one_line_error(code, err, *fragments)


@pytest.mark.parametrize("damage, fragment", [
    (lambda d: (d / "config.json").unlink(), "no config.json"),
    (lambda d: (d / "config.json").write_text("{"), "config.json"),
], ids=["no-config", "config-not-json"])
def test_bad_student_directory_is_one_line(damage, fragment, tmp_path, tiny_shards, glue_eval):
    from student import TrainConfig
    from student.train import run_train_student

    student = tmp_path / "student"
    run_train_student(TrainConfig(shards=[str(tiny_shards)], out=str(student), hidden=16,
                                  batch_size=32, heldout=0.1, max_steps=1, progress=False))
    damage(student)
    code, _, err = glue_eval({}, f"student:{student}")
    assert_one_line_error(code, err, fragment, after_log=True)  # after "RTE: 12 training rows"
