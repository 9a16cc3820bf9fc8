"""EvalConfig: everything one `pipeline glue-eval` run needs, validated once and without I/O.

Its values become the engine's small typed objects once (``recipe``, ``builder``); what needs the
disk (the students found under ``--students-dir``, the task files) is resolved by
:func:`evaluation.run.run_glue_eval` when the run starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError
from data.augment import AUTO, parse_augment
from data.glue import task_by_name
from evaluation.backbones import JOINT, check_teacher_pairs
from evaluation.finetune import TrainSettings
from evaluation.kd import CACHE_DIR
from evaluation.settings import LR_GRID, TEACHER_HEAD_LR, TEACHER_LR_GRID, HeadSettings, RateGrid, Recipe
from evaluation.systems import Builder


@dataclass
class EvalConfig:
    """One GLUE evaluation run: which systems, which tasks, how to train and what to write.
    The optimisation defaults are TrainSettings' and the grid's (one source each)."""

    out: Path = Path("glue_results")
    systems: list[str] = field(default_factory=list)  # empty: the students found + the baselines
    students_dir: Path = Path("students")  # where a bare run looks for students (train-student's)
    tasks: list[str] = field(default_factory=list)  # empty: every task found in glue_dir
    glue_dir: Path | None = None  # None: read nyu-mll/glue from the Hugging Face hub
    teacher: str | None = None  # None: the packaged all-MiniLM-L6-v2
    kd_teacher: Path | None = None  # fine-tuned teachers, one per task in kd_teacher/<TASK>/
    kd_alpha: float = TrainSettings.kd_alpha
    augment: int | str = AUTO  # variants per training row in +kd systems' transfer set (0: none)
    kd_cache: Path | None = None  # the kd-logit cache root (None: OUT/kd-cache)
    seeds: int = 1
    teacher_seeds: int | None = None  # None: as many as ``seeds`` (the teacher's runs cost most)
    # seeds that search the rate grid; the later ones train at the rate with the best mean dev
    # score over those (None: every seed searches, the default)
    grid_seeds: int | None = None
    epochs: int = TrainSettings.epochs
    batch_size: int = TrainSettings.batch_size
    lr_grid: list[float] = field(default_factory=lambda: list(LR_GRID))
    teacher_lr_grid: list[float] = field(default_factory=lambda: list(TEACHER_LR_GRID))
    teacher_head_lr: float = TEACHER_HEAD_LR
    patience: int = TrainSettings.patience
    head_hidden: int = HeadSettings.hidden
    dropout: float = HeadSettings.dropout
    max_train_samples: int | None = None  # every system's cap (the teacher's too, unless below)
    teacher_max_train_samples: int | None = None  # the teacher row's own cap
    teacher_pairs: str = JOINT  # the teacher on pairs: "joint" (a cross-encoder) or "siamese"
    probe: bool = False  # frozen vectors + logistic regression instead of fine-tuning
    predict_test: bool = False
    zero_shot: bool = False  # only the STS-B zero-shot check, no fine-tuning
    resume: bool = False  # keep the runs recorded under OUT/records/ whose inputs are unchanged
    device: str = "auto"
    precision: str = "auto"  # the fine-tuning steps' (core.device.PRECISIONS); auto: the device's
    command: str = ""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.glue_dir = None if self.glue_dir is None else Path(self.glue_dir)
        self.kd_teacher = None if self.kd_teacher is None else Path(self.kd_teacher)
        self.kd_cache = Path(self.kd_cache or self.out / CACHE_DIR)
        self.augment = parse_augment(self.augment)
        self.students_dir = Path(self.students_dir)
        # the typed values the engine takes, each setting validated here, once
        grid = RateGrid.parse(self.lr_grid, self.teacher_lr_grid, self.teacher_head_lr,
                              self.grid_seeds)
        self.lr_grid, self.teacher_lr_grid = list(grid.rates), list(grid.teacher_rates)
        self.recipe = Recipe(self.epochs, self.batch_size, self.patience, self.kd_alpha, grid)
        self.builder = Builder(self.teacher, self.out, HeadSettings(self.head_hidden, self.dropout),
                               check_teacher_pairs(self.teacher_pairs))
        if self.teacher_seeds is None:
            self.teacher_seeds = self.seeds
        for name in ("seeds", "teacher_seeds"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be positive")
        for name in ("max_train_samples", "teacher_max_train_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be positive")
        self.tasks = [task_by_name(name).name for name in self.tasks]

    @property
    def teacher_cap(self) -> int | None:
        """The teacher row's training-set cap."""
        return self.teacher_max_train_samples or self.max_train_samples
