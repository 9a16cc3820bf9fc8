"""A user's data file as a task: formats, task-type inference, the dev split and every refusal."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from core.errors import UserError
from data.augment import TransferSettings, augment_split
from data.user_task import (
    BINARY_METRICS,
    MULTICLASS_METRICS,
    REGRESSION_METRICS,
    Columns,
    load_user_task,
    read_table,
    write_table,
)
from evaluation.metrics import split_metrics
from tests.helpers import USER_FIXTURES as FIXTURES
from tests.helpers import write_file

PAIRS = Columns("question1", "question2", "is_duplicate")


def test_csv_string_classes_and_seeded_stratified_split():
    data = load_user_task(FIXTURES / "reviews.csv", None, Columns(), dev_fraction=0.25, seed=0)
    task, train, dev = data.task, data.train, data.dev[""]
    assert task.name == "reviews" and task.labels == ("neg", "pos") and not task.pair
    assert task.metrics == BINARY_METRICS
    assert len(train) + len(dev) == 48 and len(dev) == 12
    assert np.bincount(dev.labels).tolist() == [6, 6]  # stratified
    assert any(", really" in text for text in train.text_a + dev.text_a)  # CSV quoting kept
    again = load_user_task(FIXTURES / "reviews.csv", None, Columns(), dev_fraction=0.25, seed=0)
    assert again.dev[""].text_a == dev.text_a  # the split is seeded
    other = load_user_task(FIXTURES / "reviews.csv", None, Columns(), dev_fraction=0.25, seed=1)
    assert other.dev[""].text_a != dev.text_a


def test_jsonl_pairs_with_integer_classes():
    data = load_user_task(FIXTURES / "pairs.jsonl", None, PAIRS)
    assert data.task.pair and data.task.labels == ("0", "1")
    assert data.train.text_b is not None and len(data.train.text_b) == len(data.train.text_a)
    assert data.train.text_a[0].startswith("how do I get my")


def test_tsv_float_labels_are_a_regression(tmp_path):
    data = load_user_task(FIXTURES / "scores.tsv", None, Columns("sentence", None, "score"))
    assert data.task.regression and data.task.metrics == REGRESSION_METRICS
    assert data.train.labels.dtype == np.float32
    # integer labels are classes unless --regression says they are scores
    path = tmp_path / "ints.csv"
    pl.DataFrame({"text": ["a", "b", "c", "d"], "label": [1, 2, 3, 2]}).write_csv(path)
    assert load_user_task(path, path, Columns()).task.labels == ("1", "2", "3")
    assert load_user_task(path, path, Columns(), regression=True).task.regression


def test_parquet_multiclass_sorted_numerically_and_metrics(tmp_path):
    path = tmp_path / "tickets.parquet"
    pl.DataFrame({"body": [f"ticket {i}" for i in range(30)], "queue": [2, 10, 1] * 10}).write_parquet(path)
    data = load_user_task(path, None, Columns("body", None, "queue"), dev_fraction=0.3)
    task = data.task
    assert task.labels == ("1", "2", "10") and task.metrics == MULTICLASS_METRICS
    labels = np.array([0, 1, 2, 2])
    metrics = split_metrics(task, labels, np.array([0, 1, 2, 1]))
    assert set(metrics) == {"acc", "macro_f1"} and metrics["acc"] == 75.0
    assert metrics["macro_f1"] == pytest.approx(100 * (1 + 2 / 3 + 2 / 3) / 3)


def test_read_and_write_every_format_round_trip(tmp_path):
    frame = pl.DataFrame({"text": ['say "hi", then\tgo', "plain"], "label": ["a", "b"]})
    for suffix in (".csv", ".jsonl", ".parquet"):
        write_table(frame, tmp_path / f"t{suffix}")
        assert read_table(tmp_path / f"t{suffix}").equals(frame), suffix


@pytest.mark.parametrize(("name", "content", "columns", "fragments"), [
    ("a.csv", "text,label\nx,1\n", Columns("body"), ["no column 'body'", "columns: text, label"]),
    ("a.csv", "text,label\nx,pos\ny,pos\n", Columns(), ["one class only", "'pos'"]),
    ("a.csv", "", Columns(), ["empty file"]),
    ("a.csv", "text,label\n", Columns(), ["empty file"]),
    ("a.jsonl", '{"text": "x", "label": [1]}\n{"text": "y", "label": [2]}\n', Columns(),
     ["neither classes", "nor numbers"]),
    ("a.csv", "text,label\nx,pos\ny,\nz,neg\n", Columns(), ["without a label", "row 2"]),
    ("a.jsonl", '{"q": "x", "p": "a", "label": 0}\n{"q": "y", "p": "", "label": 1}\n',
     Columns("q", "p"), ["column 'p'", "empty cell", "row 2"]),
    ("a.jsonl", '{"q": "x", "p": "a", "label": 0}\n{"q": "y", "p": null, "label": 1}\n',
     Columns("q", "p"), ["column 'p'", "empty cell"]),
    ("a.txt", "x\n", Columns(), ["unsupported file type '.txt'"]),
])
def test_bad_training_files_are_refused(tmp_path, name, content, columns, fragments):
    path = write_file(tmp_path, name, content)
    with pytest.raises(UserError) as error:
        load_user_task(path, path, columns)
    assert all(f in str(error.value) for f in fragments), str(error.value)


def test_regression_labels_must_be_numbers(tmp_path):
    path = write_file(tmp_path, "a.csv", "text,label\nx,1.5\ny,high\n")
    with pytest.raises(UserError, match="'high'.*not a number"):
        load_user_task(path, path, Columns(), regression=True)


def test_dev_labels_the_training_file_lacks(tmp_path):
    train = write_file(tmp_path, "train.csv", "text,label\nx,pos\ny,neg\n")
    dev = write_file(tmp_path, "dev.csv", "text,label\nx,pos\nz,meh\n")
    with pytest.raises(UserError, match="'meh' not in the training file train.csv"):
        load_user_task(train, dev, Columns())
    assert load_user_task(train, train, Columns()).task.name == tmp_path.name  # train.* -> folder


def test_augmentation_is_seeded_and_keeps_words():
    data = load_user_task(FIXTURES / "pairs.jsonl", None, PAIRS)
    augmented = augment_split(data.train, TransferSettings(3), "[MASK]")
    assert len(augmented) == 3 * len(data.train) and augmented.labels is None
    assert len(augmented.text_b) == len(augmented.text_a)  # each variant keeps its pair
    assert augment_split(data.train, TransferSettings(3), "[MASK]").text_a == augmented.text_a
    assert json.dumps(augmented.index[:3]) == json.dumps(["0-aug0", "0-aug1", "0-aug2"])
