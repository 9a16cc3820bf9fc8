"""Task-specific distillation targets: a fine-tuned teacher's logits on a task's training set.

The logits are computed once, by stage one's sharded map (so under torchrun every rank computes
its own shards), and cached in the shard format of stage one (``vector`` = the logits, ``text`` =
sentence 1, or sentence 1 TAB sentence 2 for pairs, ``input_ids`` = the teacher's ids of sentence
1 then sentence 2) under ``OUT/kd-cache/<TASK>-<key>/``. The key is a
fingerprint of the teacher (its weights, and the fine-tuning settings when glue-eval fine-tunes
it), the task and the training data, so a rerun with the same inputs reuses the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from cache_tools.format import MANIFEST_NAME
from cache_tools.manifest import TASK_LOGITS, Manifest, write_manifest
from cache_tools.reader import ShardDirectory
from cache_tools.sharded_map import PreparedShard, ShardedMap
from core.distributed import DistContext
from core.errors import UserError
from core.io import fingerprint, sha256_file
from data.glue import GlueSplit, TaskData
from evaluation.config import EvalConfig
from evaluation.finetune import encode_split, predict
from evaluation.finetuned_teacher import (
    FINETUNED_DIR,
    HEAD_FILE,
    base_teacher_source,
    finetuned_teacher_meta,
    load_finetuned_teacher,
    seed0_teacher,
    split_fingerprint,
)
from evaluation.heads import TaskModel

CACHE_DIR = "kd-cache"


def teacher_logits(
    config: EvalConfig, data: TaskData, train: GlueSplit, device: torch.device,
    log: Callable[[str], None], ctx: DistContext | None = None,
    teacher_train: GlueSplit | None = None,
) -> np.ndarray:
    """(N, C) teacher logits for ``train`` (C = 1 for STS-B), from the cache when possible.

    The teacher is fine-tuned on ``teacher_train`` (default: ``train``; smaller under
    ``--teacher-max-train-samples``). The logits are computed through stage one's sharded map:
    under torchrun rank 0 fine-tunes the teacher (once) while the others wait, then every rank
    predicts its own shards of ``train``.
    """
    ctx = ctx or DistContext()
    teacher_train = train if teacher_train is None else teacher_train
    task = data.task
    model, directory, source = _teacher(config, data, teacher_train)
    key = fingerprint({"teacher": source, "task": task.name, "train": split_fingerprint(train)})
    cache = config.out / CACHE_DIR / f"{task.name}-{key}"
    if (cache / MANIFEST_NAME).is_file():
        log(f"{task.name}: teacher logits from the cache {cache}")
        return read_logits(cache, len(train))
    if config.kd_teacher is None:  # rank 0 fine-tunes it (or loads it) while the others wait
        model = ctx.main_first(lambda: seed0_teacher(config.builder, config.recipe, data,
                                                     teacher_train, device, log, source)[0])
    model = model or load_finetuned_teacher(directory, task, config.dropout)
    _fill_cache(cache, model, train, key, config, device, ctx)
    if ctx.is_main:
        log(f"{task.name}: teacher logits cached in {cache}")
    ctx.barrier()
    return read_logits(cache, len(train))


def _teacher(config: EvalConfig, data: TaskData, teacher_train: GlueSplit,
             ) -> tuple[TaskModel | None, Path, dict]:
    """The given fine-tuned teacher (loaded) or where the seed-0 one is kept (not yet loaded),
    and what identifies it in the cache key."""
    task = data.task
    if config.kd_teacher is None:
        source = base_teacher_source(config.builder, config.recipe, data, teacher_train)
        return None, config.out / FINETUNED_DIR / task.name, source
    directory = _given_teacher_dir(config.kd_teacher, task.name)
    model = load_finetuned_teacher(directory, task, config.dropout)
    # the same identity as any teacher's (its weights, tokenizer and pooling), and its head
    source = {"finetuned": model.backbone.teacher.spec.identity(),
              "head": sha256_file(directory / HEAD_FILE)}
    return model, directory, source


def _fill_cache(cache: Path, model: TaskModel, train: GlueSplit, key: str, config: EvalConfig,
                device: torch.device, ctx: DistContext) -> None:
    """Every rank predicts its own shards of ``train``; rank 0 writes the manifest last."""
    shards = ShardedMap(cache, len(train), config.kd_shard_rows, "arrow", "float32")

    def prepare(lo: int, hi: int) -> PreparedShard:
        part = train.subset(np.arange(lo, hi))
        encoded = encode_split(model.backbone, part)
        texts = part.text_a if part.text_b is None else [
            f"{a}\t{b}" for a, b in zip(part.text_a, part.text_b, strict=True)]
        tokens = encoded.tokens_a if encoded.tokens_b is None else [
            np.concatenate([a, b]) for a, b in zip(encoded.tokens_a, encoded.tokens_b, strict=True)]
        return PreparedShard(texts, tokens, encoded)

    def compute(index: int, prepared: PreparedShard) -> np.ndarray:
        return predict(model, prepared.payload, config.batch_size, device)  # (rows, C)

    shards.run(ctx, prepare, compute, {"settings_fingerprint": key, "kind": TASK_LOGITS,
                                       "task": train.task, "num_shards": shards.num_shards})
    ctx.barrier()  # every rank's shards are in place
    if ctx.is_main:
        write_logits_manifest(cache, shards, train, model, key, config.command)


def _given_teacher_dir(root: Path, task: str) -> Path:
    for directory in (root / task, root):
        if finetuned_teacher_meta(directory) is not None and (directory / HEAD_FILE).is_file():
            return directory
    raise UserError(
        f"--kd-teacher {root}: no fine-tuned {task} teacher (expected {root / task} as written "
        f"by glue-eval under OUT/{FINETUNED_DIR}/{task})"
    )


def write_logits_manifest(cache: Path, shards: ShardedMap, train: GlueSplit, model: TaskModel,
                          key: str, command: str) -> None:
    """The manifest of the logit shards (kind ``task_logits``), written last as stage one writes
    its own: the teacher fields are the fine-tuned teacher's spec, ``dim`` is the logits'."""
    infos = shards.receipts()
    manifest = Manifest(
        **{**model.backbone.teacher.identify().manifest_fields(), "dim": model.head.num_outputs},
        kind=TASK_LOGITS,
        dtype="float32",
        format="arrow",
        corpus={"task": train.task, "split": train.split, "rows": len(train)},
        corpus_fingerprint=split_fingerprint(train),
        settings_fingerprint=key,
        shards=infos,
        num_rows=len(train),
        num_tokens=sum(info.num_tokens for info in infos),
        num_bytes=sum(info.num_bytes for info in infos),
        command=command,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_manifest(cache, manifest)


def read_logits(cache: Path, num_rows: int) -> np.ndarray:
    """The cached (N, C) logits; ShardError if the cache is incomplete or corrupt."""
    shards = ShardDirectory(cache)
    logits = np.concatenate([np.asarray(shard.vectors, dtype=np.float32) for shard in shards])
    if len(logits) != num_rows:
        raise UserError(f"{cache}: {len(logits)} cached logits for {num_rows} training rows; "
                        "delete the directory to recompute")
    return logits
