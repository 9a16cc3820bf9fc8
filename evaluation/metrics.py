"""GLUE metrics (scikit-learn / scipy) and the GLUE average.

All scores are on GLUE's 0-100 scale. A task's score is the unweighted mean of its metrics
(MRPC and QQP: (F1 + acc) / 2; STS-B: (Pearson + Spearman) / 2; MNLI: (matched acc + mismatched
acc) / 2, MNLI counting as one task), and the GLUE average is the unweighted mean of the task
scores over the tasks that were evaluated. This is the GLUE paper's macro-average; the
diagnostic set (AX) never enters it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from data.glue import GlueTask

# metric names per task, in GLUE's reporting order
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "CoLA": ("mcc",),
    "SST-2": ("acc",),
    "MRPC": ("f1", "acc"),
    "STS-B": ("pearson", "spearman"),
    "QQP": ("f1", "acc"),
    "MNLI": ("acc",),
    "QNLI": ("acc",),
    "RTE": ("acc",),
    "WNLI": ("acc",),
}


def _correlation(value: float) -> float:
    # Constant predictions (an untrained model) have no defined correlation: count them as 0.
    return 0.0 if math.isnan(value) else float(value)


METRICS = {
    "mcc": lambda y, p: float(matthews_corrcoef(y, p)),
    "acc": lambda y, p: float(accuracy_score(y, p)),
    "f1": lambda y, p: float(f1_score(y, p, pos_label=1, zero_division=0)),
    "macro_f1": lambda y, p: float(f1_score(y, p, average="macro", zero_division=0)),
    "pearson": lambda y, p: _correlation(pearsonr(y, p).statistic) if np.ptp(p) else 0.0,
    "spearman": lambda y, p: _correlation(spearmanr(y, p).statistic) if np.ptp(p) else 0.0,
}


def predictions_from_outputs(task: GlueTask, outputs: np.ndarray) -> np.ndarray:
    """(N, C) logits -> (N,) class ids; (N, 1) regression outputs -> (N,) scores."""
    return outputs[:, 0] if task.regression else outputs.argmax(axis=1)


def split_metrics(task: GlueTask, labels: np.ndarray, predictions: np.ndarray,
                  suffix: str = "") -> dict[str, float]:
    """The task's metrics on one labelled split, 0-100, keyed ``name`` or ``name_suffix``."""
    tail = f"_{suffix}" if suffix else ""
    return {
        f"{name}{tail}": 100.0 * METRICS[name](labels, predictions)
        for name in metric_names(task)
    }


def metric_names(task: GlueTask) -> tuple[str, ...]:
    """A GLUE task's metrics, or the ones a user's task was given by its type."""
    return task.metrics or TASK_METRICS[task.name]


def task_score(metrics: dict[str, float]) -> float:
    """The unweighted mean of a task's metrics (GLUE's per-task score)."""
    return float(np.mean(list(metrics.values())))


def glue_average(task_scores: dict[str, float]) -> float:
    """The unweighted mean of per-task scores over the tasks evaluated."""
    if not task_scores:
        raise ValueError("no task scores to average")
    return float(np.mean(list(task_scores.values())))


def majority_score(task: GlueTask, train_labels: np.ndarray, dev_labels: dict[str, np.ndarray]) -> float:
    """The task score of always predicting the training set's most frequent class (its mean score
    for a regression task): the floor a system must clear before its score says anything. WNLI's
    dev set, for one, puts every GLUE system of its time at or below this floor."""
    if task.regression:
        constant = float(np.mean(train_labels))
    else:
        classes, counts = np.unique(train_labels, return_counts=True)
        constant = classes[counts.argmax()]
    metrics: dict[str, float] = {}
    for suffix, labels in dev_labels.items():
        metrics.update(split_metrics(task, labels, np.full(len(labels), constant), suffix))
    return task_score(metrics)
