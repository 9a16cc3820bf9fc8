"""A fine-tuned classifier (or regressor) saved as one self-contained directory, and its loader.

Layout of ``DIR`` (written by ``pipeline finetune``, atomically: built in a temporary sibling,
then renamed into place)::

    classifier.json        what load_classifier reads: task type, label names, columns, system,
                           head shape, dev metrics, settings, the exact command
    encoder/               a student directory (``load_student`` / ``pipeline embed`` read it),
                           or for the teacher its fine-tuned HF files as glue-eval saves them
    head.safetensors       the task head (a student's; the teacher's is inside encoder/)
    dev_predictions.csv    the dev rows with what the classifier predicted for them
    results.md, results.json   every system and seed of the run, and the learning-rate grid

Python use::

    from evaluation.classifier import load_classifier

    classifier = load_classifier("reviews_model")
    result = classifier.predict(["great value", "broke after a week"])
    result.labels, result.probabilities  # ['pos', 'neg'], (2, C) array
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from core.device import resolve_device
from core.errors import UserError
from core.io import atomic_output, atomic_write_json, read_json_object
from data.glue import GlueSplit, GlueTask
from data.user_task import Columns, make_task
from evaluation.backbones import StudentBackbone
from evaluation.finetune import FinetuneResult, encode_split, predict
from evaluation.finetuned_teacher import load_finetuned_teacher, save_finetuned_teacher
from evaluation.heads import TaskHead, TaskModel

CLASSIFIER_FILE = "classifier.json"
ENCODER_DIR = "encoder"
HEAD_FILE = "head.safetensors"
FORMAT = "sra-distill-classifier"
VERSION = 1


@dataclass
class Predictions:
    """Per input row: the predicted label and the class probabilities, or the regression score."""

    outputs: np.ndarray  # (N, C) raw head outputs: logits, or (N, 1) scores
    label_names: tuple[str, ...] | None  # None for a regression

    @property
    def regression(self) -> bool:
        return self.label_names is None

    @property
    def labels(self) -> list[str] | None:
        if self.regression:
            return None
        return [self.label_names[i] for i in self.outputs.argmax(axis=1)]

    @property
    def probabilities(self) -> np.ndarray | None:
        if self.regression:
            return None
        return torch.softmax(torch.from_numpy(self.outputs).double(), dim=1).numpy()  # (N, C)

    @property
    def scores(self) -> np.ndarray | None:
        return self.outputs[:, 0] if self.regression else None

    def frame(self) -> pl.DataFrame:
        """``prediction`` (label or score), then ``prob_<label>`` per class."""
        if self.regression:
            return pl.DataFrame({"prediction": self.scores.astype(np.float64)})
        columns = {"prediction": self.labels}
        for i, name in enumerate(self.label_names):
            columns[f"prob_{name}"] = self.probabilities[:, i]
        return pl.DataFrame(columns)


class Classifier:
    """A loaded classifier: ``predict(texts, pairs=None)``; ``task``, ``meta`` describe it."""

    def __init__(self, model: TaskModel, task: GlueTask, meta: dict, device: torch.device):
        self.model, self.task, self.meta, self.device = model.eval().to(device), task, meta, device

    @property
    def label_names(self) -> tuple[str, ...] | None:
        return self.task.labels

    @property
    def pair(self) -> bool:
        return self.task.pair

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                batch_size: int = 32) -> Predictions:
        """Predictions for ``texts`` (and the second sentences ``pairs`` of a pair task), in order."""
        texts = [str(text) for text in texts]
        if self.pair != (pairs is not None):
            raise UserError(f"this classifier takes {'sentence pairs' if self.pair else 'single texts'}"
                            f"; {'give pairs' if self.pair else 'give no pairs'}")
        if pairs is not None and len(pairs) != len(texts):
            raise UserError(f"{len(texts)} texts but {len(pairs)} pairs")
        split = GlueSplit(self.task.name, "predict", texts,
                          None if pairs is None else [str(p) for p in pairs], None,
                          [str(i) for i in range(len(texts))])
        if not texts:
            return Predictions(np.zeros((0, self.task.num_outputs), np.float32), self.label_names)
        outputs = predict(self.model, encode_split(self.model.backbone, split), batch_size, self.device)
        return Predictions(outputs, self.label_names)


# -- saving -----------------------------------------------------------------------------------
def check_output_dir(directory: Path) -> None:
    """Refuse to replace a directory that is not a classifier (a user's data, say)."""
    if directory.exists() and not (directory / CLASSIFIER_FILE).is_file() and (
            not directory.is_dir() or any(directory.iterdir())):
        raise UserError(f"--out {directory}: exists and is not a classifier directory; "
                        "choose a new path")


def save_classifier(model: TaskModel, task: GlueTask, student_dir: Path | None, directory: Path,
                    meta: dict, result: FinetuneResult,
                    extra_files: Callable[[Path], None] = lambda folder: None) -> None:
    """Write the classifier to ``directory`` atomically (a finished directory or none at all).

    The encoder is a student's (its architecture and tokenizer from ``student_dir``) or, when
    ``student_dir`` is None, the teacher's. ``extra_files(folder)`` adds files before the rename.
    """
    kind = "teacher" if student_dir is None else "student"
    directory = Path(directory)
    check_output_dir(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(directory, directory=True) as building:  # an old classifier goes last
        if kind == "teacher":
            save_finetuned_teacher(model, task, building / ENCODER_DIR, "", result)
        else:
            from student import SentenceStudent, StudentConfig
            from student.tokenization import load_tokenizer

            backbone: StudentBackbone = model.backbone
            trained = SentenceStudent(backbone.encoder, load_tokenizer(student_dir),
                                      StudentConfig.load(student_dir))
            trained.save(building / ENCODER_DIR)
            save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()},
                      str(building / HEAD_FILE))
        extra_files(building)
        head = model.head
        atomic_write_json(building / CLASSIFIER_FILE, {
            "format": FORMAT, "version": VERSION, "task": task.name,
            "labels": None if task.labels is None else list(task.labels),
            "columns": {"text": task.train.text_a, "pair": task.train.text_b, "label": task.train.label},
            "encoder": {"kind": kind, "path": ENCODER_DIR},
            "head": {"hidden": head.hidden, "num_outputs": head.num_outputs, "pair": head.pair,
                     "dropout": _head_dropout(head)},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **meta,
        })


def _head_dropout(head: TaskHead) -> float:
    return float(head.mlp[0].p)


# -- loading ----------------------------------------------------------------------------------
def read_meta(directory: str | Path) -> dict:
    directory = Path(directory)
    path = directory / CLASSIFIER_FILE
    if not path.is_file():
        raise UserError(f"{directory}: no {CLASSIFIER_FILE}; not a classifier written by "
                        "`pipeline finetune`")
    meta = read_json_object(path, "a classifier description", UserError)
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: not a {FORMAT} file")
    return meta


def load_classifier(directory: str | Path, device: str | torch.device | None = None) -> Classifier:
    """The classifier saved in ``directory`` by ``pipeline finetune``, ready to ``predict``
    (on CUDA when there is one, unless ``device`` says otherwise)."""
    directory = Path(directory)
    meta = read_meta(directory)
    columns = Columns(**meta["columns"])
    labels = None if meta["labels"] is None else tuple(meta["labels"])
    task = make_task(meta["task"], labels, columns, str(directory))
    head_meta = meta["head"]
    encoder = directory / meta["encoder"]["path"]
    if meta["encoder"]["kind"] == "teacher":
        model = load_finetuned_teacher(encoder, task, head_meta["dropout"])
    else:
        from student import load_student

        backbone = StudentBackbone(load_student(encoder, "cpu"))
        head = TaskHead(backbone.dim, head_meta["num_outputs"], head_meta["pair"],
                        head_meta["hidden"], head_meta["dropout"])
        try:
            head.load_state_dict(load_file(str(directory / HEAD_FILE)))
        except (OSError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise UserError(f"{directory / HEAD_FILE}: cannot load the head ({first})") from None
        model = TaskModel(backbone, head)
    return Classifier(model, task, meta, resolve_device(device))

