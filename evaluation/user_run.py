"""`pipeline finetune` and `pipeline predict`: glue-eval's fine-tuning on a user's own data.

The data file becomes a task (``data.user_task``); below that everything is the engine's
(:mod:`evaluation.engine`): the systems and their ``Builder``, ``fit`` (the learning-rate grid,
early stopping and model selection on dev), the seed-0 fine-tuned teacher and its cache
(:mod:`evaluation.finetuned_teacher`) for ``--kd-teacher auto``, the task loss of Tang et al.
(2019) for distillation. The first system's
dev-best run is saved as a self-contained classifier (``evaluation.classifier``); the others are
rows of the results table.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from core.device import resolve_device
from core.errors import UserError
from core.progress import log as _log
from data.augment import AUTO as AUGMENT_AUTO
from data.augment import TransferSettings, parse_augment, transfer_settings
from data.glue import GlueSplit, GlueTask, TaskData
from data.pos import get_tagger
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
from evaluation.backbones import JOINT, check_teacher_pairs
from evaluation.classifier import Predictions, check_output_dir, load_classifier, save_classifier
from evaluation.engine import RunRecord, TrainingData, fit, training_subset
from evaluation.finetune import FinetuneResult, TrainSettings, encode_split, predict
from evaluation.heads import TaskModel
from evaluation.kd import (
    CACHE_DIR,
    KdTeacher,
    LogitJob,
    classifier_kd_teacher,
    seed0_kd_teacher,
    transfer_data,
)
from evaluation.metrics import metric_names
from evaluation.report import mean_std, mean_std_cell
from evaluation.settings import (
    LR_GRID,
    TEACHER_HEAD_LR,
    TEACHER_LR_GRID,
    HeadSettings,
    RateGrid,
    Recipe,
)
from evaluation.systems import Builder, SystemSpec, parse_system, resolve_systems, student_system

SPLIT_SEED = 0  # one fixed dev split (without --dev) for every system and seed
SAVABLE = ("student", "scratch", "embeddings", "teacher")  # backbones a classifier directory holds
AUTO = "auto"


@dataclass
class FinetuneConfig:
    """One `pipeline finetune` run. Its optimisation defaults are the engine's (TrainSettings,
    the rate grid, the head): the same as glue-eval's. Built without I/O; ``recipe`` and
    ``builder`` are the typed values the engine takes."""

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
    seeds: int = 1
    epochs: int = TrainSettings.epochs
    patience: int = TrainSettings.patience
    batch_size: int = TrainSettings.batch_size
    lr_grid: list[float] = field(default_factory=lambda: list(LR_GRID))
    teacher_lr_grid: list[float] = field(default_factory=lambda: list(TEACHER_LR_GRID))
    teacher_head_lr: float = TEACHER_HEAD_LR
    head_hidden: int = HeadSettings.hidden
    dropout: float = HeadSettings.dropout
    teacher: str | None = None  # the base teacher (None: the packaged all-MiniLM-L6-v2)
    kd_teacher: str | None = None  # a fine-tuned classifier directory, or "auto"
    kd_alpha: float = TrainSettings.kd_alpha
    teacher_pairs: str = JOINT  # the teacher on pairs: "joint" (a cross-encoder) or "siamese"
    augment: int | str = AUGMENT_AUTO  # variants of each training row, labelled by the KD teacher alone
    max_train_samples: int | None = None
    cache_dir: Path | None = None  # None: OUT.cache (fine-tuned teacher for auto, model2vec)
    kd_cache: Path | None = None  # the kd-logit cache root (None: CACHE_DIR/kd-cache)
    device: str = "auto"
    precision: str = "auto"  # the fine-tuning steps' (core.device.PRECISIONS); auto: the device's
    command: str = ""

    def __post_init__(self) -> None:
        self.train, self.out = Path(self.train), Path(self.out)
        self.dev = None if self.dev is None else Path(self.dev)
        self.cache_dir = Path(self.cache_dir or f"{self.out}.cache")
        self.kd_cache = Path(self.kd_cache or self.cache_dir / CACHE_DIR)
        self.student = None if self.student is None else Path(self.student)
        if self.student is None and not self.systems:
            raise UserError("give --student DIR or at least one --system")
        if not 0.0 < self.dev_fraction < 1.0:
            raise UserError(f"--dev-fraction must be in (0, 1), got {self.dev_fraction}")
        self.augment = parse_augment(self.augment)
        if self.seeds < 1:
            raise UserError("--seeds must be positive")
        # the typed values the engine takes, each setting validated here, once
        grid = RateGrid.parse(self.lr_grid, self.teacher_lr_grid, self.teacher_head_lr)
        self.lr_grid, self.teacher_lr_grid = list(grid.rates), list(grid.teacher_rates)
        self.recipe = Recipe(self.epochs, self.batch_size, self.patience, self.kd_alpha, grid)
        self.builder = Builder(self.teacher, self.cache_dir, HeadSettings(self.head_hidden, self.dropout),
                               check_teacher_pairs(self.teacher_pairs))

    @property
    def columns(self) -> Columns:
        return Columns(self.text_column, self.text_pair_column, self.label_column)

    def system_specs(self) -> list[SystemSpec]:
        """--student (``student:DIR``, ``+kd`` with a KD teacher) first, then every --system."""
        given = [parse_system(text) for text in self.systems]
        if self.student is None:
            return given
        return [student_system(self.student, kd=bool(self.kd_teacher)), *given]

    def check_paths(self) -> None:
        """What needs the disk: the KD teacher exists, --out may be replaced."""
        if self.kd_teacher not in (None, AUTO) and not Path(self.kd_teacher).is_dir():
            raise UserError(f"--kd-teacher {self.kd_teacher}: neither `auto` nor a directory")
        check_output_dir(self.out)


@dataclass
class FinetuneOutcome:
    out: Path
    task: GlueTask
    runs: list[dict]
    saved: dict  # the run saved as the classifier
    seconds: float


def run_finetune(config: FinetuneConfig) -> FinetuneOutcome:
    started = time.perf_counter()
    config.check_paths()
    specs = _checked_systems(config)
    data = load_user_task(config.train, config.dev, config.columns, config.regression,
                          config.dev_fraction, SPLIT_SEED)
    train = training_subset(data.train, config.max_train_samples)
    dev_source = config.dev or f"{config.dev_fraction:g} of {config.train.name}, seed {SPLIT_SEED}"
    _describe(data, train, dev_source)
    device = resolve_device(config.device)
    config.recipe = config.recipe.at_precision(config.precision, device)
    config.cache_dir.mkdir(parents=True, exist_ok=True)
    plain = TrainingData(data, train)
    taught = distillation_data(config, data, train, device) if any(s.kd for s in specs) else None
    runs, (record, model, result) = _fit_all(specs, taught, plain, config, device)
    dev = data.dev[""]
    summary = summarize(runs, [spec.label for spec in specs])
    predictions = Predictions(predict(model, encode_split(model.backbone, dev), config.batch_size, device),
                              data.task.labels)
    meta = {
        "task_type": task_type(data.task), "system": specs[0].label, "seed": record["seed"],
        "dev_metrics": record["metrics"], "dev_score": record["score"],
        "best_epoch": record["best_epoch"], "lr": record["lr"], "encoder_lr": record["encoder_lr"],
        "train": str(config.train), "dev": str(dev_source),
        "train_rows": len(train), "dev_rows": len(dev),
        "settings": _settings(config, specs), "command": config.command,
    }

    def extra_files(folder: Path) -> None:
        write_table(pl.concat([split_frame(dev, data.task), predictions.frame()], how="horizontal"),
                    folder / "dev_predictions.csv")
        write_results(folder, data.task, summary, runs, meta)

    save_classifier(model, data.task, specs[0].path, config.out, meta, result, extra_files)
    return FinetuneOutcome(config.out, data.task, runs, record, time.perf_counter() - started)


def _checked_systems(config: FinetuneConfig) -> list[SystemSpec]:
    specs = resolve_systems(config.system_specs())
    if specs[0].kind not in SAVABLE or specs[0].path is None and specs[0].kind != "teacher":
        raise UserError(f"--system {specs[0].label}: the first system is the one saved, and a "
                        f"classifier directory holds a student or the teacher; put one first")
    kd = any(spec.kd for spec in specs)
    if config.augment not in (0, AUGMENT_AUTO) and not kd:  # auto (the default) needs no +kd
        raise UserError("--augment labels its variants with the KD teacher: give --kd-teacher "
                        "(or a +kd system)")
    if config.augment and kd:
        get_tagger(TransferSettings.tagger)  # a missing tagger fails now, not after fine-tuning
    return specs


def _describe(data: TaskData, train: GlueSplit, dev_source: object) -> None:
    task = data.task
    labels = "" if task.regression else f" (labels: {', '.join(task.labels)})"
    _log(f"{task.name}: {task_type(task)}{labels}; {len(train)} training rows, "
         f"{len(data.dev[''])} dev rows ({dev_source}); metrics {', '.join(metric_names(task))}")


def _fit_all(specs: list[SystemSpec], taught: TrainingData | None, plain: TrainingData,
             config: FinetuneConfig, device: torch.device,
             ) -> tuple[list[dict], tuple[dict, TaskModel, FinetuneResult]]:
    """Every system with every seed; the records, and the first system's dev-best run (the
    one saved) with its model."""
    runs: list[dict] = []
    best: tuple[dict, TaskModel, FinetuneResult] | None = None
    for spec in specs:
        for seed in range(config.seeds):
            fitted = fit(spec, taught if spec.kd else plain, seed, config.recipe, config.builder,
                         device)
            result = fitted.result
            record = RunRecord.of(spec, seed, fitted, history=result.history,
                                  precision=config.recipe.precision).to_dict()
            runs.append(record)
            _log(f"{spec.label} seed {seed}: dev score {result.score:.2f} "
                 f"({_metrics_text(result.dev_metrics)}; lr {record['lr']:g}, epoch {result.best_epoch})")
            if spec is specs[0] and (best is None or result.score > best[0]["score"]):
                best = (record, fitted.model, result)
            del fitted
    return runs, best


# -- task-specific distillation ---------------------------------------------------------------
def distillation_data(config: FinetuneConfig, data: TaskData, train: GlueSplit,
                      device: torch.device) -> TrainingData:
    """The training rows (then ``--augment`` variants of each, labelled by the teacher alone, as
    in Tang et al. 2019) and the KD teacher's logits (N, C) on them, from the kd-logit cache
    (``--kd-cache``: glue-eval's format, shared by every system and seed)."""
    job = LogitJob(config.kd_cache, transfer_settings(config.augment, len(train)),
                   config.batch_size, device, config.command)
    return transfer_data(kd_teacher(config, data, train, device), data, train, job, _log)


def kd_teacher(config: FinetuneConfig, data: TaskData, train: GlueSplit,
               device: torch.device) -> KdTeacher:
    """``auto``: the teacher fine-tuned on this data with seed 0 (cached under --cache-dir,
    fine-tuned only when the kd cache lacks its logits); a directory: a classifier saved by
    `pipeline finetune` for the same labels."""
    if config.kd_teacher in (None, AUTO):
        return seed0_kd_teacher(config.builder, config.recipe, data, train, device, _log)
    classifier = load_classifier(config.kd_teacher)
    task = data.task
    if (classifier.label_names != task.labels) or classifier.pair != task.pair:
        what = "regression" if classifier.label_names is None else f"labels {list(classifier.label_names)}"
        raise UserError(f"--kd-teacher {config.kd_teacher}: a classifier for {what}"
                        f"{' on pairs' if classifier.pair else ''}, not for this data's "
                        f"{'regression' if task.regression else f'labels {list(task.labels)}'}"
                        f"{' on pairs' if task.pair else ''}")
    return classifier_kd_teacher(Path(config.kd_teacher), classifier.model)


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


def _settings(config: FinetuneConfig, specs: list[SystemSpec]) -> dict:
    """The options as results.json and classifier.json record them (every system by label)."""
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}
    settings["systems"] = [spec.label for spec in specs]
    return settings


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in metrics.items())


# -- predict ----------------------------------------------------------------------------------
@dataclass
class PredictConfig:
    """One `pipeline predict` run."""

    model: Path
    input: Path
    out: Path
    text_column: str | None = None  # None: the column the classifier was trained on
    text_pair_column: str | None = None
    batch_size: int = TrainSettings.batch_size
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

