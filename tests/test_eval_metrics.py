"""Metrics agree with scikit-learn / scipy; the GLUE average on hand-computed input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from data.glue import TASKS
from evaluation.metrics import (
    glue_average,
    majority_score,
    predictions_from_outputs,
    split_metrics,
    task_score,
)

Y = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 1])
P = np.array([1, 0, 0, 1, 0, 1, 1, 0, 1, 0])


def test_classification_metrics_match_sklearn():
    assert split_metrics(TASKS["CoLA"], Y, P) == {"mcc": pytest.approx(100 * matthews_corrcoef(Y, P))}
    mrpc = split_metrics(TASKS["QQP"], Y, P)
    assert mrpc == {"f1": pytest.approx(100 * f1_score(Y, P)),
                    "acc": pytest.approx(100 * accuracy_score(Y, P))}
    assert mrpc["acc"] == pytest.approx(70.0)  # 7 of 10 right
    assert mrpc["f1"] == pytest.approx(100 * 2 * 4 / (2 * 4 + 1 + 2))  # tp 4, fp 1, fn 2
    assert split_metrics(TASKS["MNLI"], Y, P, "mm") == {"acc_mm": pytest.approx(70.0)}


def test_regression_metrics_match_scipy():
    y = np.array([0.0, 1.2, 2.5, 3.1, 4.8, 5.0])
    p = np.array([0.3, 1.0, 2.9, 2.7, 4.1, 4.9])
    got = split_metrics(TASKS["STS-B"], y, p)
    assert got["pearson"] == pytest.approx(100 * pearsonr(y, p)[0])
    assert got["spearman"] == pytest.approx(100 * spearmanr(y, p)[0])
    # constant predictions (an untrained head) count as no correlation
    assert split_metrics(TASKS["STS-B"], y, np.full(6, 2.0)) == {"pearson": 0.0, "spearman": 0.0}


def test_outputs_to_predictions():
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert predictions_from_outputs(TASKS["MNLI"], logits).tolist() == [1, 0]
    assert predictions_from_outputs(TASKS["STS-B"], np.array([[1.5], [3.0]])).tolist() == [1.5, 3.0]


def test_glue_average_by_hand():
    scores = {
        "CoLA": task_score({"mcc": 40.0}),
        "MRPC": task_score({"f1": 80.0, "acc": 70.0}),  # 75
        "STS-B": task_score({"pearson": 60.0, "spearman": 50.0}),  # 55
        "MNLI": task_score({"acc_m": 70.0, "acc_mm": 72.0}),  # 71: one task
    }
    assert scores["MRPC"] == 75.0 and scores["MNLI"] == 71.0
    assert glue_average(scores) == pytest.approx((40 + 75 + 55 + 71) / 4)
    with pytest.raises(ValueError, match="no task scores to average"):
        glue_average({})


def test_majority_score_by_hand():
    train = np.array([1, 1, 1, 0])  # class 1 is the majority
    dev = np.array([1, 0, 1, 1, 0])  # always 1: 3 of 5 right; tp 3, fp 2, fn 0
    assert majority_score(TASKS["RTE"], train, {"": dev}) == pytest.approx(60.0)
    assert majority_score(TASKS["MRPC"], train, {"": dev}) == pytest.approx((100 * 6 / 8 + 60) / 2)
    assert majority_score(TASKS["CoLA"], train, {"": dev}) == 0.0  # a constant has no correlation
    # WNLI's trap: the training majority (0) is the dev minority
    assert majority_score(TASKS["WNLI"], np.array([0, 0, 1]), {"": dev}) == pytest.approx(40.0)
    # MNLI: matched and mismatched form one task; class 2 is the majority
    mnli = majority_score(TASKS["MNLI"], np.array([2, 2, 0]), {"m": np.array([2, 0]), "mm": np.array([2, 2])})
    assert mnli == pytest.approx((50 + 100) / 2)
    # STS-B: the training mean, constant, correlates with nothing
    assert majority_score(TASKS["STS-B"], np.array([1.0, 3.0]), {"": np.array([0.5, 4.0, 2.0])}) == 0.0
