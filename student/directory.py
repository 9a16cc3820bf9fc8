"""A saved student directory, read in one place: the names of its files, whether a path is one,
and typed views of what it holds (architecture, weights, tokenizer, training summary).

train-student and ``SentenceStudent.save`` write it; loading, export, glue-eval's systems and the
benchmarks read it through :class:`StudentDirectory`, so a file name or a summary field is spelled
here once. Torch-free: only the JSON files are read here, never the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from core.io import fingerprint, read_json_object, sha256_file
from student.tokenization import TOKENIZER_FILE

if TYPE_CHECKING:
    from cache_tools.reader import ShardDirectory
    from student.config import StudentConfig

CONFIG_NAME = "config.json"  # StudentConfig.to_dict()
WEIGHTS_NAME = "model.safetensors"  # StudentEncoder's state_dict
SUMMARY_NAME = "training_summary.json"  # written by train-student when a run finishes
# A Hugging Face tokenizer's own file name (a shard directory's tokenizer/ holds it too), so
# student/tokenization.py owns the spelling; a student directory keeps its copy under that name.
TOKENIZER_NAME = TOKENIZER_FILE


@dataclass(frozen=True)
class TrainingSummary:
    """The parts of ``training_summary.json`` that code other than train-student reads."""

    steps: int
    final: dict[str, float]  # the last evaluation: val_* (held out) and ood_* metrics
    best_step: int | None
    best_val_cosine: float | None
    train_rows: int | None
    shards: tuple[Path, ...]  # train.shards: the shard directories, as given to train-student
    seed: int
    # train.init_embeddings; summaries written before the option existed started from the
    # teacher's input embeddings, hence "teacher" when it is absent.
    init_embeddings: str

    @classmethod
    def read(cls, path: Path) -> TrainingSummary:
        raw = read_json_object(path, "a training summary", UserError)
        train = raw.get("train") or {}
        if not isinstance(train, dict):
            raise UserError(f"{path}: not a training summary (train is not an object)")
        try:
            return cls(
                steps=int(raw.get("steps", 0)),
                final=dict(raw.get("final") or {}),
                best_step=_optional(int, raw.get("best_step")),
                best_val_cosine=_optional(float, raw.get("best_val_cosine")),
                train_rows=_optional(int, raw.get("train_rows")),
                shards=tuple(Path(shard) for shard in train.get("shards") or []),
                seed=int(train.get("seed", 0)),
                init_embeddings=str(train.get("init_embeddings", "teacher")),
            )
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}: not a training summary ({exc})") from None


def _optional(kind: type, value: Any) -> Any:
    return None if value is None else kind(value)


@dataclass(frozen=True)
class StudentDirectory:
    """A directory holding a saved student: config.json and model.safetensors (the two files
    that make it one), tokenizer.json, and training_summary.json when train-student wrote it."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # a str too (frozen: set it this way)

    @classmethod
    def open(cls, path_or_name: str | Path) -> StudentDirectory:
        """The student at a path, or a shipped student by its short name (an existing path wins);
        a UserError when it is not a saved student."""
        # Imported here: student/pretrained.py reads CONFIG_NAME from this module.
        from student.pretrained import student_path

        path = student_path(path_or_name)
        if not (path / CONFIG_NAME).is_file():
            raise UserError(f"{path}: no {CONFIG_NAME}; not a saved student directory")
        if not (path / WEIGHTS_NAME).is_file():
            raise UserError(f"{path}: no {WEIGHTS_NAME}")
        return cls(path)

    @staticmethod
    def is_student(path: str | Path) -> bool:
        """Whether ``path`` holds a saved student (config.json + model.safetensors)."""
        return (Path(path) / CONFIG_NAME).is_file() and (Path(path) / WEIGHTS_NAME).is_file()

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_NAME

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_NAME

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_NAME

    @property
    def config(self) -> StudentConfig:
        """The architecture in config.json, checked (a UserError names what is wrong)."""
        # Imported here: student/config.py reads CONFIG_NAME from this module.
        from student.config import StudentConfig

        return StudentConfig.load(self.path)

    @property
    def summary(self) -> TrainingSummary | None:
        """The training summary; None for a student train-student did not finish here (one
        saved by ``SentenceStudent.save``, or a run still under way)."""
        return TrainingSummary.read(self.summary_path) if self.summary_path.is_file() else None

    def source_shards(self) -> tuple[ShardDirectory, int, str]:
        """The (first) shard directory the student was trained from, its training seed and the
        matrix it started from (``input`` or ``contextual``, as train-student picks it from
        ``--init-embeddings``): the source of glue-eval's ``embeddings:DIR`` system, whose
        messages these are. A student started from random embeddings gets the input ones."""
        from cache_tools.format import ShardError
        from cache_tools.reader import ShardDirectory

        summary = self.summary
        if summary is None:
            raise UserError(f"embeddings:{self.path}: no {SUMMARY_NAME}, so no record of the "
                            "shard directory whose token embeddings the student started from")
        if not summary.shards:
            raise UserError(f"{self.summary_path}: names no shard directory")
        init = summary.init_embeddings
        kind = "input" if init in ("teacher", "random") else init
        try:
            return ShardDirectory(summary.shards[0]), summary.seed, kind
        except ShardError as exc:
            raise UserError(f"embeddings:{self.path}: its shard directory {summary.shards[0]} is "
                            f"not readable ({exc})") from None

    def fingerprint(self) -> str:
        """A hash of what the student computes: the contents of config.json and
        model.safetensors. Unlike a (size, mtime) stamp it stays put when the files are copied or
        touched and changes whenever retraining changes a weight. A UserError when either file
        is missing (a stamp of half a student would match nothing it should)."""
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (self.path / name).is_file():
                raise UserError(f"{self.path}: no {name}; not a saved student directory")
        return fingerprint({name: sha256_file(self.path / name)
                            for name in (CONFIG_NAME, WEIGHTS_NAME)})
