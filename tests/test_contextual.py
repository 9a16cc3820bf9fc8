"""Contextual token embeddings, out-of-domain sentences and frozen embeddings (student quality)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoModel

from cache_tools.format import CONTEXTUAL_FILE, MANIFEST_NAME, ShardError
from cache_tools.reader import ShardDirectory
from cache_tools.verify import verify_directory
from data.corpus import CorpusConfig
from encoding import EncodeConfig, run_encode
from student.config import StudentConfig, TrainConfig
from student.model import StudentEncoder
from student.train import run_train_student
from tests.helpers import assert_one_line_error, copy_shards, edit_json, pipeline_main, tiny_corpus


@pytest.fixture(scope="module")
def ood_shards(tmp_path_factory, tiny_teacher_dir, tiny_corpus_file):
    """Tiny shards with an out-of-domain set of other sentences encoded beside them."""
    ood_file = tmp_path_factory.mktemp("ood") / "ood.txt"
    ood_file.write_text("\n".join(tiny_corpus(40, seed=7)) + "\n")
    out = tmp_path_factory.mktemp("ood_shards")
    run_encode(EncodeConfig(out=out, corpus=CorpusConfig(sources=[str(tiny_corpus_file)]),
                            teacher=str(tiny_teacher_dir), shard_size=64, progress=False,
                            ood=[str(ood_file)], ood_limit=30))
    return out


def test_contextual_matrix_is_each_token_through_the_teacher_alone(tiny_shards, tiny_teacher_dir):
    shards = ShardDirectory(tiny_shards)
    manifest = shards.manifest
    assert manifest.contextual_file == CONTEXTUAL_FILE and len(manifest.contextual_sha256) == 64
    matrix = np.asarray(shards.load_embeddings("contextual"))
    inputs = np.asarray(shards.load_embeddings("input"))
    assert matrix.shape == (manifest.vocab_size, manifest.dim) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix.std(), inputs.std(), rtol=1e-4)  # rescaled to their spread
    model = AutoModel.from_pretrained(tiny_teacher_dir).eval()
    tokens = [5, 17, manifest.vocab_size - 1]
    with torch.no_grad():  # [CLS] token [SEP], mean-pooled like the teacher (not normalised)
        ids = torch.tensor([[2, token, 3] for token in tokens])
        direct = model(input_ids=ids).last_hidden_state.mean(1).numpy()
    ratio = matrix[tokens] / direct
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-3)  # one common scale factor


def test_verify_checks_the_contextual_matrix(tmp_path, tiny_shards):
    copy = copy_shards(tiny_shards, tmp_path / "shards")
    path = copy / CONTEXTUAL_FILE
    matrix = np.load(path)
    matrix[3, 0] += 1.0
    np.save(path, matrix)
    verify_directory(copy, full=False)  # same shape: only the hash tells
    with pytest.raises(ShardError, match="sha256 mismatch"):
        verify_directory(copy, full=True)
    np.save(path, matrix[:-1])
    with pytest.raises(ShardError, match="expected"):
        verify_directory(copy, full=False)
    path.unlink()
    with pytest.raises(ShardError, match="missing"):
        verify_directory(copy, full=False)


def test_older_directory_refuses_contextual_init_and_a_rerun_adds_it(
        tmp_path, tiny_shards, tiny_teacher_dir, tiny_corpus_file, capsys, monkeypatch):
    old = copy_shards(tiny_shards, tmp_path / "old")
    (old / CONTEXTUAL_FILE).unlink()
    edit_json(old / MANIFEST_NAME, lambda manifest: manifest.update(contextual_file="",
                                                                    contextual_sha256=""))
    code, _, err = pipeline_main(capsys, monkeypatch, "train-student", "--shards", old, "--out",
                                 tmp_path / "s", "--max-steps", "2", "--no-progress")
    assert_one_line_error(code, err, "no contextual token embeddings", "rerun")
    code, out, err = pipeline_main(capsys, monkeypatch, "train-student", "--shards", old, "--out",
                                   tmp_path / "t", "--max-steps", "2", "--no-progress",
                                   "--init-embeddings", "teacher")
    assert code == 0, err
    run_encode(EncodeConfig(out=old, corpus=CorpusConfig(sources=[str(tiny_corpus_file)]),
                            teacher=str(tiny_teacher_dir), shard_size=64, progress=False))
    assert ShardDirectory(old).manifest.contextual_file == CONTEXTUAL_FILE
    np.testing.assert_array_equal(np.load(old / CONTEXTUAL_FILE), np.load(tiny_shards / CONTEXTUAL_FILE))


def test_ood_sentences_are_encoded_apart_and_scored_during_training(tmp_path, ood_shards):
    manifest = ShardDirectory(ood_shards).manifest
    ood = ShardDirectory(ood_shards).ood_directory
    assert manifest.ood.num_rows == ood.manifest.num_rows == 30 and manifest.num_rows == 200
    verify_directory(ood_shards, full=True)
    result = run_train_student(TrainConfig(shards=[str(ood_shards)], out=str(tmp_path / "s"), hidden=8,
                                           heldout=0.1, max_steps=6, eval_every=3, progress=False))
    assert {"val_cosine", "ood_cosine", "ood_spearman"} <= set(result.metrics)
    records = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert all("ood_cosine" in r for r in records if r["kind"] == "eval")


def test_frozen_embeddings_stay_as_initialised(tmp_path, tiny_shards):
    out = tmp_path / "frozen"
    run_train_student(TrainConfig(shards=[str(tiny_shards)], out=str(out), hidden=8, max_steps=4,
                                  freeze_embeddings=True, progress=False))
    from safetensors.numpy import load_file

    weights = load_file(out / "model.safetensors")
    embedding = next(v for k, v in weights.items() if k.endswith("embedding.weight"))
    contextual = np.load(tiny_shards / CONTEXTUAL_FILE)
    np.testing.assert_array_equal(embedding[: len(contextual)], contextual)


@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
@pytest.mark.parametrize("layers", [1, 2])
def test_unpacked_bilstm_equals_the_packed_one(pooling, layers):
    torch.manual_seed(0)
    config = StudentConfig(vocab_size=50, output_dim=6, embed_dim=12, hidden=10, layers=layers,
                           pooling=pooling, dropout=0.0)
    model = StudentEncoder(config).eval()
    lengths = torch.tensor([5, 1, 9, 3, 9])
    ids = torch.randint(1, 50, (5, 11))
    ids[torch.arange(11)[None] >= lengths[:, None]] = 0
    with torch.no_grad():
        packed = pack_padded_sequence(model.embedding(ids), lengths, batch_first=True,
                                      enforce_sorted=False)
        output, (h_n, _) = model.lstm(packed)
        padded, _ = pad_packed_sequence(output, batch_first=True)  # zeros at pads
        mask = torch.arange(padded.size(1))[None] < lengths[:, None]
        pooled = {"last": lambda: torch.cat([h_n[-2], h_n[-1]], -1),
                  "max": lambda: padded.masked_fill(~mask[..., None], float("-inf")).amax(1),
                  "mean": lambda: padded.sum(1) / lengths[:, None]}[pooling]()
        np.testing.assert_allclose(model(ids, lengths), model.projection(pooled), atol=1e-6)
