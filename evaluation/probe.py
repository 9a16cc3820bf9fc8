"""Frozen probes (SentEval-style): what an encoder's sentence vectors know, without fine-tuning.

Every system's encoder is frozen as it is (a student or the teacher as trained, scratch and
embeddings with their random parts, model2vec as distilled). Its vectors u, or [u; v; |u-v|; u*v]
for a pair (the features of the fine-tuning head), are standardised and fed to scikit-learn's
logistic regression (ridge regression for STS-B). The regularisation is chosen on dev from
``C_GRID``, as SentEval does; nothing else is tuned, so a probe of every system takes minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.batching import pad_batch, sorted_batches
from data.glue import GlueSplit, GlueTask, TaskData
from evaluation.backbones import Backbone
from evaluation.metrics import split_metrics, task_score
from evaluation.systems import Builder, SystemSpec

C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse regularisation strength; ridge's alpha is 1 / C
PROBE_SEED = 0  # the random parts of scratch and embeddings systems
MAX_ITER = 1000


@torch.inference_mode()
def sentence_vectors(backbone: Backbone, texts: Sequence[str], batch_size: int,
                     device: torch.device) -> np.ndarray:
    """(N, D) float32 frozen vectors in the order of ``texts``; batches of similar length."""
    backbone.eval().to(device)
    rows = backbone.tokenize(texts)
    vectors = np.zeros((len(rows), backbone.dim), dtype=np.float32)
    for batch in sorted_batches([len(r) for r in rows], batch_size):
        ids, lengths = pad_batch([rows[i] for i in batch], backbone.pad_id)
        vectors[batch] = backbone(ids.to(device), lengths).float().cpu().numpy()
    return vectors


def pair_features(u: np.ndarray, v: np.ndarray | None) -> np.ndarray:
    """u, or [u; v; |u-v|; u*v] (N, 4D) for a pair: the head's features (heads.TaskHead)."""
    return u if v is None else np.concatenate([u, v, np.abs(u - v), u * v], axis=1)


def split_features(backbone: Backbone, split: GlueSplit, batch_size: int,
                   device: torch.device) -> np.ndarray:
    u = sentence_vectors(backbone, split.text_a, batch_size, device)
    v = None if split.text_b is None else sentence_vectors(backbone, split.text_b, batch_size, device)
    return pair_features(u, v)


def fit_probe(task: GlueTask, train_x: np.ndarray, train_y: np.ndarray,
              dev: dict[str, tuple[np.ndarray, np.ndarray]], c_grid: Sequence[float] = C_GRID,
              ) -> tuple[float, dict[str, float], list[dict]]:
    """Fit one probe per C, keep the dev-best (a tie: the smaller C, the simpler model).

    Returns the chosen C, its dev metrics (all dev splits) and every C's dev score."""
    best: tuple[float, dict[str, float]] | None = None
    points = []
    for c in c_grid:
        if task.regression:
            model = make_pipeline(StandardScaler(), Ridge(alpha=1.0 / c))
        else:
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITER))
        model.fit(train_x, train_y)
        metrics: dict[str, float] = {}
        for suffix, (x, y) in dev.items():
            metrics.update(split_metrics(task, y, model.predict(x), suffix))
        points.append({"c": c, "score": task_score(metrics)})
        if best is None or task_score(metrics) > task_score(best[1]):
            best = (c, metrics)
    return best[0], best[1], points


def probe_task(specs: Sequence[SystemSpec], data: TaskData, train: GlueSplit,
               teacher_train: GlueSplit, builder: Builder, batch_size: int,
               device: torch.device, log: Callable[[str], None]) -> list[dict]:
    """One probe record per system (``+kd`` systems share their base's encoder: skipped)."""
    task = data.task
    records = []
    for spec in specs:
        if spec.kd:
            log(f"{task.name} {spec.label}: skipped (a probe of {spec.label[:-3]}'s frozen encoder)")
            continue
        started = time.perf_counter()
        rows = teacher_train if spec.kind == "teacher" else train
        backbone = builder.model(spec, task, PROBE_SEED).backbone
        batch = batch_size * 4
        train_x = split_features(backbone, rows, batch, device)
        dev = {suffix: (split_features(backbone, split, batch, device), split.labels)
               for suffix, split in data.dev.items()}
        c, metrics, points = fit_probe(task, train_x, rows.labels, dev)
        record = {"system": spec.label, "task": task.name, "seed": PROBE_SEED, "best_epoch": None,
                  "metrics": metrics, "score": task_score(metrics), "train_rows": len(rows),
                  "probe_c": c, "probe_c_grid": points,
                  "seconds": round(time.perf_counter() - started, 2)}
        log(f"{task.name} {spec.label} probe: dev score {record['score']:.2f} (C {c:g}, "
            f"{record['seconds']:.0f}s)")
        records.append(record)
    return records
