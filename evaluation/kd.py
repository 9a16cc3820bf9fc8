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
from core.teacher import teacher_spec
from data.glue import GlueSplit, TaskData
from evaluation.config import EvalConfig
from evaluation.finetune import FinetuneResult, FreshModels, encode_split, finetune_grid, predict
from evaluation.heads import TaskModel
from evaluation.report import append_jsonl, run_log_path
from evaluation.systems import (
    HEAD_FILE,
    TEACHER,
    build_model,
    finetuned_teacher_meta,
    load_finetuned_teacher,
    save_finetuned_teacher,
)

CACHE_DIR = "kd-cache"
FINETUNED_DIR = "finetuned-teacher"
TEACHER_SEED = 0


def split_fingerprint(split: GlueSplit) -> str:
    labels = None if split.labels is None else split.labels.tolist()
    return fingerprint([split.text_a, split.text_b, labels])


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
    model = None
    if config.kd_teacher is not None:
        directory = _given_teacher_dir(config.kd_teacher, task.name)
        model = load_finetuned_teacher(directory, task, config)
        # the same identity as any teacher's (its weights, tokenizer and pooling), and its head
        source = {"finetuned": model.backbone.teacher.spec.identity(),
                  "head": sha256_file(directory / HEAD_FILE)}
    else:
        directory = config.out / FINETUNED_DIR / task.name
        source = _base_teacher_source(config, data, teacher_train)
    key = fingerprint({"teacher": source, "task": task.name, "train": split_fingerprint(train)})
    cache = config.out / CACHE_DIR / f"{task.name}-{key}"
    if (cache / MANIFEST_NAME).is_file():
        log(f"{task.name}: teacher logits from the cache {cache}")
        return read_logits(cache, len(train))
    failure = None
    if ctx.is_main and config.kd_teacher is None:
        try:
            model, _, _ = seed0_teacher(config, data, teacher_train, device, log, source)
        except UserError as exc:
            failure = exc
    if not ctx.all_ok(failure is None):
        raise failure or UserError("rank 0 could not fine-tune the teacher; see its message")
    model = model or load_finetuned_teacher(directory, task, config)
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
        log(f"{task.name}: teacher logits cached in {cache}")
    ctx.barrier()
    return read_logits(cache, len(train))


def _base_teacher_source(config: EvalConfig, data: TaskData, train: GlueSplit) -> dict:
    """What determines the seed-0 fine-tuned teacher: base weights, settings, data."""
    base = teacher_spec(config.teacher)  # loaded and hashed once per process, not per task
    # kd_alpha only weighs the students' losses: changing it must not re-train the teacher
    settings = {k: v for k, v in vars(config.train_settings(teacher=True, seed=TEACHER_SEED)).items()
                if k not in ("kd_alpha", "lr", "encoder_lr")}
    settings["grid"] = config.grid(teacher=True)
    return {"base": base.name, "fingerprint": base.teacher_fingerprint, "settings": settings,
            "head_hidden": config.head_hidden, "dropout": config.dropout,
            "dev": {s: split_fingerprint(d) for s, d in data.dev.items()},
            "train": split_fingerprint(train)}


def _given_teacher_dir(root: Path, task: str) -> Path:
    for directory in (root / task, root):
        if finetuned_teacher_meta(directory) is not None and (directory / HEAD_FILE).is_file():
            return directory
    raise UserError(
        f"--kd-teacher {root}: no fine-tuned {task} teacher (expected {root / task} as written "
        f"by glue-eval under OUT/{FINETUNED_DIR}/{task})"
    )


def seed0_teacher(config: EvalConfig, data: TaskData, train: GlueSplit, device: torch.device,
                  log: Callable[[str], None], source: dict | None = None,
                  ) -> tuple[TaskModel, FinetuneResult, dict]:
    """The teacher fine-tuned with seed 0 (its rate chosen on dev over the teacher's grid),
    shared by the ``teacher`` row and ``+kd``; returns the model, its result and its rates
    (:meth:`GridResult.rates`).

    It is saved under ``OUT/finetuned-teacher/<TASK>/`` with its dev result, and reused while the
    base teacher, the settings and the data stay the same (the costliest run is done once).
    ``source`` is ``_base_teacher_source`` when the caller has it already.
    """
    task = data.task
    key = fingerprint(source or _base_teacher_source(config, data, train))
    directory = config.out / FINETUNED_DIR / task.name
    meta = finetuned_teacher_meta(directory)
    if meta is not None and meta.get("settings_fingerprint") == key and meta.get("rates"):
        log(f"{task.name}: fine-tuned teacher (seed {TEACHER_SEED}) from {directory}")
        return (load_finetuned_teacher(directory, task, config), FinetuneResult(**meta["result"]),
                meta["rates"])
    log(f"{task.name}: fine-tuning the teacher (seed {TEACHER_SEED})")
    build = FreshModels(lambda: build_model(TEACHER, task, config, TEACHER_SEED))
    tokenizer = build.first.backbone
    dev = {suffix: encode_split(tokenizer, split) for suffix, split in data.dev.items()}
    log_path = run_log_path(config.out, TEACHER.slug, task.name, TEACHER_SEED)
    log_path.unlink(missing_ok=True)
    rates, encoder_rates = config.grid(teacher=True)
    grid = finetune_grid(build, task, encode_split(tokenizer, train), dev,
                         config.train_settings(teacher=True, seed=TEACHER_SEED), rates, device,
                         encoder_rates, log=lambda record: append_jsonl(log_path, record))
    save_finetuned_teacher(grid.model, task, directory, key, grid.result, grid.rates())
    return grid.model, grid.result, grid.rates()


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
