"""The fine-tuning engine: one system, one task, one seed, over its learning-rate grid.

It knows systems (:class:`evaluation.systems.SystemSpec`, built by a ``Builder``), what a run
learns from (:class:`TrainingData`), how runs train (:class:`evaluation.settings.Recipe`) and what
a finished run records (:class:`RunRecord`), and nothing of GLUE files or of the command line: the
GLUE runner (:mod:`evaluation.run`) and ``pipeline finetune``/``predict``
(:mod:`evaluation.user_run`) each sit on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from core.progress import log as _log
from data.augment import TransferSettings, transfer_passes
from data.glue import GlueSplit, TaskData
from evaluation.finetune import FinetuneResult, FreshModels, GridCheckpoint, encode_split, finetune_grid
from evaluation.finetuned_teacher import TEACHER_SEED, seed0_teacher
from evaluation.heads import TaskModel
from evaluation.report import append_jsonl, restart_log
from evaluation.settings import Recipe
from evaluation.systems import Builder, SystemSpec

SUBSET_SEED = 0  # one fixed training subset for every system and seed


@dataclass(frozen=True)
class TrainingData:
    """What one system learns from on one task: the task and its dev split(s), the rows it
    trains on and, for ``+kd``, the teacher's logits on those rows. With a transfer set
    (``--augment``) the rows are the training rows then their variants, and ``gold`` tells
    which rows have a gold label: a variant learns from the teacher's logits alone."""

    data: TaskData
    train: GlueSplit
    targets: np.ndarray | None = None  # (N, C)
    gold: np.ndarray | None = None  # (N,) bool; None: every row has its gold label
    transfer: TransferSettings | None = None  # what made the variants (None: no variants)


class Fitted(NamedTuple):
    model: TaskModel  # with its best epoch's weights
    result: FinetuneResult
    rates: dict  # GridResult.rates(): lr, encoder_lr and every grid point's dev score


@dataclass
class RunRecord:
    """What one finished run records. glue-eval adds the task, the rows and the times;
    finetune the epochs' history. Absent parts are left out of the stored dict."""

    system: str
    seed: int
    score: float
    metrics: dict[str, float]
    best_epoch: int
    lr: float
    encoder_lr: float | None
    lr_grid: list[dict]
    task: str | None = None
    train_rows: int | None = None
    train_seconds: float | None = None
    seconds: float | None = None
    history: list[dict] | None = None
    precision: str | None = None  # the training steps' where it was not the device's own

    OPTIONAL = ("task", "train_rows", "train_seconds", "seconds", "history", "precision")

    @classmethod
    def of(cls, spec: SystemSpec, seed: int, fitted: Fitted, **extra) -> RunRecord:
        result = fitted.result
        return cls(spec.label, seed, result.score, result.dev_metrics, result.best_epoch,
                   fitted.rates["lr"], fitted.rates["encoder_lr"], fitted.rates["lr_grid"], **extra)

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items()
                if not (k in self.OPTIONAL and v is None)}


def fit(spec: SystemSpec, rows: TrainingData, seed: int, recipe: Recipe, builder: Builder,
        device: torch.device, log_path: Path | None = None,
        rate: tuple[float, float | None] | None = None,
        checkpoint: GridCheckpoint | None = None) -> Fitted:
    """One system, one task, one seed over its learning-rate grid, the dev-best rate kept. The
    seed-0 teacher is ``seed0_teacher``'s (cached, shared with ``+kd``, its grid resumable of its
    own). ``log_path`` gets the epochs; ``rate`` = (lr, encoder_lr) trains at that one point
    instead of the grid; ``checkpoint`` keeps the finished grid points for a resume."""
    if spec.kind == "teacher" and seed == TEACHER_SEED:
        return Fitted(*seed0_teacher(builder, recipe, rows.data, rows.train, device, _log))
    teacher = spec.kind == "teacher"
    task = rows.data.task
    build = FreshModels(lambda: builder.model(spec, task, seed))
    encoded_train = encode_split(build.first.backbone, rows.train)
    encoded_train.targets, encoded_train.gold = rows.targets, rows.gold
    dev = {suffix: encode_split(build.first.backbone, split) for suffix, split in rows.data.dev.items()}
    if log_path is not None:
        restart_log(log_path, checkpoint.load()[0] if checkpoint else [])
    lr_grid, encoder_grid = recipe.grid.points(teacher)
    if rate is not None:
        lr_grid, encoder_grid = [rate[0]], None if rate[1] is None else [rate[1]]
    settings = recipe.settings(teacher, seed)
    if rows.transfer is not None and rows.gold is not None:  # --epochs: passes over the rows
        settings.epochs = transfer_passes(settings.epochs, int(rows.gold.sum()), len(rows.train))
    grid = finetune_grid(build, task, encoded_train, dev, settings,
                         lr_grid, device, encoder_grid, log=_epoch_log(log_path),
                         checkpoint=checkpoint)
    return Fitted(grid.model, grid.result, grid.rates())


def _epoch_log(path: Path | None) -> Callable[[dict], None]:
    return (lambda record: None) if path is None else (lambda record: append_jsonl(path, record))


def best_rate(records: list[dict]) -> tuple[float, float | None] | None:
    """The grid point (lr, encoder_lr) with the best mean dev score over the runs that searched
    the grid (a tie goes to the earlier point); None without such runs."""
    scores: dict[tuple, list[float]] = {}
    for record in records:
        for point in record["lr_grid"]:
            scores.setdefault((point["lr"], point["encoder_lr"]), []).append(point["score"])
    if not scores:
        return None
    return max(scores, key=lambda point: float(np.mean(scores[point])))


def training_subset(train: GlueSplit, limit: int | None) -> GlueSplit:
    """The first ``limit`` rows of one fixed shuffle (the whole split when ``limit`` is None)."""
    if limit is None or limit >= len(train):
        return train
    rows = np.random.default_rng(SUBSET_SEED).permutation(len(train))[:limit]
    return train.subset(np.sort(rows))
