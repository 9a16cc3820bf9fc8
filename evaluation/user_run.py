"""`pipeline finetune` and `pipeline predict`: glue-eval's fine-tuning on a user's own data.

The data file becomes a task (``data.user_task``); below that everything is glue-eval's:
``build_model`` for the systems, ``finetune_grid`` (the learning-rate grid, early stopping and
model selection on dev), the seed-0 fine-tuned teacher and its cache (``evaluation.kd``) for
``--kd-teacher auto``, the task loss of Tang et al. (2019) for distillation. The first system's
dev-best run is saved as a self-contained classifier (``evaluation.classifier``); the others are
rows of the results table.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import polars as pl
import torch

from core.device import resolve_device
from core.errors import UserError
from data.glue import GlueSplit, GlueTask, TaskData
from data.user_task import (
    FORMATS,
    Columns,
    load_user_task,
    read_table,
    require_columns,
    task_type,
    text_column,
    write_table,
)
from evaluation.classifier import Predictions, check_output_dir, load_classifier, save_classifier
from evaluation.config import LR_GRID, TEACHER_LR_GRID, EvalConfig, parse_rates
from evaluation.finetune import FinetuneResult, encode_split, predict
from evaluation.heads import TaskModel
from evaluation.kd import seed0_teacher
from evaluation.metrics import metric_names
from evaluation.report import mean_std, mean_std_cell
from evaluation.run import fit_system, training_subset
from evaluation.systems import resolve_systems
from evaluation.user_augment import augment_split

SPLIT_SEED = 0  # one fixed dev split (without --dev) and augmentation for every system and seed
SAVABLE = ("student", "scratch", "embeddings", "teacher")  # backbones a classifier directory holds
AUTO = "auto"


@dataclass
class FinetuneConfig:
    """One `pipeline finetune` run. Optimisation defaults are glue-eval's (EvalConfig)."""

    train: Path
    out: Path
    student: Path | None = None  # short for --system student:DIR (student:DIR+kd with a KD teacher)
    systems: list[str] = field(default_factory=list)
    dev: Path | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    regression: bool = False
    dev_fraction: float = 0.1  # held out of --train (seeded) when there is no --dev
    seeds: int = EvalConfig.seeds
    epochs: int = EvalConfig.epochs
    patience: int = EvalConfig.patience
    batch_size: int = EvalConfig.batch_size
    lr_grid: list[float] = field(default_factory=lambda: list(LR_GRID))
    teacher_lr_grid: list[float] = field(default_factory=lambda: list(TEACHER_LR_GRID))
    teacher_head_lr: float = EvalConfig.teacher_head_lr
    head_hidden: int = EvalConfig.head_hidden
    dropout: float = EvalConfig.dropout
    teacher: str | None = None  # the base teacher (None: the packaged all-MiniLM-L6-v2)
    kd_teacher: str | None = None  # a fine-tuned classifier directory, or "auto"
    kd_alpha: float = EvalConfig.kd_alpha
    augment: int = 0  # synthetic copies of each training text, labelled by the KD teacher
    max_train_samples: int | None = None
    cache_dir: Path | None = None  # None: OUT.cache (fine-tuned teacher for auto, model2vec)
    device: str = "auto"
    command: str = ""

    def __post_init__(self) -> None:
        self.train, self.out = Path(self.train), Path(self.out)
        self.dev = None if self.dev is None else Path(self.dev)
        self.cache_dir = Path(self.cache_dir or f"{self.out}.cache")
        self.lr_grid = parse_rates(self.lr_grid, "--lr-grid")
        self.teacher_lr_grid = parse_rates(self.teacher_lr_grid, "--teacher-lr-grid")
        if self.student is not None:
            self.student = Path(self.student)
            self.systems = [f"student:{self.student}{'+kd' if self.kd_teacher else ''}", *self.systems]
        if not self.systems:
            raise UserError("give --student DIR or at least one --system")
        if self.kd_teacher not in (None, AUTO) and not Path(self.kd_teacher).is_dir():
            raise UserError(f"--kd-teacher {self.kd_teacher}: neither `auto` nor a directory")
        if not 0.0 < self.dev_fraction < 1.0:
            raise UserError(f"--dev-fraction must be in (0, 1), got {self.dev_fraction}")
        if self.augment < 0:
            raise UserError("--augment must be 0 or more")
        check_output_dir(self.out)

    @property
    def columns(self) -> Columns:
        return Columns(self.text_column, self.text_pair_column, self.label_column)

    def eval_config(self) -> EvalConfig:
        """The glue-eval settings this run shares (models, grids, the teacher cache)."""
        return EvalConfig(
            out=self.cache_dir, systems=list(self.systems), teacher=self.teacher,
            kd_alpha=self.kd_alpha, seeds=self.seeds, epochs=self.epochs,
            batch_size=self.batch_size, lr_grid=self.lr_grid, teacher_lr_grid=self.teacher_lr_grid,
            teacher_head_lr=self.teacher_head_lr, patience=self.patience,
            head_hidden=self.head_hidden, dropout=self.dropout,
            max_train_samples=self.max_train_samples, device=self.device, command=self.command,
        )


@dataclass
class FinetuneOutcome:
    out: Path
    task: GlueTask
    runs: list[dict]
    saved: dict  # the run saved as the classifier
    seconds: float


def run_finetune(config: FinetuneConfig) -> FinetuneOutcome:
    started = time.perf_counter()
    eval_config = config.eval_config()
    specs = resolve_systems(eval_config.systems)
    if specs[0].kind not in SAVABLE or specs[0].path is None and specs[0].kind != "teacher":
        raise UserError(f"--system {specs[0].label}: the first system is the one saved, and a "
                        f"classifier directory holds a student or the teacher; put one first")
    if config.augment and not any(spec.kd for spec in specs):
        raise UserError("--augment labels its copies with the KD teacher: give --kd-teacher "
                        "(or a +kd system)")
    data = load_user_task(config.train, config.dev, config.columns, config.regression,
                          config.dev_fraction, SPLIT_SEED)
    task = data.task
    train = training_subset(data.train, config.max_train_samples)
    dev = data.dev[""]
    labels = "" if task.regression else f" (labels: {', '.join(task.labels)})"
    dev_source = config.dev or f"{config.dev_fraction:g} of {config.train.name}, seed {SPLIT_SEED}"
    _log(f"{task.name}: {task_type(task)}{labels}; {len(train)} training rows, {len(dev)} dev rows "
         f"({dev_source}); metrics {', '.join(metric_names(task))}")
    device = resolve_device(config.device)
    config.cache_dir.mkdir(parents=True, exist_ok=True)
    kd_train = None
    if any(spec.kd for spec in specs):
        kd_train = distillation_data(config, eval_config, data, train, device)
    runs: list[dict] = []
    best: tuple[dict, TaskModel, FinetuneResult] | None = None
    for spec in specs:
        for seed in range(config.seeds):
            rows, targets = kd_train if spec.kd else (train, None)
            model, result, rates = fit_system(spec, data, rows, targets, seed, eval_config, device)
            record = {"system": spec.label, "seed": seed, "score": result.score,
                      "metrics": result.dev_metrics, "best_epoch": result.best_epoch, **rates,
                      "history": result.history}
            runs.append(record)
            _log(f"{spec.label} seed {seed}: dev score {result.score:.2f} "
                 f"({_metrics_text(result.dev_metrics)}; lr {rates['lr']:g}, epoch {result.best_epoch})")
            if spec is specs[0] and (best is None or result.score > best[0]["score"]):
                best = (record, model, result)
            del model
    record, model, result = best
    summary = summarize(runs, [spec.label for spec in specs])
    predictions = Predictions(predict(model, encode_split(model.backbone, dev), config.batch_size, device),
                              task.labels)
    meta = {
        "task_type": task_type(task), "system": specs[0].label, "seed": record["seed"],
        "dev_metrics": record["metrics"], "dev_score": record["score"],
        "best_epoch": record["best_epoch"], "lr": record["lr"], "encoder_lr": record["encoder_lr"],
        "train": str(config.train), "dev": str(dev_source),
        "train_rows": len(train), "dev_rows": len(dev),
        "settings": _settings(config), "command": config.command,
    }

    def extra_files(folder: Path) -> None:
        write_table(pl.concat([split_frame(dev, task), predictions.frame()], how="horizontal"),
                    folder / "dev_predictions.csv")
        write_results(folder, task, summary, runs, meta)

    save_classifier(model, task, specs[0].path, config.out, meta, result, extra_files)
    return FinetuneOutcome(config.out, task, runs, record, time.perf_counter() - started)


# -- task-specific distillation ---------------------------------------------------------------
def distillation_data(config: FinetuneConfig, eval_config: EvalConfig, data: TaskData,
                      train: GlueSplit, device: torch.device) -> tuple[GlueSplit, np.ndarray]:
    """The training rows (plus ``--augment`` copies) and the KD teacher's logits (N, C) on them.

    Copies take the teacher's prediction as their hard label: they are labelled by the teacher
    alone, as in Tang et al. (2019)."""
    teacher = kd_teacher_model(config, eval_config, data, train, device)
    if not config.augment:
        return train, predict(teacher, encode_split(teacher.backbone, train), config.batch_size, device)
    copies = augment_split(train, config.augment, SPLIT_SEED)
    _log(f"{data.task.name}: {len(copies)} augmented copies (masking, n-gram sampling) "
         "labelled by the KD teacher")
    logits = predict(teacher, encode_split(teacher.backbone, copies), config.batch_size, device)
    copies.labels = (logits[:, 0] if data.task.regression else logits.argmax(1)).astype(train.labels.dtype)
    rows = GlueSplit(train.task, "train+augmented", train.text_a + copies.text_a,
                     None if train.text_b is None else train.text_b + copies.text_b,
                     np.concatenate([train.labels, copies.labels]), train.index + copies.index)
    train_logits = predict(teacher, encode_split(teacher.backbone, train), config.batch_size, device)
    return rows, np.concatenate([train_logits, logits])  # (N + copies, C)


def kd_teacher_model(config: FinetuneConfig, eval_config: EvalConfig, data: TaskData,
                     train: GlueSplit, device: torch.device) -> TaskModel:
    """``auto``: the teacher fine-tuned on this data with seed 0 (cached under --cache-dir);
    a directory: a classifier saved by `pipeline finetune` for the same labels."""
    if config.kd_teacher in (None, AUTO):
        model, result, _ = seed0_teacher(eval_config, data, train, device, _log)
        _log(f"{data.task.name}: KD teacher dev score {result.score:.2f}")
        return model
    classifier = load_classifier(config.kd_teacher)
    task = data.task
    if (classifier.label_names != task.labels) or classifier.pair != task.pair:
        what = "regression" if classifier.label_names is None else f"labels {list(classifier.label_names)}"
        raise UserError(f"--kd-teacher {config.kd_teacher}: a classifier for {what}"
                        f"{' on pairs' if classifier.pair else ''}, not for this data's "
                        f"{'regression' if task.regression else f'labels {list(task.labels)}'}"
                        f"{' on pairs' if task.pair else ''}")
    return classifier.model


# -- results ----------------------------------------------------------------------------------
def summarize(runs: list[dict], systems: list[str]) -> dict:
    """Per system: every metric and the score as mean/std over seeds (report.mean_std)."""
    summary = {}
    for system in systems:
        mine = [r for r in runs if r["system"] == system]
        summary[system] = {
            "metrics": {k: mean_std([r["metrics"][k] for r in mine]) for k in mine[0]["metrics"]},
            "score": mean_std([r["score"] for r in mine]),
            "best_epoch": [r["best_epoch"] for r in mine],
        }
    return summary


def markdown(task: GlueTask, summary: dict, meta: dict) -> str:
    names = list(next(iter(summary.values()))["metrics"])
    seeds = len(next(iter(summary.values()))["score"]["values"])
    lines = [
        f"{task.name}: {meta['task_type']}; dev results ({meta['dev_rows']} rows: {meta['dev']}), "
        f"mean ± std over {seeds} seed(s), × 100. Each run's learning rate and epoch are picked "
        "on this dev set, which flatters every row alike. The score is the mean of the metrics.",
        "",
        "| system | " + " | ".join(names) + " | score |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for system, stats in summary.items():
        cells = [mean_std_cell(stats["metrics"][n]) for n in names] + [mean_std_cell(stats["score"])]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    lines += ["", f"Saved: {meta['system']} (seed {meta['seed']}, dev score {meta['dev_score']:.2f})."]
    return "\n".join(lines) + "\n"


def write_results(folder: Path, task: GlueTask, summary: dict, runs: list[dict], meta: dict) -> None:
    from core.io import atomic_write_bytes, atomic_write_json

    atomic_write_json(folder / "results.json", {"scale": "0-100", "task": task.name,
                                                "task_type": meta["task_type"], "systems": summary,
                                                "runs": runs, "settings": meta["settings"],
                                                "command": meta["command"]})
    atomic_write_bytes(folder / "results.md", markdown(task, summary, meta).encode())


def split_frame(split: GlueSplit, task: GlueTask) -> pl.DataFrame:
    """A labelled split's columns under the task's column names (gold labels as names)."""
    columns = {task.train.text_a: split.text_a}
    if split.text_b is not None:
        columns[task.train.text_b] = split.text_b
    if split.labels is not None:
        columns[task.train.label] = (split.labels.astype(np.float64) if task.regression
                                     else [task.labels[i] for i in split.labels])
    return pl.DataFrame(columns)


def _settings(config: FinetuneConfig) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in metrics.items())


def _log(message: str) -> None:
    click.echo(message, err=True)


# -- predict ----------------------------------------------------------------------------------
@dataclass
class PredictConfig:
    """One `pipeline predict` run."""

    model: Path
    input: Path
    out: Path
    text_column: str | None = None  # None: the column the classifier was trained on
    text_pair_column: str | None = None
    batch_size: int = EvalConfig.batch_size
    device: str = "auto"  # as finetune's: the same device reproduces its dev predictions

    def __post_init__(self) -> None:
        self.model, self.input, self.out = Path(self.model), Path(self.input), Path(self.out)
        if self.out.suffix.lower() not in FORMATS:
            raise UserError(f"--out {self.out}: unsupported output type; use {', '.join(FORMATS)}")
        if self.batch_size < 1:
            raise UserError("--batch-size must be positive")


def run_predict(config: PredictConfig) -> int:
    """Predict every row of ``config.input``; write the input columns plus ``prediction`` and
    ``prob_<label>`` (a regression: the score as ``prediction``) in input order. Returns the rows."""
    classifier = load_classifier(config.model, config.device)
    columns = classifier.meta["columns"]
    text_name = config.text_column or columns["text"]
    pair_name = config.text_pair_column or columns["pair"]
    frame = read_table(config.input)
    require_columns(frame, config.input, [text_name, pair_name if classifier.pair else None])
    texts = text_column(frame, config.input, text_name, allow_empty=True)
    pairs = text_column(frame, config.input, pair_name, allow_empty=True) if classifier.pair else None
    predictions = classifier.predict(texts, pairs, config.batch_size)
    result = predictions.frame()
    kept = frame.drop([name for name in result.columns if name in frame.columns])
    write_table(pl.concat([kept, result], how="horizontal"), config.out)
    return frame.height

