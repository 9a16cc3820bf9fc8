"""Typed configuration: StudentConfig (architecture), TrainConfig (training), EmbedConfig (inference)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.io import atomic_write_json, read_json_object
from student.directory import CONFIG_NAME

POOLINGS = ("max", "mean", "last")
# contextual: each token through the teacher alone (encode writes the matrix); teacher: the
# teacher's input word embeddings; random: an ablation.
INIT_EMBEDDINGS = ("contextual", "teacher", "random")


@dataclass
class StudentConfig:
    """The student's architecture; saved as ``config.json`` beside the weights."""

    vocab_size: int
    output_dim: int
    # None: output_dim, the teacher's width (its token embeddings are as wide as its vectors in
    # BERT and MPNet alike: 384 for the MiniLM, 768 for all-mpnet-base-v2)
    embed_dim: int | None = None
    hidden: int = 256
    layers: int = 1
    # Mean pooling and no dropout: the held-out cosine at 600 steps went from 0.748 (max, 0.1) to
    # 0.811 with contextual embeddings; see benchmarks/RESULTS.md for the full-length ablation.
    pooling: str = "mean"
    dropout: float = 0.0
    pad_token_id: int = 0
    max_length: int = 128
    # The teacher L2-normalised its vectors: the student then does the same as its last step, so
    # training, `encode` and sentence-transformers all see one and the same function.
    normalize: bool = False
    architecture: str = "bilstm"

    def __post_init__(self) -> None:
        if self.embed_dim is None:
            self.embed_dim = self.output_dim
        if self.pooling not in POOLINGS:
            raise UserError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        for name in ("vocab_size", "output_dim", "embed_dim", "hidden", "layers", "max_length"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"student {name} must be positive, got {getattr(self, name)}")
        if self.max_length < 2:
            raise UserError("student max_length must be at least 2 (two special tokens)")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, directory: str | Path) -> None:
        atomic_write_json(Path(directory) / CONFIG_NAME, self.to_dict())

    @classmethod
    def load(cls, directory: str | Path) -> StudentConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise UserError(f"{directory}: no {CONFIG_NAME}; not a saved student directory")
        raw = read_json_object(path, "a student config", UserError)
        fields = dataclasses.fields(cls)
        unknown = sorted(set(raw) - {f.name for f in fields})
        if unknown:
            raise UserError(f"{path}: unknown student config keys {', '.join(unknown)}")
        missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in raw]
        if missing:
            raise UserError(f"{path}: missing student config keys {', '.join(missing)}")
        try:
            return cls(**raw)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}: invalid student config ({exc})") from None


STUDENT_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(StudentConfig) if f.default is not dataclasses.MISSING
}


@dataclass
class TrainConfig:
    """Everything `train-student` needs; built by the CLI (or a variants TOML) and run as is."""

    shards: list[str]
    out: str = "students/student"
    # Architecture choices (the rest of StudentConfig comes from the shard manifest).
    embed_dim: int | None = None  # None: the teacher's embedding width, so no projection
    hidden: int = STUDENT_DEFAULTS["hidden"]
    layers: int = STUDENT_DEFAULTS["layers"]
    pooling: str = STUDENT_DEFAULTS["pooling"]
    dropout: float = STUDENT_DEFAULTS["dropout"]
    max_length: int | None = None  # None: the teacher's max_length recorded in the manifest
    init_embeddings: str = "contextual"
    # Frozen token embeddings (the contextual ones): the frozen probes averaged 53.4 against 51.5
    # with trained embeddings, and a step is cheaper (no gradient for 11.7M of 13M parameters);
    # trained embeddings fit the held-out corpus closer (cosine 0.837 vs 0.791) but not the
    # out-of-domain sentences (0.728 vs 0.722). Fine-tuning (glue-eval, finetune) trains them all.
    freeze_embeddings: bool = True
    # Objective.
    loss: str = "mse"
    loss_weights: list[float] | None = None
    # Optimisation.
    epochs: int = 4
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 2e-3
    min_lr: float | None = None  # None: lr / 10
    warmup_steps: int | None = None  # None: 2% of the steps (at least 1)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    # Data.
    heldout: float = 0.02
    val_size: int = 1000
    # Train on the first N training rows only (a nested subset for scaling studies); the held-out
    # split is still drawn from every row, so the subsets of one directory share their held-out
    # sentences and never train on them.
    train_rows: int | None = None
    shuffle_buffer: int = 20000
    # Bookkeeping.
    eval_every: int = 500
    log_every: int = 20
    checkpoint_every: int = 500
    stop_after: int | None = None
    resume: bool = False
    overwrite: bool = False
    verify: str = "cheap"
    device: str = "auto"
    # The arithmetic of the training steps: "auto" = fp32 on CPU, bf16 (fp16) autocast on CUDA;
    # "bf16" on a CPU with bf16 instructions is ~1.5x faster a step (the weights, the optimizer
    # and the held-out scores stay fp32; benchmarks/train_precision.py). Not resumable across a
    # change: the steps differ.
    precision: str = "auto"
    progress: bool = True
    variant: str | None = None

    def __post_init__(self) -> None:
        if not self.shards:
            raise UserError("give at least one --shards directory")
        if self.pooling not in POOLINGS:
            raise UserError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        if self.init_embeddings not in INIT_EMBEDDINGS:
            raise UserError(f"--init-embeddings must be one of {', '.join(INIT_EMBEDDINGS)}")
        if self.verify not in ("cheap", "full"):
            raise UserError("--verify must be 'cheap' or 'full'")
        if not 0.0 < self.heldout < 1.0:
            raise UserError(f"--heldout must be a fraction in (0, 1), got {self.heldout}")
        positive = ("epochs", "batch_size", "eval_every", "log_every", "checkpoint_every",
                    "shuffle_buffer", "val_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be positive")
        for name in ("max_steps", "stop_after", "train_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be positive")
        if self.lr <= 0:
            raise UserError("--lr must be positive")
        from core.device import PRECISIONS  # here: importing this module must not load torch

        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# TrainConfig fields that may differ between an interrupted run and its --resume without changing
# the result (moved shard directories are fine: their contents are compared separately).
RESUMABLE_CHANGES = frozenset(
    {"shards", "out", "resume", "overwrite", "stop_after", "checkpoint_every", "progress",
     "verify", "device", "log_every"}
)


@dataclass
class EmbedConfig:
    """`pipeline embed`: sentences from a file through a saved student into vectors."""

    student: str
    input: str
    out: str
    text_column: str = "text"
    batch_size: int = 64
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UserError("--batch-size must be positive")
