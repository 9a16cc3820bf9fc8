"""EvalConfig: everything one `pipeline glue-eval` run needs, validated once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data.glue import TASKS, available_tasks, check_task_files, task_by_name
from evaluation.finetune import TrainSettings
from pipeline.errors import UserError


@dataclass
class EvalConfig:
    """One GLUE evaluation run: which systems, which tasks, how to train and what to write."""

    out: Path
    systems: list[str]
    tasks: list[str] = field(default_factory=list)  # empty: every task found in glue_dir
    glue_dir: Path | None = None  # None: read nyu-mll/glue from the Hugging Face hub
    teacher: str | None = None  # None: the packaged all-MiniLM-L6-v2
    kd_teacher: Path | None = None  # fine-tuned teachers, one per task in kd_teacher/<TASK>/
    kd_alpha: float = 0.5
    kd_shard_rows: int = 4096  # teacher-logit cache rows per shard: the unit of work of a rank
    seeds: int = 1
    teacher_seeds: int | None = None  # None: as many as ``seeds`` (the teacher's runs cost most)
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-3
    teacher_lr: float = 3e-5
    patience: int = 2
    head_hidden: int = 256
    dropout: float = 0.1
    max_train_samples: int | None = None
    predict_test: bool = False
    zero_shot: bool = False  # only the STS-B zero-shot check, no fine-tuning
    device: str | None = None
    command: str = ""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.glue_dir = None if self.glue_dir is None else Path(self.glue_dir)
        self.kd_teacher = None if self.kd_teacher is None else Path(self.kd_teacher)
        if not self.systems:
            raise UserError("give at least one --system (student:DIR, scratch, kd, teacher...)")
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
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise UserError("--max-train-samples must be positive")
        if self.lr <= 0 or self.teacher_lr <= 0:
            raise UserError("--lr and --teacher-lr must be positive")
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

    def train_settings(self, teacher: bool, seed: int) -> TrainSettings:
        """The optimisation settings for one run: the teacher's encoder gets ``teacher_lr``."""
        return TrainSettings(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            encoder_lr=self.teacher_lr if teacher else None,
            patience=self.patience,
            kd_alpha=self.kd_alpha,
            seed=seed,
        )
