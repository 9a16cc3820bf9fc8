"""An MPNet teacher (all-mpnet-base-v2's layout, tiny and random) through every command: encode,
train-student, glue-eval (the teacher row, +kd, scratch, model2vec), finetune, export, embed.

What sets it apart from the BERT of the other tests: pad id 1 (MPNet counts its positions from
it), ``<s> </s> <mask>`` for ``[CLS] [SEP] [MASK]``, no token types, two positions fewer than its
table, and pooling, normalisation and max length read from its sentence-transformers files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from cache_tools.reader import ShardDirectory
from core.errors import UserError
from core.teacher import Teacher, special_frame, usable_positions
from core.teacher_onnx import TOKEN_TYPES
from data.corpus import CorpusConfig
from encoding import EncodeConfig, run_encode
from evaluation.classifier import load_classifier
from evaluation.systems import default_scratch_student
from student import load_student
from student.tokenization import load_tokenizer, pad_token_id
from tests.helpers import (
    GLUE_FIXTURES,
    USER_FIXTURES,
    pipeline_main,
    read_rows,
    train_tiny_student,
    write_sentence_transformers_files,
)

QUICK = ["--epochs", "1", "--head-hidden", "8", "--device", "cpu"]
BOS, PAD, EOS = 0, 1, 2  # <s>, <pad>, </s> in all-mpnet-base-v2's vocabulary and the tiny one's
MASK = 159  # <mask>: the last id, as in all-mpnet-base-v2 (30526)


@pytest.fixture(scope="module")
def mpnet_shards(tmp_path_factory, tiny_mpnet_dir, tiny_corpus_file) -> Path:
    out = tmp_path_factory.mktemp("mpnet_shards")
    run_encode(EncodeConfig(out=out, corpus=CorpusConfig(sources=[str(tiny_corpus_file)]),
                            teacher=str(tiny_mpnet_dir), shard_size=64, progress=False))
    return out


@pytest.fixture(scope="module")
def mpnet_student(tmp_path_factory, mpnet_shards) -> Path:
    return train_tiny_student(mpnet_shards, tmp_path_factory.mktemp("mpnet_student") / "s")


# -- the teacher ---------------------------------------------------------------------------------
def test_the_teacher_reads_mpnet_from_its_own_files(tiny_mpnet_dir, tiny_teacher_dir, tmp_path):
    assert usable_positions(Teacher(str(tiny_teacher_dir), device="cpu").model) == 64  # BERT's
    teacher = Teacher(str(tiny_mpnet_dir), device="cpu")
    assert (teacher.pooling, teacher.normalize, teacher.max_length, teacher.dim) == (
        "mean", True, 48, 32)  # 1_Pooling, 2_Normalize, sentence_bert_config.json
    assert teacher.pad_id == PAD and special_frame(teacher.tokenizer) == ([BOS], [EOS])
    assert usable_positions(teacher.model) == 62  # 64 positions, counted from pad id + 1
    assert Teacher(str(tiny_mpnet_dir), max_length=62, device="cpu").max_length == 62
    with pytest.raises(UserError, match=r"\[2, 62\]"):
        Teacher(str(tiny_mpnet_dir), max_length=63, device="cpu")
    other = Path(shutil.copytree(tiny_mpnet_dir, tmp_path / "other"))
    shutil.rmtree(other / "2_Normalize")
    write_sentence_transformers_files(other, 32, 40, pooling="cls", normalize=False)
    teacher = Teacher(str(other), device="cpu")
    assert (teacher.pooling, teacher.normalize, teacher.max_length) == ("cls", False, 40)
    (other / "sentence_bert_config.json").unlink()  # the tokenizer's limit, within the positions
    assert Teacher(str(other), device="cpu").max_length == 62


def test_onnx_graph_takes_no_token_types_and_makes_the_torch_vectors(tiny_mpnet_dir,
                                                                     tiny_sentences):
    torch_teacher, onnx_teacher = (Teacher(str(tiny_mpnet_dir), device="cpu", backend=backend)
                                   for backend in ("torch", "onnx"))
    expected = torch_teacher.encode(tiny_sentences[:60])
    np.testing.assert_allclose(onnx_teacher.encode(tiny_sentences[:60]), expected, atol=1e-5)
    assert TOKEN_TYPES not in onnx_teacher._onnx.inputs
    np.testing.assert_allclose(onnx_teacher.contextual_embeddings(max_tokens=64),
                               torch_teacher.contextual_embeddings(), rtol=1e-4, atol=1e-5)


# -- encode --------------------------------------------------------------------------------------
def test_encode_makes_the_sentence_transformers_vectors(mpnet_shards, tiny_mpnet_dir):
    from sentence_transformers import SentenceTransformer

    manifest = ShardDirectory(mpnet_shards).manifest
    assert (manifest.dim, manifest.pooling, manifest.normalize, manifest.max_length) == (
        32, "mean", True, 48)
    assert manifest.extra.teacher_backend == "onnx"
    _, vectors, texts = read_rows(mpnet_shards)
    reference = SentenceTransformer(str(tiny_mpnet_dir), device="cpu").encode(texts)
    np.testing.assert_allclose(vectors, reference, atol=2e-3)  # stored as float16
    tokens = ShardDirectory(mpnet_shards).read(0).tokens(0)
    assert tokens[0] == BOS and tokens[-1] == EOS and PAD not in tokens


def test_contextual_matrix_is_each_token_between_s_and_end(mpnet_shards, tiny_mpnet_dir):
    shards = ShardDirectory(mpnet_shards)
    matrix = np.asarray(shards.load_embeddings("contextual"))
    assert matrix.shape == (160, 32)  # the whole vocabulary, <mask> (the last id) included
    model = AutoModel.from_pretrained(tiny_mpnet_dir).eval()
    tokens = [BOS, 17, MASK]
    with torch.no_grad():  # <s> token </s>, mean-pooled like the teacher (not normalised)
        ids = torch.tensor([[BOS, token, EOS] for token in tokens])
        direct = model(input_ids=ids).last_hidden_state.mean(1).numpy()
    ratio = matrix[tokens] / direct
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-3)  # one common scale factor


def test_cli_encode_shows_the_vocabulary_pass(tmp_path, tiny_mpnet_dir, tiny_corpus_file, capsys,
                                              monkeypatch):
    code, _, err = pipeline_main(capsys, monkeypatch, "encode", "--corpus", tiny_corpus_file,
                                 "--out", tmp_path / "o", "--teacher", tiny_mpnet_dir,
                                 "--limit", "20", "--max-tokens", "60")
    assert code == 0, err
    assert "vocabulary pass" in err and "160/160" in err
    code, _, err = pipeline_main(capsys, monkeypatch, "encode", "--corpus", tiny_corpus_file,
                                 "--out", tmp_path / "q", "--teacher", tiny_mpnet_dir,
                                 "--limit", "20", "--quiet")
    assert code == 0 and "vocabulary pass" not in err, err


def test_augment_masks_words_with_the_teachers_own_mask_token(tmp_path, tiny_mpnet_dir,
                                                             tiny_corpus_file):
    out = tmp_path / "augmented"
    run_encode(EncodeConfig(out=out, corpus=CorpusConfig(sources=[str(tiny_corpus_file)], limit=30),
                            teacher=str(tiny_mpnet_dir), progress=False, augment=3))
    shards = ShardDirectory(out)
    data = shards.read(0, with_text=True)
    masked = [i for i, text in enumerate(data.texts) if "<mask>" in text]
    assert masked and not any("[MASK]" in text for text in data.texts)
    assert all(MASK in data.tokens(i) for i in masked)  # one token, not "<", "mask", ">"


# -- the student ---------------------------------------------------------------------------------
def test_student_of_an_mpnet_teacher(mpnet_student):
    assert pad_token_id(load_tokenizer(mpnet_student)) == PAD  # without tokenizer_config.json too
    config = json.loads((mpnet_student / "config.json").read_text())
    assert (config["output_dim"], config["embed_dim"], config["pad_token_id"],
            config["max_length"], config["normalize"]) == (32, 32, PAD, 48, True)
    student = load_student(mpnet_student)
    long = " ".join(["the old city by the river"] * 20)
    ids, lengths = student.tokenize(["the city", long])
    assert ids[0, 0] == BOS and ids[0, int(lengths[0]) - 1] == EOS
    assert (ids[0, int(lengths[0]):] == PAD).all()  # padded with <pad>, not with <s>
    assert int(lengths[1]) == 48 and ids[1, 47] == EOS  # truncated, </s> kept
    vectors = student.encode(["the city", long])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_default_scratch_student_takes_the_teachers_sizes_and_pad(tiny_mpnet_dir):
    config = default_scratch_student(str(tiny_mpnet_dir)).config
    assert (config.output_dim, config.embed_dim, config.pad_token_id, config.max_length) == (
        32, 32, PAD, 48)


# -- stage three ---------------------------------------------------------------------------------
def test_glue_eval_teacher_row_kd_and_baselines(tmp_path, tiny_mpnet_dir, mpnet_student, capsys,
                                                monkeypatch):
    out = tmp_path / "out"
    systems = [f"student:{mpnet_student}", f"student:{mpnet_student}+kd", "scratch", "model2vec",
               "teacher"]
    code, _, err = pipeline_main(
        capsys, monkeypatch, "glue-eval", "--glue-dir", GLUE_FIXTURES, "--tasks", "RTE,STS-B",
        *[arg for system in systems for arg in ("--system", system)], "--teacher", tiny_mpnet_dir,
        "--out", out, *QUICK)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert list(results["systems"]) == systems
    assert set(results["zero_shot_stsb_spearman"]) == {"teacher", f"student:{mpnet_student}"}
    assert "Skeletoken" not in err  # model2vec's tokenizer notes are kept quiet


def test_finetune_the_teacher_and_distil_from_it(tmp_path, tiny_mpnet_dir, mpnet_student, capsys,
                                                 monkeypatch):
    pairs = ["--train", USER_FIXTURES / "pairs.jsonl", "--text-column", "question1",
             "--text-pair-column", "question2", "--label-column", "is_duplicate"]
    teacher_out = tmp_path / "teacher_model"
    code, _, err = pipeline_main(capsys, monkeypatch, "finetune", "--system", "teacher",
                                 "--teacher", tiny_mpnet_dir, *pairs, "--out", teacher_out,
                                 "--teacher-lr-grid", "1e-4", *QUICK)
    assert code == 0, err
    teacher = load_classifier(teacher_out)
    assert len(teacher.predict(["the city"], ["a king"]).labels) == 1
    out = tmp_path / "student_model"
    code, _, err = pipeline_main(capsys, monkeypatch, "finetune", "--student", mpnet_student,
                                 "--system", f"student:{mpnet_student}", "--kd-teacher", "auto",
                                 "--teacher", tiny_mpnet_dir, "--teacher-lr-grid", "1e-4",
                                 "--train", USER_FIXTURES / "reviews.csv", "--lr-grid", "1e-2",
                                 "--out", out, *QUICK)
    assert code == 0, err
    assert "fine-tuning the teacher" in err
    assert list(json.loads((out / "results.json").read_text())["systems"]) == [
        f"student:{mpnet_student}+kd", f"student:{mpnet_student}"]


def test_export_then_embed(tmp_path, mpnet_student, tiny_sentences, capsys, monkeypatch):
    out = tmp_path / "s.onnx"
    code, stdout, err = pipeline_main(capsys, monkeypatch, "export", "--student", mpnet_student,
                                      "--out", out)
    assert code == 0 and "min 1.0000" in stdout, err
    source = tmp_path / "in.txt"
    source.write_text("\n".join(tiny_sentences[:30]) + "\n")
    code, _, err = pipeline_main(capsys, monkeypatch, "embed", "--student", out, "--input", source,
                                 "--out", tmp_path / "v.npy", "--batch-size", "8", "--no-progress")
    assert code == 0, err
    expected = load_student(mpnet_student).encode(tiny_sentences[:30])
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), expected, atol=1e-5)
