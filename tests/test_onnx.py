"""`pipeline export` and student.onnx: the ONNX student equals the torch student, without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from student import StudentConfig, load_student
from student.export import ExportConfig, cosines, run_export
from student.onnx import ONNX_META, ONNX_MODEL, OnnxStudent, is_onnx_student
from student.tokenization import TOKENIZER_FILE
from tests.helpers import (
    ROOT,
    assert_one_line_error,
    blocked_imports,
    pipeline_main,
    save_random_student,
    subprocess_env,
)


def edge_texts(sentences: list[str]) -> list[str]:
    """Sentences of every length, an empty one, and two cut at max_length."""
    return sentences + ["", "x", "the " * 200, "Paris, " * 40]


@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
@pytest.mark.parametrize("layers", [1, 2])
def test_fp32_onnx_equals_torch_student(tmp_path, tiny_teacher_dir, tiny_sentences, pooling, layers):
    source = save_random_student(tmp_path / "s", tiny_teacher_dir, pooling=pooling, layers=layers,
                                 normalize=layers == 2)
    result = run_export(ExportConfig(student=str(source)))
    assert result.out == tmp_path / "s.onnx" and result.min_cosine > 0.9999
    assert sorted(p.name for p in result.out.iterdir()) == sorted([ONNX_MODEL, ONNX_META, TOKENIZER_FILE])
    texts = edge_texts(tiny_sentences)
    expected = load_student(source, device="cpu").encode(texts, batch_size=13)
    onnx_student = OnnxStudent(result.out)
    vectors = onnx_student.encode(texts, batch_size=13)
    assert vectors.shape == expected.shape and vectors.dtype == np.float32
    assert cosines(vectors, expected).min() > 0.9999
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    # Batch size and so padding change nothing: one by one, and with extra pad columns.
    np.testing.assert_allclose(onnx_student.encode(texts[:20], batch_size=1), expected[:20], atol=1e-5)
    ids = onnx_student.token_ids(texts[:6])
    padded = np.full((6, 40), onnx_student.pad_token_id, dtype=np.int64)
    for row, tokens in enumerate(ids):
        padded[row, : len(tokens)] = tokens
    lengths = np.array([len(t) for t in ids], dtype=np.int64)
    np.testing.assert_allclose(onnx_student.forward(padded, lengths), expected[:6], atol=1e-5)
    assert onnx_student.encode([]).shape == (0, 16)
    assert onnx_student.encode("one sentence").shape == (1, 16)


def test_export_directory_describes_itself(tmp_path, tiny_student_dir):
    result = run_export(ExportConfig(student=str(tiny_student_dir), out=str(tmp_path / "e.onnx")))
    meta = json.loads((result.out / ONNX_META).read_text())
    config = StudentConfig.load(tiny_student_dir)
    assert (meta["max_length"], meta["pad_token_id"], meta["dim"]) == (
        config.max_length, config.pad_token_id, config.output_dim)
    assert meta["quantize"] == "none" and meta["check"]["min_cosine"] > 0.9999
    assert is_onnx_student(result.out) and not is_onnx_student(tiny_student_dir)
    import onnx

    model = onnx.load(str(result.out / ONNX_MODEL))
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    assert dims == [["batch", "length"], ["batch"]]  # dynamic batch and length
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_int8_reports_its_cosine(tmp_path, tiny_teacher_dir, tiny_sentences):
    source = save_random_student(tmp_path / "s", tiny_teacher_dir, layers=2)
    fp32 = run_export(ExportConfig(student=str(source)))
    int8 = run_export(ExportConfig(student=str(source), out=str(tmp_path / "q.onnx"), quantize="int8"))
    meta = json.loads((int8.out / ONNX_META).read_text())
    assert meta["quantize"] == "int8" and meta["check"]["min_cosine"] == pytest.approx(int8.min_cosine)
    assert "int8" in int8.summary() and f"{int8.min_cosine:.6f}" in int8.summary()
    assert int8.size_bytes < fp32.size_bytes
    import onnx

    ops = {n.op_type for n in onnx.load(str(int8.out / ONNX_MODEL)).graph.node}
    assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops
    texts = edge_texts(tiny_sentences)
    found = cosines(OnnxStudent(int8.out).encode(texts), load_student(source).encode(texts))
    assert found.min() > 0.99  # random tiny weights; the real figure is in benchmarks/RESULTS.md


def test_onnx_student_runs_in_a_process_without_torch(tmp_path, tiny_student_dir, tiny_sentences):
    """Import, load and encode with torch unimportable; the vectors match the torch student."""
    out = run_export(ExportConfig(student=str(tiny_student_dir), out=str(tmp_path / "e.onnx"))).out
    texts = edge_texts(tiny_sentences[:50])
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    code = blocked_imports("torch", "transformers", "sentence_transformers", "safetensors") + f"""
import json
import numpy as np
from student.onnx import OnnxStudent
student = OnnxStudent({str(out)!r})
vectors = student.encode(json.load(open({str(tmp_path / 'texts.json')!r})), batch_size=8)
np.save({str(tmp_path / 'v.npy')!r}, vectors)
assert 'torch' not in sys.modules, 'torch was imported'
print('torch-free', vectors.shape)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env=subprocess_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"torch-free ({len(texts)}, 16)" in result.stdout
    expected = load_student(tiny_student_dir).encode(texts, batch_size=8)
    assert cosines(np.load(tmp_path / "v.npy"), expected).min() > 0.9999


# -- real sentences ------------------------------------------------------------------------------
def real_sentences(shared_data: Path, count: int = 3000) -> list[str]:
    """SST-2 (short) and WikiSplit (long) sentences, interleaved."""
    sst = [line.split("\t")[0] for line in
           (shared_data / "glue" / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    wiki = [line.split("\t")[0] for line in
            (shared_data / "corpus" / "wikisplit" / "validation.tsv").read_text(encoding="utf-8")
            .splitlines()]
    half = count // 2
    return [text for pair in zip(sst[:half], wiki[:half], strict=True) for text in pair]


@pytest.mark.parametrize(("pooling", "layers"), [  # 1.5 s each: one runs by default
    pytest.param("max", 1, marks=pytest.mark.slow), ("mean", 2),
    pytest.param("last", 2, marks=pytest.mark.slow)])
def test_fp32_onnx_equals_torch_on_real_sentences(tmp_path, shared_data, pooling, layers):
    """A few thousand real sentences (3 to 90 tokens, some truncated at 64) through a student with
    the bundled teacher's 30,522-token vocabulary; random weights, small widths for speed."""
    from core.teacher import default_teacher

    texts = real_sentences(shared_data)
    source = save_random_student(tmp_path / "s", Path(default_teacher()), output_dim=64,
                                 embed_dim=64, hidden=48, max_length=64, pooling=pooling,
                                 layers=layers, normalize=True)
    student = load_student(source)
    lengths = [len(ids) for ids in student.token_ids(texts)]
    assert len(texts) == 3000 and min(lengths) < 8 and max(lengths) == 64  # padding, truncation
    out = run_export(ExportConfig(student=str(source))).out
    expected = student.encode(texts, batch_size=64)
    found = cosines(OnnxStudent(out).encode(texts, batch_size=64), expected)
    assert found.min() > 0.9999, found.min()


# -- the command line ----------------------------------------------------------------------------
def test_cli_export_then_embed_uses_onnx(monkeypatch, capsys, tmp_path, tiny_student_dir, tiny_sentences):
    out = tmp_path / "cli.onnx"
    code, stdout, err = pipeline_main(capsys, monkeypatch, "export", "--student", tiny_student_dir,
                                      "--out", out)
    assert code == 0, err
    assert f"wrote {out}" in stdout and "min 1.0000" in stdout
    texts = tiny_sentences[:40] + [""]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n")
    code, _, err = pipeline_main(capsys, monkeypatch, "embed", "--student", out, "--input", source,
                                 "--out", tmp_path / "v.npy", "--batch-size", "8", "--no-progress")
    assert code == 0, err
    expected = load_student(tiny_student_dir).encode(texts)
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), expected, atol=1e-5)
    import student.embed as embed

    calls = []
    monkeypatch.setattr(embed, "OnnxStudent", lambda d: calls.append(d) or OnnxStudent(d))
    code, _, err = pipeline_main(capsys, monkeypatch, "embed", "--student", out, "--input", source,
                                 "--out", tmp_path / "v.arrow", "--no-progress")
    assert code == 0 and calls == [str(out)], err

    code, _, err = pipeline_main(capsys, monkeypatch, "embed", "--student", out, "--input", source,
                                 "--out", tmp_path / "w.npy", "--device", "cuda", "--no-progress")
    assert_one_line_error(code, err, "ONNX export", "--device cuda")


def test_cli_export_refusals(monkeypatch, capsys, tmp_path, tiny_student_dir):
    def run(*args):
        return pipeline_main(capsys, monkeypatch, "export", *args)

    (tmp_path / "empty").mkdir()
    code, _, err = run("--student", tmp_path / "empty")
    assert_one_line_error(code, err, "not a saved student directory")
    code, _, err = run("--student", tmp_path / "missing")
    assert_one_line_error(code, err, "no such student directory")
    (tmp_path / "file").write_text("x")
    code, _, err = run("--student", tmp_path / "file")
    assert_one_line_error(code, err, "no such student directory")
    code, _, err = run("--student", tiny_student_dir, "--out", tmp_path / "q", "--quantize", "int4")
    assert_one_line_error(code, err, "unknown --quantize 'int4'", "none, int8")
    assert not (tmp_path / "q").exists()

    out = tmp_path / "e.onnx"
    assert run("--student", tiny_student_dir, "--out", out)[0] == 0
    code, _, err = run("--student", tiny_student_dir, "--out", out)
    assert_one_line_error(code, err, "exists", "--overwrite")
    code, _, err = run("--student", out, "--out", tmp_path / "again")
    assert_one_line_error(code, err, "already an ONNX export")
    before = (out / ONNX_META).read_text()
    code, stdout, err = run("--student", tiny_student_dir, "--out", out, "--overwrite", "--quantize", "int8")
    assert code == 0, err
    assert "int8" in stdout and json.loads((out / ONNX_META).read_text())["quantize"] == "int8"
    assert before != (out / ONNX_META).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.onnx", "empty", "file"]  # nothing else


def test_failed_export_leaves_nothing(monkeypatch, tmp_path, tiny_student_dir):
    import student.export as export

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "_meta", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        run_export(ExportConfig(student=str(tiny_student_dir), out=str(tmp_path / "e.onnx")))
    assert list(tmp_path.iterdir()) == []


def test_onnx_student_refuses_bad_directories(tmp_path, tiny_student_dir):
    from core.errors import UserError

    with pytest.raises(UserError, match="not an ONNX student"):
        OnnxStudent(tiny_student_dir)
    out = run_export(ExportConfig(student=str(tiny_student_dir), out=str(tmp_path / "e.onnx"))).out
    (out / ONNX_MODEL).write_bytes(b"not a model")
    with pytest.raises(UserError, match="onnxruntime cannot load it"):
        OnnxStudent(out)
    meta = json.loads((out / ONNX_META).read_text())
    (out / ONNX_META).write_text(json.dumps(meta | {"format_version": 99}))
    with pytest.raises(UserError, match="format_version 99"):
        OnnxStudent(out)
