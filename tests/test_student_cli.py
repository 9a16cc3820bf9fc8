"""`pipeline train-student` / `pipeline embed` from the command line: refusals, variants, embed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from student import load_student
from tests.helpers import (
    assert_one_line_error,
    copy_shards,
    edit_json,
    pipeline_main,
    train_tiny_student,
)

TINY = ["--hidden", "16", "--batch-size", "32", "--heldout", "0.1", "--no-progress"]


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, tiny_shards) -> Path:
    return train_tiny_student(tiny_shards, tmp_path_factory.mktemp("cli_student") / "s")


# -- refusals: one line on stderr, exit code 2 -------------------------------------------------
def test_refuses_incomplete_manifest(monkeypatch, capsys, tmp_path, tiny_shards):
    shards = copy_shards(tiny_shards, tmp_path / "shards")
    (shards / "manifest.json").unlink()
    code, _, err = pipeline_main(capsys, monkeypatch, "train-student", "--shards", shards,
                           "--out", tmp_path / "out", *TINY)
    assert_one_line_error(code, err, "manifest.json", "incomplete")
    assert not (tmp_path / "out").exists()


def test_refuses_corrupt_shard(monkeypatch, capsys, tmp_path, tiny_shards):
    shards = copy_shards(tiny_shards, tmp_path / "shards")
    victim = sorted(shards.glob("train-*.arrow"))[1]
    payload = bytearray(victim.read_bytes())
    middle = len(payload) // 2
    payload[middle : middle + 8] = bytes(b ^ 0xFF for b in payload[middle : middle + 8])
    victim.write_bytes(payload)  # same size: only a checksum or the decoder can tell
    code, _, err = pipeline_main(capsys, monkeypatch, "train-student", "--shards", shards,
                           "--out", tmp_path / "out", *TINY)
    assert_one_line_error(code, err, victim.name, "sha256 mismatch (corrupt shard)")


def test_refuses_mixed_teachers(monkeypatch, capsys, tmp_path, tiny_shards):
    other = copy_shards(tiny_shards, tmp_path / "other")
    edit_json(other / "manifest.json", lambda manifest: manifest.update(teacher_fingerprint="0" * 64))
    code, _, err = pipeline_main(capsys, monkeypatch, "train-student", "--shards", tiny_shards,
                           "--shards", other, "--out", tmp_path / "out", *TINY)
    assert_one_line_error(code, err, "different teachers", "teacher_fingerprint")


def test_refuses_unknown_loss_and_longer_max_length(monkeypatch, capsys, tmp_path, tiny_shards):
    code, _, err = pipeline_main(capsys, monkeypatch, "train-student", "--shards", tiny_shards,
                           "--out", tmp_path / "a", "--loss", "mse+huber", *TINY)
    assert_one_line_error(code, err, "unknown loss")
    code, _, err = pipeline_main(capsys, monkeypatch, "train-student", "--shards", tiny_shards,
                           "--out", tmp_path / "b", "--max-length", "999", *TINY)
    assert_one_line_error(code, err, "max_length 64")


def test_arrow_and_hdf5_shards_of_one_teacher_train_together(monkeypatch, capsys, tmp_path,
                                                              tiny_shards, tiny_teacher_dir,
                                                              tiny_corpus_file):
    from data.corpus import CorpusConfig
    from encoding import EncodeConfig, run_encode

    hdf5 = tmp_path / "hdf5"
    run_encode(EncodeConfig(out=hdf5, corpus=CorpusConfig(sources=[str(tiny_corpus_file)]),
                            teacher=str(tiny_teacher_dir), shard_size=100, format="hdf5",
                            progress=False))
    code, out, err = pipeline_main(capsys, monkeypatch, "train-student", "--shards", tiny_shards,
                             "--shards", hdf5, "--out", tmp_path / "out", "--max-steps", "3",
                             "--verify", "full", *TINY)
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["train_rows"] > 300  # rows of both directories


# -- variants ----------------------------------------------------------------------------------
def test_variants_train_named_students_from_the_same_shards(monkeypatch, capsys, tmp_path,
                                                            tiny_shards):
    toml = tmp_path / "variants.toml"
    toml.write_text(
        "[defaults]\nmax-steps = 3\nhidden = 8\n\n"
        "[variants.small]\npooling = \"mean\"\n\n"
        "[variants.two_layer]\nlayers = 2\nloss = \"mse+cosine\"\nloss-weights = [1.0, 0.5]\n"
    )
    code, out, err = pipeline_main(capsys, monkeypatch, "train-student", "--shards", tiny_shards,
                             "--config", toml, "--variant", "all", "--out", tmp_path / "students",
                             "--hidden", "12", "--no-progress")
    assert code == 0, err
    small = json.loads((tmp_path / "students" / "small" / "config.json").read_text())
    deep = json.loads((tmp_path / "students" / "two_layer" / "config.json").read_text())
    assert (small["pooling"], small["hidden"]) == ("mean", 12)  # command line beats the TOML
    assert (deep["layers"], deep["hidden"]) == (2, 12)
    records = (tmp_path / "students" / "two_layer" / "metrics.jsonl").read_text()
    assert "loss_cosine" in records and "loss_mse" in records
    code, _, err = pipeline_main(capsys, monkeypatch, "train-student", "--shards", tiny_shards,
                           "--config", toml, "--variant", "nope")
    assert_one_line_error(code, err, "no variant(s) nope")


# -- embed -------------------------------------------------------------------------------------
def test_embed_text_file_to_npy_matches_encode(monkeypatch, capsys, tmp_path, student_dir,
                                               tiny_sentences):
    texts = tiny_sentences[:30] + [""] + tiny_sentences[30:45]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n")
    code, _, err = pipeline_main(capsys, monkeypatch, "embed", "--student", student_dir,
                           "--input", source, "--out", tmp_path / "v.npy", "--batch-size", "8",
                           "--no-progress")
    assert code == 0, err
    vectors = np.load(tmp_path / "v.npy")
    np.testing.assert_allclose(vectors, load_student(student_dir).encode(texts), atol=1e-6)


def test_embed_jsonl_and_tsv_to_arrow(monkeypatch, capsys, tmp_path, student_dir, tiny_sentences):
    texts = tiny_sentences[:12]
    expected = load_student(student_dir).encode(texts)
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "sentence": t}) + "\n"
                             for i, t in enumerate(texts)))
    tsv = tmp_path / "in.tsv"
    tsv.write_text("label\tsentence\n" + "".join(f"0\t{t}\n" for t in texts))
    for source in (jsonl, tsv):
        out = tmp_path / f"{source.suffix[1:]}.arrow"
        code, _, err = pipeline_main(capsys, monkeypatch, "embed", "--student", student_dir, "--input",
                               source, "--out", out, "--text-column", "sentence", "--no-progress")
        assert code == 0, err
        with pa.memory_map(str(out)) as handle:
            table = pa.ipc.open_file(handle).read_all()
        assert table.column("text").to_pylist() == texts
        vectors = np.asarray(table.column("vector").to_pylist(), dtype=np.float32)
        np.testing.assert_allclose(vectors, expected, atol=1e-6)
    code, _, err = pipeline_main(capsys, monkeypatch, "embed", "--student", student_dir, "--input",
                           jsonl, "--out", tmp_path / "x.npy", "--no-progress")
    assert_one_line_error(code, err, "'text'")
