"""The ONNX teacher backend (core.teacher_onnx): the torch model's vectors, a graph exported once
per teacher and layer into its cache (rebuilt when bad), a fallback to torch, and a quiet load."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cache_tools.manifest import read_manifest
from core import teacher as teacher_module
from core.errors import UserError
from core.teacher import Teacher
from core.teacher_onnx import MODEL_FILE
from encoding import EncodeConfig
from tests.helpers import pipeline_main

MIN_COSINE = 0.9999


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty ONNX cache of this test's own."""
    monkeypatch.setenv("SRA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def exports(monkeypatch) -> list[int]:
    """One entry per ONNX export the teachers of the test make."""
    calls: list[int] = []
    real = teacher_module.export_graph

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(teacher_module, "export_graph", counting)
    return calls


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def graph_files(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"onnx-teachers/*/{MODEL_FILE}"))


@pytest.mark.parametrize("layer, pooling", [(-1, "mean"), (1, "max"), (0, "cls")])
def test_onnx_makes_the_torch_vectors(tiny_teacher_dir, tiny_sentences, cache, layer, pooling):
    torch_teacher, onnx_teacher = (Teacher(str(tiny_teacher_dir), pooling, layer, device="cpu", backend=b)
                                   for b in ("torch", "onnx"))
    token_ids = torch_teacher.tokenize(tiny_sentences[:40])
    assert len({len(ids) for ids in token_ids}) > 5  # one batch, much padding
    expected = torch_teacher.embed(token_ids)
    assert min_cosine(onnx_teacher.embed(token_ids), expected) >= MIN_COSINE
    # the planned path too, and the unnormalised vocabulary pass
    assert min_cosine(onnx_teacher.encode(tiny_sentences, max_tokens=256),
                      torch_teacher.encode(tiny_sentences)) >= MIN_COSINE
    vocabulary = onnx_teacher.contextual_embeddings(), torch_teacher.contextual_embeddings()
    assert min_cosine(*vocabulary) >= MIN_COSINE
    assert onnx_teacher.backend == "onnx" and torch_teacher.backend == "torch"
    assert len(graph_files(cache)) == 1


def test_auto_is_onnx_on_cpu(tiny_teacher_dir, cache):
    assert Teacher(str(tiny_teacher_dir), device="cpu").backend == "onnx"


def test_the_cached_graph_is_reused(tiny_teacher_dir, tiny_sentences, cache, exports):
    first = Teacher(str(tiny_teacher_dir), device="cpu", backend="onnx").encode(tiny_sentences)
    (path,) = graph_files(cache)
    written = path.stat().st_mtime_ns
    second = Teacher(str(tiny_teacher_dir), device="cpu", backend="onnx").encode(tiny_sentences)
    assert len(exports) == 1 and path.stat().st_mtime_ns == written
    np.testing.assert_array_equal(first, second)
    Teacher(str(tiny_teacher_dir), layer=1, device="cpu", backend="onnx").encode(tiny_sentences[:2])
    assert len(exports) == 2 and len(graph_files(cache)) == 2  # a graph per layer


@pytest.mark.parametrize("damage", ["garbage", "truncated", "another-layer"])
def test_a_bad_cached_graph_is_rebuilt(tiny_teacher_dir, tiny_sentences, cache, exports, damage):
    expected = Teacher(str(tiny_teacher_dir), device="cpu", backend="torch").encode(tiny_sentences)
    Teacher(str(tiny_teacher_dir), device="cpu", backend="onnx").encode(tiny_sentences[:2])
    (path,) = graph_files(cache)
    if damage == "garbage":
        path.write_bytes(b"not an onnx graph")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # a valid graph that makes other vectors: the check before use catches it
        Teacher(str(tiny_teacher_dir), layer=0, device="cpu", backend="onnx").encode(tiny_sentences[:2])
        shutil.copyfile(next(p for p in graph_files(cache) if p != path), path)
    before = len(exports)
    rebuilt = Teacher(str(tiny_teacher_dir), device="cpu", backend="onnx")
    assert min_cosine(rebuilt.encode(tiny_sentences), expected) >= MIN_COSINE
    assert len(exports) == before + 1 and rebuilt.backend == "onnx"


def _failing_export(*args, **kwargs):
    raise RuntimeError("unsupported operator\nmore detail")


def test_an_unusable_graph_falls_back_to_torch_with_one_warning(tiny_teacher_dir, tiny_sentences, cache,
                                                                 monkeypatch, capsys):
    monkeypatch.setattr(teacher_module, "export_graph", _failing_export)
    teacher = Teacher(str(tiny_teacher_dir), device="cpu")
    vectors = teacher.encode(tiny_sentences)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "unsupported operator" in err[0]
    assert teacher.backend == "torch"
    expected = Teacher(str(tiny_teacher_dir), device="cpu", backend="torch").encode(tiny_sentences)
    np.testing.assert_array_equal(vectors, expected)


def test_an_unusable_graph_is_an_error_when_onnx_is_asked_for(tiny_teacher_dir, cache, monkeypatch):
    monkeypatch.setattr(teacher_module, "export_graph", _failing_export)
    teacher = Teacher(str(tiny_teacher_dir), device="cpu", backend="onnx")
    with pytest.raises(UserError, match="--teacher-backend onnx: unusable .*unsupported operator"):
        teacher.encode(["A sentence."])


def test_the_torch_backend_builds_no_graph(tiny_teacher_dir, tiny_sentences, cache, exports):
    teacher = Teacher(str(tiny_teacher_dir), device="cpu", backend="torch")
    assert teacher.encode(tiny_sentences).shape == (len(tiny_sentences), teacher.dim)
    assert exports == [] and not cache.exists()


def test_a_bad_backend_is_a_user_error(tiny_teacher_dir, tmp_path):
    with pytest.raises(UserError, match="--teacher-backend must be one of auto, torch, onnx"):
        Teacher(str(tiny_teacher_dir), device="cpu", backend="tensorrt")
    with pytest.raises(UserError, match="--teacher-backend must be one of auto, torch, onnx"):
        EncodeConfig(out=tmp_path, teacher_backend="tensorrt")


def _edit_weights(source: Path, target: Path, edit) -> Path:
    """A copy of the teacher in ``source`` whose checkpoint ``edit`` changed (a dict of tensors)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    edit(weights)
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_loading_and_exporting_print_nothing(tiny_teacher_dir, tmp_path, cache, capfd):
    import torch
    from transformers.utils import logging as hf_logging

    # an unused buffer in the checkpoint, as in the bundled MiniLM: transformers' load report lists it
    teacher_dir = _edit_weights(tiny_teacher_dir, tmp_path / "teacher",
                                lambda w: w.update({"embeddings.position_ids": torch.arange(64)[None]}))
    verbosity = hf_logging.get_verbosity()
    teacher = Teacher(str(teacher_dir), device="cpu", backend="onnx")
    teacher.encode(["A first sentence.", "A second, longer sentence than the first one."])
    assert capfd.readouterr() == ("", "")
    assert hf_logging.get_verbosity() == verbosity and teacher.backend == "onnx"


def test_missing_weights_are_one_warning_line(tiny_teacher_dir, tmp_path, capfd):
    teacher_dir = _edit_weights(tiny_teacher_dir, tmp_path / "teacher",
                                lambda w: w.pop("encoder.layer.0.output.dense.weight"))
    Teacher(str(teacher_dir), device="cpu", backend="torch")
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 weights missing" in err[0] and "encoder.layer.0.output.dense.weight" in err[0]


def test_encode_records_the_backend_but_keeps_the_settings(tiny_shards, tiny_corpus_file, tiny_teacher_dir,
                                                           tmp_path, capsys, monkeypatch):
    onnx_run = read_manifest(tiny_shards)
    assert onnx_run.extra.teacher_backend == "onnx"
    code, _, err = pipeline_main(capsys, monkeypatch, "encode", "--corpus", tiny_corpus_file, "--out",
                                 tmp_path / "o", "--teacher", tiny_teacher_dir, "--shard-size", 64,
                                 "--teacher-backend", "torch", "--quiet")
    assert code == 0, err
    torch_run = read_manifest(tmp_path / "o")
    assert torch_run.extra.teacher_backend == "torch"
    # the same vectors: a directory written with one backend resumes with the other
    assert torch_run.settings_fingerprint == onnx_run.settings_fingerprint
