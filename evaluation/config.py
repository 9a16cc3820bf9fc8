"""EvalConfig: everything one `pipeline glue-eval` run needs, validated once."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError
from data.glue import TASKS, available_tasks, check_task_files, task_by_name
from evaluation.finetune import TrainSettings

# Learning rates tried per system and task, the dev-best kept (BERT's paper: a small grid).
LR_GRID = (1e-3, 3e-4, 1e-4)  # heads, and the whole model for the BiLSTM and static systems
TEACHER_LR_GRID = (1e-4, 3e-5)  # the teacher's transformer (its head: teacher_head_lr)


def parse_rates(text: str | Sequence[float], option: str) -> list[float]:
    """``"1e-3,3e-4"`` -> [0.001, 0.0003]; a UserError for a non-number, <= 0 or an empty list."""
    items = [t.strip() for t in text.split(",") if t.strip()] if isinstance(text, str) else list(text)
    rates = []
    for item in items:
        try:
            rate = float(item)
        except ValueError:
            raise UserError(f"{option} {text!r}: {item!r} is not a number") from None
        if not (math.isfinite(rate) and rate > 0):
            raise UserError(f"{option} {text!r}: every rate must be a positive number, got {item!r}")
        rates.append(rate)
    if not rates:
        raise UserError(f"{option}: give at least one learning rate")
    return list(dict.fromkeys(rates))  # no point trained twice


BASELINES = ("scratch", "model2vec", "teacher")  # what a bare glue-eval compares the students with


def discover_students(root: Path) -> list[str]:
    """``student:DIR`` for ``root`` itself if it is a saved student, else for each directory
    directly under it that is one (config.json + model.safetensors), sorted by name.

    train-student writes ``students/student/`` and, inside it, ``best/`` (the checkpoint with the
    best held-out cosine); being one level deeper, ``best/`` is not counted.
    """
    def is_student(directory: Path) -> bool:
        return (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()

    if is_student(root):
        return [f"student:{root}"]
    found = sorted(d for d in root.iterdir() if d.is_dir() and is_student(d)) if root.is_dir() else []
    if not found:
        state = "is not a directory" if not root.is_dir() else "holds no student directory"
        raise UserError(
            f"--students-dir {root} {state} (config.json + model.safetensors); train one with "
            f"`pipeline train-student --shards DIR --out {root}/student` or name systems with --system"
        )
    return [f"student:{directory}" for directory in found]


def default_systems(students_dir: Path) -> list[str]:
    """What a bare ``pipeline glue-eval`` compares: the students found, then the baselines."""
    return [*discover_students(students_dir), *BASELINES]


@dataclass
class EvalConfig:
    """One GLUE evaluation run: which systems, which tasks, how to train and what to write.
    The optimisation defaults are TrainSettings' (one source); ``pipeline finetune``'s are these."""

    out: Path = Path("glue_results")
    systems: list[str] = field(default_factory=list)  # empty: the students found + the baselines
    students_dir: Path = Path("students")  # where a bare run looks for students (train-student's)
    tasks: list[str] = field(default_factory=list)  # empty: every task found in glue_dir
    glue_dir: Path | None = None  # None: read nyu-mll/glue from the Hugging Face hub
    teacher: str | None = None  # None: the packaged all-MiniLM-L6-v2
    kd_teacher: Path | None = None  # fine-tuned teachers, one per task in kd_teacher/<TASK>/
    kd_alpha: float = TrainSettings.kd_alpha
    kd_shard_rows: int = 4096  # teacher-logit cache rows per shard: the unit of work of a rank
    seeds: int = 1
    teacher_seeds: int | None = None  # None: as many as ``seeds`` (the teacher's runs cost most)
    # seeds that search the rate grid; the later ones train at the rate with the best mean dev
    # score over those (None: every seed searches, the default)
    grid_seeds: int | None = None
    epochs: int = TrainSettings.epochs
    batch_size: int = TrainSettings.batch_size
    lr_grid: list[float] = field(default_factory=lambda: list(LR_GRID))
    teacher_lr_grid: list[float] = field(default_factory=lambda: list(TEACHER_LR_GRID))
    teacher_head_lr: float = 1e-3
    patience: int = TrainSettings.patience
    head_hidden: int = 256
    dropout: float = 0.1
    max_train_samples: int | None = None  # every system's cap (the teacher's too, unless below)
    teacher_max_train_samples: int | None = None  # the teacher row's own cap
    probe: bool = False  # frozen vectors + logistic regression instead of fine-tuning
    predict_test: bool = False
    zero_shot: bool = False  # only the STS-B zero-shot check, no fine-tuning
    resume: bool = False  # keep the runs recorded under OUT/records/ whose inputs are unchanged
    device: str = "auto"
    command: str = ""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.glue_dir = None if self.glue_dir is None else Path(self.glue_dir)
        self.kd_teacher = None if self.kd_teacher is None else Path(self.kd_teacher)
        self.students_dir = Path(self.students_dir)
        self.lr_grid = parse_rates(self.lr_grid, "--lr-grid")
        self.teacher_lr_grid = parse_rates(self.teacher_lr_grid, "--teacher-lr-grid")
        if not self.systems:
            self.systems = default_systems(self.students_dir)
        if self.glue_dir is not None and not self.glue_dir.is_dir():
            raise UserError(f"--glue-dir {self.glue_dir}: no such directory")
        if self.kd_teacher is not None and not self.kd_teacher.is_dir():
            raise UserError(f"--kd-teacher {self.kd_teacher}: no such directory")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise UserError(f"--kd-alpha must be in [0, 1], got {self.kd_alpha}")
        if self.teacher_seeds is None:
            self.teacher_seeds = self.seeds
        for name in ("seeds", "teacher_seeds", "kd_shard_rows", "epochs", "batch_size", "patience",
                     "head_hidden"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be positive")
        for name in ("max_train_samples", "teacher_max_train_samples", "grid_seeds"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be positive")
        if not (math.isfinite(self.teacher_head_lr) and self.teacher_head_lr > 0):
            raise UserError("--teacher-head-lr must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1), got {self.dropout}")
        self.tasks = self._resolve_tasks()

    def _resolve_tasks(self) -> list[str]:
        names = [task_by_name(name).name for name in self.tasks]
        if not names:
            if self.glue_dir is None:
                names = list(TASKS)
            else:
                names = available_tasks(self.glue_dir)
                if not names:
                    raise UserError(
                        f"--glue-dir {self.glue_dir}: no GLUE task folder with train.tsv and dev "
                        "files (expected e.g. CoLA/train.tsv, CoLA/dev.tsv)"
                    )
        if self.glue_dir is not None:
            # fail now, not after hours of training on the tasks before a broken one
            for name in names:
                check_task_files(self.glue_dir, TASKS[name], self.predict_test and not self.zero_shot)
        # GLUE order, no duplicates
        return [name for name in TASKS if name in names]

    @property
    def teacher_cap(self) -> int | None:
        """The teacher row's training-set cap."""
        return self.teacher_max_train_samples or self.max_train_samples

    def train_settings(self, teacher: bool, seed: int) -> TrainSettings:
        """One run's settings before the grid sets its rates (the teacher's head rate is fixed)."""
        return TrainSettings(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.teacher_head_lr if teacher else self.lr_grid[0],
            encoder_lr=self.teacher_lr_grid[0] if teacher else None,
            patience=self.patience,
            kd_alpha=self.kd_alpha,
            seed=seed,
        )

    def searches_grid(self, seed: int) -> bool:
        """Whether run ``seed`` tries every rate of the grid (else it reuses the chosen rate)."""
        return self.grid_seeds is None or seed < self.grid_seeds

    def grid(self, teacher: bool) -> tuple[list[float], list[float] | None]:
        """``finetune_grid``'s (rates, encoder_rates): the teacher's grid is over its
        transformer's rate with the head at ``teacher_head_lr``; every other system trains as a
        whole at each rate of ``lr_grid`` (a lower rate for a student's encoder than for its head
        scored lower on SST-2 where we measured it; README, glue-eval protocol)."""
        if teacher:
            return [self.teacher_head_lr], list(self.teacher_lr_grid)
        return list(self.lr_grid), None
