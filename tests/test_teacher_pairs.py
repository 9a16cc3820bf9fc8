"""The teacher on sentence pairs: a cross-encoder (``--teacher-pairs joint``, one sequence a pair,
as BERT is fine-tuned) or siamese (each side apart, as the students read pairs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from core.batching import pad_batch
from core.teacher import Teacher, pool
from data.glue import TASKS, load_task
from evaluation.backbones import TeacherBackbone
from evaluation.config import EvalConfig
from evaluation.engine import TrainingData
from evaluation.finetune import FinetuneResult, encode_split, predict
from evaluation.finetuned_teacher import (
    FINETUNED_META,
    base_teacher_source,
    load_finetuned_teacher,
    save_finetuned_teacher,
)
from evaluation.run import run_source
from evaluation.systems import TEACHER
from tests.helpers import GLUE_FIXTURES as FIXTURES

CPU = torch.device("cpu")
FIRST = ["the cat sat on the mat", "a dog ran", "it was a long day at the old house by the river"]
SECOND = ["a cat was sitting", "the dog ran home fast today", "short"]


def hf_cross_encoding(backbone: TeacherBackbone, texts, pairs) -> torch.Tensor:
    """The pair vectors the Hugging Face way: the tokenizer's pair encoding (with its token type
    ids where the model has them) through the model, pooled as the teacher pools."""
    encoded = backbone.tokenizer(texts, pairs, padding=True, truncation="longest_first",
                                 max_length=backbone.max_length, return_tensors="pt")
    inputs = {k: v for k, v in encoded.items() if k != "token_type_ids" or backbone._segments}
    with torch.no_grad():
        hidden = backbone.model(**inputs).last_hidden_state
    return pool(hidden.float(), encoded["attention_mask"], backbone.pooling, backbone.normalize)


@pytest.mark.parametrize("fixture", ["tiny_teacher_dir", "tiny_mpnet_dir"])
def test_joint_pairs_are_the_models_own_pair_encoding(fixture, request):
    teacher = Teacher(str(request.getfixturevalue(fixture)), device="cpu")
    backbone = TeacherBackbone(teacher, joint_pairs=True).eval()
    assert backbone._segments == (fixture == "tiny_teacher_dir")  # BERT has token types, MPNet none
    tokens = backbone.tokenize_pairs(FIRST, SECOND)
    expected_ids = backbone.tokenizer(FIRST, SECOND, truncation="longest_first",
                                      max_length=backbone.max_length)["input_ids"]
    assert [t.tolist() for t in tokens] == expected_ids
    ids, lengths = pad_batch(tokens, backbone.pad_id)
    with torch.no_grad():
        ours = backbone(ids, lengths)
    np.testing.assert_allclose(ours.numpy(), hf_cross_encoding(backbone, FIRST, SECOND).numpy(),
                               rtol=1e-5, atol=1e-6)
    if backbone._segments:  # the second segment's token types change the vectors: they are used
        siamese_types = TeacherBackbone(teacher, joint_pairs=False).eval()
        with torch.no_grad():
            assert not torch.allclose(siamese_types(ids, lengths), ours, atol=1e-4)


def test_a_long_pair_is_truncated_longest_side_first(tiny_teacher_dir):
    backbone = TeacherBackbone(Teacher(str(tiny_teacher_dir), device="cpu"), joint_pairs=True)
    long = " ".join(["cat"] * 200)
    (tokens,) = backbone.tokenize_pairs([long], ["a dog ran"])
    assert len(tokens) == backbone.max_length
    first_sep = tokens.tolist().index(backbone.tokenizer.sep_token_id)
    assert backbone.tokenizer.decode(tokens[first_sep + 1:-1]) == "a dog ran"  # the short side, whole


@pytest.mark.parametrize("pairs", ["joint", "siamese"])
def test_teacher_model_on_pairs_saves_and_loads_as_it_reads(pairs, tmp_path, tiny_teacher_dir,
                                                             capfd):
    config = EvalConfig(out=tmp_path / "out", systems=["teacher"], glue_dir=FIXTURES,
                        teacher=str(tiny_teacher_dir), head_hidden=8, teacher_pairs=pairs)
    data = load_task("RTE", FIXTURES)
    model = config.builder.model(TEACHER, data.task, seed=0)
    dev = encode_split(model.backbone, data.dev[""])
    joint = pairs == "joint"
    assert model.backbone.joint_pairs == joint and model.head.pair == (not joint)
    assert (dev.tokens_b is None) == joint  # one sequence a pair, or two sides
    before = predict(model, dev, 4, CPU)
    capfd.readouterr()
    save_finetuned_teacher(model, data.task, tmp_path / "ft", "k",
                           FinetuneResult(best_epoch=1, dev_metrics={"acc": 50.0}, score=50.0))
    assert capfd.readouterr().err == ""  # no "Writing model shards" bar from transformers
    assert json.loads((tmp_path / "ft" / FINETUNED_META).read_text())["pairs"] == pairs
    loaded = load_finetuned_teacher(tmp_path / "ft", data.task, config.dropout)
    assert loaded.backbone.joint_pairs == joint and loaded.head.pair == (not joint)
    np.testing.assert_allclose(predict(loaded, encode_split(loaded.backbone, data.dev[""]), 4, CPU),
                               before, rtol=1e-5, atol=1e-6)


def test_only_a_cross_encoded_pair_task_changes_the_teachers_identity(tmp_path, tiny_teacher_dir):
    """Single sentences and siamese pairs keep the keys they had before --teacher-pairs existed
    (the fine-tuned teacher's cache, its kd logits, the run records); a joint pair task gets new ones."""
    configs = {pairs: EvalConfig(out=tmp_path, systems=["teacher"], glue_dir=FIXTURES,
                                 teacher=str(tiny_teacher_dir), teacher_pairs=pairs)
               for pairs in ("joint", "siamese")}
    for task in ("SST-2", "RTE"):
        data = load_task(task, FIXTURES)
        sources = {pairs: base_teacher_source(c.builder, c.recipe, data, data.train)
                   for pairs, c in configs.items()}
        assert "pairs" not in sources["siamese"]
        assert (sources["joint"] == sources["siamese"]) == (not TASKS[task].pair)
        runs = {pairs: run_source(TEACHER, TrainingData(data, data.train, None), 0, c, None)
                for pairs, c in configs.items()}
        assert "pairs" not in runs["siamese"]
        assert (runs["joint"] == runs["siamese"]) == (not TASKS[task].pair)


def test_a_bad_teacher_pairs_value_is_a_usage_error(tmp_path):
    from pipeline.cli import cli

    result = CliRunner().invoke(cli, ["glue-eval", "--teacher-pairs", "cross", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "'cross' is not one of 'joint', 'siamese'" in result.output
