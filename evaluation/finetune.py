"""Fine-tuning one system on one task: the training loop, prediction and model selection.

Model selection looks at the dev set(s) only: after every epoch the model is scored on dev, the
best epoch's weights are kept, and training stops after ``patience`` epochs without improvement.
:func:`finetune_grid` selects the learning rate the same way: one fresh model per rate, the rate
whose best epoch scores highest on dev wins. Test sets are only ever predicted with the selected
weights (their labels are hidden anyway).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.batching import batches, pad_batch, sorted_batches
from core.device import autocast_context
from core.io import atomic_output, atomic_write_json
from core.optim import OptimStep, warmup_linear_lr
from data.glue import GlueSplit, GlueTask
from evaluation.backbones import Backbone
from evaluation.heads import TaskModel
from evaluation.metrics import predictions_from_outputs, split_metrics, task_score

EVAL_BATCH_FACTOR = 4  # prediction needs no gradients: larger batches fit


@dataclass
class TrainSettings:
    """Optimisation settings of one fine-tuning run."""

    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-3  # the head, and the whole model for BiLSTM students
    encoder_lr: float | None = None  # the backbone when it differs (the BERT teacher)
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of the steps with a linearly rising learning rate
    grad_clip: float = 1.0  # the gradient norm's ceiling; 0: no clipping
    patience: int = 2
    kd_alpha: float = 0.5  # weight of the hard-label loss when teacher logits are given
    seed: int = 0
    # the training steps' autocast (core.device.precision_override): None is the device's own
    # (fp32 on CPU, bf16 or fp16 on CUDA); "bf16" on a CPU with bf16 instructions is ~2x faster
    # for a transformer. Prediction (dev scores, logits) stays at the device's own precision.
    precision: str | None = None

    def identity(self, *left_out: str) -> dict:
        """The settings that decide a run's result, less ``left_out``. ``precision`` counts only
        when one was chosen, so runs at the device's own keep the keys they had before."""
        return {k: v for k, v in vars(self).items()
                if k not in left_out and not (k == "precision" and v is None)}


@dataclass
class Encoded:
    """A tokenized split: ragged token ids for each side, labels, optional teacher logits."""

    tokens_a: list[np.ndarray]
    tokens_b: list[np.ndarray] | None
    labels: np.ndarray | None  # (N,)
    targets: np.ndarray | None = None  # (N, C) teacher logits for distillation
    gold: np.ndarray | None = None  # (N,) bool: rows with a gold label (None: all of them)

    def __len__(self) -> int:
        return len(self.tokens_a)

    def lengths(self) -> np.ndarray:
        longest = [len(t) for t in self.tokens_a]
        if self.tokens_b is not None:
            longest = np.maximum(longest, [len(t) for t in self.tokens_b])
        return np.asarray(longest)


def encode_split(backbone: Backbone, split: GlueSplit) -> Encoded:
    """The split as the backbone reads it: each side apart, or a pair as one sequence
    (``joint_pairs``: a cross-encoding teacher)."""
    if split.text_b is not None and backbone.joint_pairs:
        return Encoded(backbone.tokenize_pairs(split.text_a, split.text_b), None, split.labels)
    return Encoded(
        backbone.tokenize(split.text_a),
        None if split.text_b is None else backbone.tokenize(split.text_b),
        split.labels,
    )


@dataclass
class FinetuneResult:
    best_epoch: int
    dev_metrics: dict[str, float]  # all dev splits, suffixed keys (MNLI: acc_m, acc_mm)
    score: float  # the task score of dev_metrics
    history: list[dict] = field(default_factory=list)


def finetune(
    model: TaskModel,
    task: GlueTask,
    train: Encoded,
    dev: dict[str, Encoded],
    settings: TrainSettings,
    device: torch.device,
    log: Callable[[dict], None] = lambda record: None,
) -> FinetuneResult:
    """Train ``model`` in place; on return it holds the weights of the best dev epoch."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model.to(device)
    steps_per_epoch = -(-len(train) // settings.batch_size)
    optim_step = _optim_step(model, settings, settings.epochs * steps_per_epoch, device)
    best: tuple[FinetuneResult, dict] | None = None
    history: list[dict] = []
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        loss = _train_epoch(model, task, train, settings, device, rng, optim_step,
                            first_step=(epoch - 1) * steps_per_epoch)
        metrics = evaluate(model, task, dev, settings.batch_size, device)
        record = {"epoch": epoch, "train_loss": loss, **metrics, "dev_score": task_score(metrics),
                  "seconds": round(time.perf_counter() - started, 2)}
        history.append(record)
        log(record)
        if best is None or record["dev_score"] > best[0].score:
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            best = (FinetuneResult(epoch, metrics, record["dev_score"]), state)
        elif epoch - best[0].best_epoch >= settings.patience:
            break
    result, state = best
    model.load_state_dict(state)
    result.history = history
    return result


@dataclass
class GridPoint:
    """One learning-rate setting of a grid and its dev score (the best epoch's)."""

    lr: float  # the head; the whole model when encoder_lr is None
    encoder_lr: float | None  # the backbone, when it differs
    score: float
    best_epoch: int
    seconds: float  # the point's training and dev scoring


@dataclass
class GridResult:
    """The dev-best grid point: its model (holding the best epoch's weights) and result."""

    model: TaskModel
    result: FinetuneResult
    lr: float
    encoder_lr: float | None
    points: list[GridPoint]  # every grid point, in grid order

    def rates(self) -> dict:
        """What a results record keeps: the chosen rates and every point's dev score."""
        return {"lr": self.lr, "encoder_lr": self.encoder_lr,
                "lr_grid": [dataclasses.asdict(point) for point in self.points]}


class FreshModels:
    """``build_model`` for :func:`finetune_grid` whose first model is built now, so the caller
    can tokenize with ``first.backbone`` before the grid; the first call hands that model over
    (and lets go of it, so a worse point's weights are not kept), later calls build afresh.
    ``build_model`` must seed itself, so that the first model equals a fresh one."""

    def __init__(self, build_model: Callable[[], TaskModel]):
        self.build_model = build_model
        self.first: TaskModel | None = build_model()

    def __call__(self) -> TaskModel:
        if self.first is not None:
            model, self.first = self.first, None
            return model
        return self.build_model()


@dataclass(frozen=True)
class GridCheckpoint:
    """Where a grid's finished points are kept, so that a run stopped between two points resumes
    after the last finished one instead of from its first: ``points.json`` (the run's ``key``,
    every finished point and the best one's result) and ``best.pt`` (the best point's weights),
    each replaced atomically, the weights first. Points are independent (each builds a fresh
    model and trains with the same seed), so a resumed grid ends as an uninterrupted one. A
    directory holding another key is ignored and overwritten."""

    directory: Path
    key: str

    POINTS, WEIGHTS = "points.json", "best.pt"

    def load(self) -> tuple[list[GridPoint], int | None, FinetuneResult | None]:
        """The finished points, the index of the best of them and its result ([] and None when
        nothing of this run is kept)."""
        try:
            saved = json.loads((self.directory / self.POINTS).read_text())
        except (OSError, ValueError):
            return [], None, None
        if not isinstance(saved, dict) or saved.get("key") != self.key or not saved.get("points"):
            return [], None, None
        return ([GridPoint(**point) for point in saved["points"]], saved["best"],
                FinetuneResult(**saved["result"]))

    def save(self, points: list[GridPoint], best: int, result: FinetuneResult,
             model: TaskModel | None) -> None:
        """After each point: ``model`` is the new best point's (None: the best is unchanged)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if model is not None:
            with atomic_output(self.directory / self.WEIGHTS) as tmp:
                torch.save(model.state_dict(), tmp)
        atomic_write_json(self.directory / self.POINTS,
                          {"key": self.key, "points": [dataclasses.asdict(p) for p in points],
                           "best": best, "result": dataclasses.asdict(result)})

    def best_weights(self) -> dict:
        return torch.load(self.directory / self.WEIGHTS, map_location="cpu", weights_only=True)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def finetune_grid(
    build_model: Callable[[], TaskModel],
    task: GlueTask,
    train: Encoded,
    dev: dict[str, Encoded],
    settings: TrainSettings,
    rates: Sequence[float],
    device: torch.device,
    encoder_rates: Sequence[float | None] | None = None,
    log: Callable[[dict], None] = lambda record: None,
    checkpoint: GridCheckpoint | None = None,
) -> GridResult:
    """Fine-tune one fresh model per learning-rate setting; keep the one best on dev.

    The grid is ``rates x encoder_rates``. A rate sets ``settings.lr`` (the head, and the whole
    model when the encoder rate is None: the BiLSTM students); an encoder rate sets
    ``settings.encoder_lr`` (a pretrained transformer's discriminative rate). Without
    ``encoder_rates`` every point keeps ``settings.encoder_lr``. Every point calls
    ``build_model()`` afresh and trains with the same ``settings.seed``, so the points differ in
    their rate only. Selection uses the dev score of each point's best epoch
    (:func:`finetune`); a tie goes to the earlier point. Test data plays no part. ``log`` gets
    every epoch record with ``lr`` and ``encoder_lr`` added. Only the best model is kept in
    memory. With a ``checkpoint``, the points it kept are not trained again (see
    :class:`GridCheckpoint`); the caller clears it once the run's result is safe.
    """
    if not rates:
        raise ValueError("finetune_grid needs at least one learning rate")
    encoder_grid = list(encoder_rates) if encoder_rates else [settings.encoder_lr]
    grid = [(float(lr), encoder_lr) for lr, encoder_lr in itertools.product(rates, encoder_grid)]
    points, best_index, best_result = checkpoint.load() if checkpoint else ([], None, None)
    if [(p.lr, p.encoder_lr) for p in points] != grid[: len(points)]:
        points, best_index, best_result = [], None, None  # not this grid: start afresh
    best: GridResult | None = None  # the best point trained by this call, model in memory
    for lr, encoder_lr in grid[len(points):]:
        point_settings = dataclasses.replace(settings, lr=lr, encoder_lr=encoder_lr)
        model = build_model()
        result = finetune(model, task, train, dev, point_settings, device,
                          log=lambda record, lr=lr, encoder_lr=encoder_lr:
                          log({"lr": lr, "encoder_lr": encoder_lr, **record}))
        seconds = round(sum(record["seconds"] for record in result.history), 2)
        points.append(GridPoint(lr, encoder_lr, result.score, result.best_epoch, seconds))
        improved = best_result is None or result.score > best_result.score  # ties: the earlier
        if improved:
            best_index, best_result = len(points) - 1, result
            best = GridResult(model, result, lr, encoder_lr, points)
        if checkpoint is not None:
            checkpoint.save(points, best_index, best_result, model if improved else None)
        del model
    if best is None:  # the best point was trained before a stop: its weights are on disk
        model = build_model()
        model.load_state_dict(checkpoint.best_weights())
        point = points[best_index]
        best = GridResult(model, best_result, point.lr, point.encoder_lr, points)
    return best


def _optim_step(model: TaskModel, settings: TrainSettings, steps: int,
                device: torch.device) -> OptimStep:
    """AdamW with the backbone at ``encoder_lr`` and the head at ``lr``; BERT's schedule over
    ``steps``: linear warm-up for the ``warmup`` fraction, then linear decay to zero."""
    groups = [
        {"params": list(model.backbone.parameters()), "lr": settings.encoder_lr or settings.lr},
        {"params": list(model.head.parameters()), "lr": settings.lr},
    ]
    # fused: one kernel for all tensors, a faster optimizer step (on CPU too)
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay, fused=True)
    warmup = max(1, int(settings.warmup * steps))
    # a chosen precision says whether it needs loss scaling (fp16); None: the device's own does
    scaling = None if settings.precision is None else settings.precision == "fp16"
    return OptimStep(optimizer, lambda step, peak: warmup_linear_lr(step, steps, peak, warmup),
                     device, model.parameters(), settings.grad_clip, scaling)


def _train_epoch(model, task, train, settings, device, rng, optim_step: OptimStep,
                 first_step: int) -> float:
    """One pass over ``train`` in a random order; its steps are numbered from ``first_step``."""
    model.train()
    total, count = 0.0, 0
    order = batches(rng.permutation(len(train)), settings.batch_size)
    for step, rows in enumerate(order, start=first_step):
        ids, lengths = _collate(train, rows, model.backbone.pad_id)
        with autocast_context(device, settings.precision):
            outputs = model(ids.to(device), lengths)  # (B, C)
        loss = task_loss(task, outputs.float(), train, rows, settings.kd_alpha, device)
        optim_step(loss, step)
        total += loss.item() * len(rows)
        count += len(rows)
    return total / max(count, 1)


def task_loss(task: GlueTask, outputs: torch.Tensor, data: Encoded, rows: np.ndarray,
              kd_alpha: float, device: torch.device) -> torch.Tensor:
    """Cross-entropy (MSE for STS-B) on the labels; with teacher logits, Tang et al. (2019):
    ``alpha * hard + (1 - alpha) * MSE(student logits, teacher logits)``. A row without a gold
    label (a transfer-set variant, ``data.gold`` False) has no hard term: the teacher's logits
    alone label it."""
    labels = torch.as_tensor(data.labels[rows], device=device)  # (B,)
    if data.gold is not None and data.targets is not None:
        return _masked_kd_loss(task, outputs, data, rows, labels, kd_alpha, device)
    if task.regression:
        hard = nn.functional.mse_loss(outputs[:, 0], labels.float())
    else:
        hard = nn.functional.cross_entropy(outputs, labels.long())
    if data.targets is None:
        return hard
    targets = torch.as_tensor(data.targets[rows], device=device, dtype=torch.float32)  # (B, C)
    return kd_alpha * hard + (1.0 - kd_alpha) * nn.functional.mse_loss(outputs, targets)


def _masked_kd_loss(task: GlueTask, outputs: torch.Tensor, data: Encoded, rows: np.ndarray,
                    labels: torch.Tensor, kd_alpha: float, device: torch.device) -> torch.Tensor:
    """The batch mean of ``alpha * gold * hard + (1 - alpha) * MSE`` per row: the same mix as
    above where every row has its label, the distillation term alone where it has none."""
    if task.regression:
        hard = nn.functional.mse_loss(outputs[:, 0], labels.float(), reduction="none")  # (B,)
    else:
        hard = nn.functional.cross_entropy(outputs, labels.long(), reduction="none")  # (B,)
    gold = torch.as_tensor(data.gold[rows], device=device, dtype=torch.float32)  # (B,)
    targets = torch.as_tensor(data.targets[rows], device=device, dtype=torch.float32)  # (B, C)
    soft = nn.functional.mse_loss(outputs, targets, reduction="none").mean(dim=1)  # (B,)
    return (kd_alpha * gold * hard + (1.0 - kd_alpha) * soft).mean()


@torch.inference_mode()
def predict(model: TaskModel, data: Encoded, batch_size: int, device: torch.device) -> np.ndarray:
    """Model outputs (N, C) in the order of ``data``; batches of similar length for speed."""
    model.eval().to(device)
    outputs = np.zeros((len(data), model.head.num_outputs), dtype=np.float32)
    # a pair's length is its longer side's: both sides of a row share the batch
    for rows in sorted_batches(data.lengths(), batch_size * EVAL_BATCH_FACTOR):
        ids, lengths = _collate(data, rows, model.backbone.pad_id)
        with autocast_context(device):
            outputs[rows] = model(ids.to(device), lengths).float().cpu().numpy()
    return outputs


def evaluate(model: TaskModel, task: GlueTask, dev: dict[str, Encoded], batch_size: int,
             device: torch.device) -> dict[str, float]:
    """The task's metrics on every dev split (MNLI: matched and mismatched)."""
    metrics: dict[str, float] = {}
    for suffix, data in dev.items():
        predictions = predictions_from_outputs(task, predict(model, data, batch_size, device))
        metrics.update(split_metrics(task, data.labels, predictions, suffix))
    return metrics




def _collate(data: Encoded, rows: np.ndarray, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and (B,) lengths; for pairs (2B, T) and (2B,): the a sides, then the b sides."""
    sides = [data.tokens_a[i] for i in rows]
    if data.tokens_b is not None:
        sides += [data.tokens_b[i] for i in rows]
    return pad_batch(sides, pad_id)
