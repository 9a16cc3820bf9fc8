"""Task-specific distillation (Tang et al. 2019): a fine-tuned teacher's logits on a task's
transfer set, computed once and shared.

The transfer set is the training rows and, with ``--augment N``, N variants of each
(:func:`data.augment.augment_split`: masking, POS-guided word replacement, n-gram sampling). The
teacher's logits on it are cached in the kd-logit format (:mod:`cache_tools.logit_cache`) under
``KD_CACHE/<TASK>-<key>/``; the key is a fingerprint of the teacher's identity (for the seed-0
teacher glue-eval or finetune fine-tune: the base weights, the fine-tuning settings and data;
for a given fine-tuned teacher: its weights), the training rows and the transfer-set settings.
So every ``+kd`` system, seed and run pointed at the same ``--kd-cache`` reads one entry, and a
cache hit needs no teacher at all (not even its fine-tuning).

The variants are labelled by the teacher alone: a run trains on the training rows with their gold
labels and the teacher's logits, and on the variants with the distillation term only
(:class:`evaluation.engine.TrainingData` ``gold``, :func:`evaluation.finetune.task_loss`).

Under torchrun rank 0 alone fine-tunes the teacher and computes the logits (the teacher is run
once per entry, and GLUE's largest set with variants is minutes of inference), while the others
wait; then every rank reads the entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from cache_tools.logit_cache import LogitEntry, cached_entry, read_entry, row_layout
from core.distributed import DistContext
from core.errors import UserError
from core.io import fingerprint, sha256_file
from data.augment import TransferSettings, augment_split, variant_id
from data.glue import GlueSplit, TaskData
from data.pos import get_tagger
from evaluation.engine import TrainingData
from evaluation.finetune import encode_split, predict
from evaluation.finetuned_teacher import (
    FINETUNED_DIR,
    HEAD_FILE,
    base_teacher_source,
    finetuned_teacher_meta,
    load_finetuned_teacher,
    pairs_identity,
    seed0_teacher,
    split_fingerprint,
)
from evaluation.heads import TaskModel
from evaluation.settings import Recipe
from evaluation.systems import Builder

CACHE_DIR = "kd-cache"
# Rows tokenized and predicted at once: the shards of the cache this one replaced held as many,
# so the batches, and the logits without variants, are what they were.
CHUNK_ROWS = 4096
FALLBACK_MASK = "[MASK]"  # a teacher whose tokenizer names no mask (a student classifier)


@dataclass(frozen=True)
class KdTeacher:
    """A fine-tuned teacher for distillation: what identifies it in the cache key, and how to
    get it (called on a cache miss only: it may fine-tune for hours)."""

    source: dict
    load: Callable[[], TaskModel]


@dataclass(frozen=True)
class LogitJob:
    """Where one task's entry lives and how it is computed: the cache root, the transfer-set
    settings, the prediction batch size, the device and the command that records it."""

    cache: Path
    transfer: TransferSettings
    batch_size: int
    device: torch.device
    command: str = ""


def transfer_data(teacher: KdTeacher, data: TaskData, train: GlueSplit, job: LogitJob,
                  log: Callable[[str], None], ctx: DistContext | None = None) -> TrainingData:
    """The rows a ``+kd`` run trains on (``train``, then its variants) and the teacher's (R, C)
    logits on them, from the cache entry (filled first by rank 0 if missing)."""
    ctx = ctx or DistContext()
    task = data.task.name
    key = fingerprint({"teacher": teacher.source, "task": task, "train": split_fingerprint(train),
                       "transfer": job.transfer.identity()})
    directory = job.cache / f"{task}-{key}"
    meta = {"key": key, "task": task, "split": train.split, "teacher": teacher.source,
            "transfer": job.transfer.identity(), "command": job.command}

    def fill() -> LogitEntry:
        entry, computed = cached_entry(
            directory, lambda: _compute(teacher.load(), train, job, meta, log))
        log(f"{task}: teacher logits {'cached in' if computed else 'from the cache'} {directory}")
        return entry

    entry = ctx.main_first(fill) or read_entry(directory)  # the other ranks read what rank 0 wrote
    return training_rows(data, train, entry, job.transfer)


def _compute(model: TaskModel, train: GlueSplit, job: LogitJob, meta: dict,
             log: Callable[[str], None]) -> LogitEntry:
    rows, variants = train, job.transfer.variants
    made_with = {}  # what the variants were made with, for the record
    if variants:
        mask = _mask_token(model)
        varied = augment_split(train, job.transfer, mask)
        log(f"{train.task}: {len(varied)} variants ({variants} per training row: masking, "
            "POS-guided replacement, n-gram sampling), labelled by the teacher alone")
        rows = _with_variants(train, varied.text_a, varied.text_b, varied.index)
        made_with = {"tagger": get_tagger(job.transfer.tagger).name, "mask_token": mask}
    logits = _predict_chunks(model, rows, job)  # (R, C)
    source, variant = row_layout(len(train), variants)  # (R,) each
    teacher = getattr(model.backbone, "teacher", None)  # the fine-tuned weights, for the record
    weights = None if teacher is None else teacher.identify().to_dict()
    extra = {"weights": weights, **({"variants": made_with} if made_with else {}),
             "created": datetime.now(UTC).isoformat(timespec="seconds")}
    text_a = rows.text_a[len(train):]
    text_b = None if rows.text_b is None else rows.text_b[len(train):]
    return LogitEntry(logits, source, variant, text_a, text_b, {**meta, **extra})


def _predict_chunks(model: TaskModel, rows: GlueSplit, job: LogitJob) -> np.ndarray:
    """(R, C) logits, CHUNK_ROWS rows tokenized and predicted at a time."""
    chunks = (rows.subset(np.arange(lo, min(lo + CHUNK_ROWS, len(rows))))
              for lo in range(0, len(rows), CHUNK_ROWS))  # one chunk's tokens at a time
    return np.concatenate([predict(model, encode_split(model.backbone, chunk), job.batch_size,
                                   job.device) for chunk in chunks])


def _with_variants(train: GlueSplit, text_a: list[str], text_b: list[str] | None,
                   index: list[str], labels: np.ndarray | None = None) -> GlueSplit:
    """The training rows, then their variants (``labels``: all the rows', or None)."""
    pairs = None if train.text_b is None else train.text_b + text_b
    return GlueSplit(train.task, f"{train.split}+variants", train.text_a + text_a, pairs, labels,
                     train.index + index)


def _mask_token(model: TaskModel) -> str:
    """The teacher tokenizer's mask token (else its unknown token): what it reads as "a word
    was here"; the students' tokenizers are the teacher's, so they read it alike."""
    tokenizer = getattr(model.backbone, "tokenizer", None)
    return (getattr(tokenizer, "mask_token", None) or getattr(tokenizer, "unk_token", None)
            or FALLBACK_MASK)


def training_rows(data: TaskData, train: GlueSplit, entry: LogitEntry,
                  transfer: TransferSettings) -> TrainingData:
    """The entry as a run's TrainingData: without variants the training rows and their logits
    (as before the transfer set existed); with them, the variants after the training rows, a
    placeholder label each (never used: ``gold`` is False for them)."""
    if entry.originals != len(train):
        raise UserError(f"kd cache entry for {data.task.name}: {entry.originals} training rows, "
                        f"not {len(train)}; delete it to recompute")
    if not entry.text_a:
        return TrainingData(data, train, entry.logits)
    added = len(entry.text_a)
    index = [variant_id(train.index[s], v - 1) for s, v in
             zip(entry.source[len(train):], entry.variant[len(train):], strict=True)]
    labels = np.concatenate([train.labels, np.zeros(added, dtype=train.labels.dtype)])  # (R,)
    rows = _with_variants(train, entry.text_a, entry.text_b, index, labels)
    return TrainingData(data, rows, entry.logits, gold=entry.variant == 0, transfer=transfer)


# -- the teachers -------------------------------------------------------------------------------
def seed0_kd_teacher(builder: Builder, recipe: Recipe, data: TaskData, teacher_train: GlueSplit,
                     device: torch.device, log: Callable[[str], None]) -> KdTeacher:
    """The teacher fine-tuned with seed 0 on ``teacher_train`` (kept under the builder's cache),
    named by what makes it: fine-tuned only on a cache miss."""
    source = base_teacher_source(builder, recipe, data, teacher_train)

    def load() -> TaskModel:
        model, result, _ = seed0_teacher(builder, recipe, data, teacher_train, device, log, source)
        log(f"{data.task.name}: KD teacher dev score {result.score:.2f}")
        return model

    return KdTeacher(source, load)


def given_kd_teacher(root: Path, data: TaskData, dropout: float) -> KdTeacher:
    """A fine-tuned teacher glue-eval saved (``root/<TASK>/`` or ``root``), named by its weights
    (the same identity as any teacher's: weights, tokenizer, pooling) and its head."""
    task = data.task
    directory = _given_teacher_dir(root, task.name)
    model = load_finetuned_teacher(directory, task, dropout)
    source = {"finetuned": model.backbone.teacher.spec.identity(),
              "head": sha256_file(directory / HEAD_FILE),
              **pairs_identity(model.backbone.pairs, task)}
    return KdTeacher(source, lambda: model)


def classifier_kd_teacher(directory: Path, model: TaskModel) -> KdTeacher:
    """A classifier `pipeline finetune` saved, named by the content of its weight files."""
    files = sorted(p for p in Path(directory).rglob("*")
                   if p.is_file() and _is_weights(directory, p))
    hashes = {str(p.relative_to(directory)): sha256_file(p) for p in files}
    source = {"classifier": fingerprint(hashes)}
    return KdTeacher(source, lambda: model)


def _is_weights(directory: Path, path: Path) -> bool:
    """What makes a classifier's outputs: its encoder/ and its head (not its reports)."""
    relative = path.relative_to(directory)
    return relative.parts[0] == "encoder" or relative.name == HEAD_FILE


def _given_teacher_dir(root: Path, task: str) -> Path:
    for directory in (root / task, root):
        if finetuned_teacher_meta(directory) is not None and (directory / HEAD_FILE).is_file():
            return directory
    raise UserError(
        f"--kd-teacher {root}: no fine-tuned {task} teacher (expected {root / task} as written "
        f"by glue-eval under OUT/{FINETUNED_DIR}/{task})"
    )
