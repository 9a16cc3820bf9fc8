"""The teacher fine-tuned on a task with seed 0: saved once, shared by the ``teacher`` row and by
every ``+kd`` system (whose logits it gives), reused while its inputs are unchanged.

On disk (``CACHE/finetuned-teacher/<TASK>/``): the transformer and tokenizer in the Hugging Face
format, the head (``head.safetensors``) and ``glue_model.json`` (what rebuilds it, the settings
fingerprint it was trained under and its dev result).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core.errors import UserError
from core.io import atomic_output, atomic_write_json, fingerprint, read_json_object
from core.teacher import Teacher, quiet_transformers, teacher_spec
from data.glue import GlueSplit, GlueTask, TaskData
from evaluation.backbones import JOINT, TeacherBackbone
from evaluation.finetune import FinetuneResult, FreshModels, GridCheckpoint, encode_split, finetune_grid
from evaluation.heads import TaskModel, task_head
from evaluation.report import append_jsonl, restart_log, run_log_path
from evaluation.settings import Recipe
from evaluation.systems import TEACHER, Builder

FINETUNED_DIR = "finetuned-teacher"
FINETUNED_META = "glue_model.json"
HEAD_FILE = "head.safetensors"
TEACHER_SEED = 0


def split_fingerprint(split: GlueSplit) -> str:
    labels = None if split.labels is None else split.labels.tolist()
    return fingerprint([split.text_a, split.text_b, labels])


def save_finetuned_teacher(model: TaskModel, task: GlueTask, directory: Path, key: str,
                           result: FinetuneResult, rates: dict | None = None,
                           precision: str | None = None) -> None:
    """The fine-tuned transformer and tokenizer (HF format), the head, what rebuilds them and
    the fine-tuning result; ``precision``: its training steps' where not the device's own."""
    backbone: TeacherBackbone = model.backbone
    meta = {
        "task": task.name,
        "labels": task.labels,
        # the fine-tuned weights' identity; its pooling, layer, normalize, max_length rebuild it
        **backbone.teacher.identify().to_dict(),
        "head_hidden": model.head.hidden,
        "pairs": backbone.pairs,  # absent in older ones: siamese
        "settings_fingerprint": key,
        "result": dataclasses.asdict(result),
        "rates": rates,  # the chosen learning rates and the grid's dev scores
        # the fine-tuning steps' arithmetic, absent at the device's own ("precision" above is
        # the base teacher's identity)
        **({"train_precision": precision} if precision else {}),
    }
    with atomic_output(directory, directory=True) as building:  # all of it, or the old one
        with quiet_transformers():  # no "Writing model shards" bar at every save
            backbone.model.save_pretrained(building)
            backbone.tokenizer.save_pretrained(building)
        save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, building / HEAD_FILE)
        atomic_write_json(building / FINETUNED_META, meta)


def finetuned_teacher_meta(directory: Path) -> dict | None:
    path = directory / FINETUNED_META
    return read_json_object(path, "a fine-tuned teacher's record", UserError) if path.is_file() else None


def load_finetuned_teacher(directory: Path, task: GlueTask, dropout: float) -> TaskModel:
    """A teacher saved by :func:`save_finetuned_teacher` for ``task`` (its head's ``dropout``
    is not saved: it only matters if it is trained further)."""
    meta = finetuned_teacher_meta(directory)
    if meta is None:
        raise UserError(f"{directory}: no {FINETUNED_META}; not a fine-tuned teacher of glue-eval")
    if meta["task"] != task.name:
        raise UserError(f"{directory}: a teacher fine-tuned on {meta['task']}, not {task.name}")
    teacher = Teacher(str(directory), meta["pooling"], meta["layer"], meta["max_length"], "cpu",
                      normalize=meta["normalize"])  # no modules.json is saved here
    backbone = TeacherBackbone(teacher, joint_pairs=meta.get("pairs") == JOINT)
    head = task_head(backbone, task, meta["head_hidden"], dropout)
    head.load_state_dict(load_file(directory / HEAD_FILE))
    return TaskModel(backbone, head)


def base_teacher_source(builder: Builder, recipe: Recipe, data: TaskData, train: GlueSplit) -> dict:
    """What determines the seed-0 fine-tuned teacher: base weights, settings, data."""
    base = teacher_spec(builder.teacher)  # loaded and hashed once per process, not per task
    # kd_alpha only weighs the students' losses: changing it must not re-train the teacher
    settings = recipe.settings(teacher=True, seed=TEACHER_SEED).identity("kd_alpha", "lr", "encoder_lr")
    settings["grid"] = recipe.grid.points(teacher=True)
    return {"base": base.name, "fingerprint": base.teacher_fingerprint, "settings": settings,
            "head_hidden": builder.head.hidden, "dropout": builder.head.dropout,
            "dev": {s: split_fingerprint(d) for s, d in data.dev.items()},
            "train": split_fingerprint(train), **pairs_identity(builder.teacher_pairs, data.task)}


def pairs_identity(teacher_pairs: str, task: GlueTask) -> dict:
    """How the teacher reads this task's rows, where that changes the teacher: a pair task read
    as one sequence. Siamese pairs and single sentences add nothing, so the teachers (and the
    kd caches and run records) made before cross-encoding existed keep their keys."""
    return {"pairs": JOINT} if task.pair and teacher_pairs == JOINT else {}


def seed0_teacher(builder: Builder, recipe: Recipe, data: TaskData, train: GlueSplit,
                  device: torch.device, log: Callable[[str], None], source: dict | None = None,
                  ) -> tuple[TaskModel, FinetuneResult, dict]:
    """The teacher fine-tuned with seed 0 (its rate chosen on dev over the teacher's grid);
    returns the model, its result and its rates (:meth:`GridResult.rates`).

    It is saved under ``CACHE/finetuned-teacher/<TASK>/`` with its dev result, and reused while
    the base teacher, the settings and the data stay the same (the costliest run is done once).
    ``source`` is :func:`base_teacher_source` when the caller has it already.
    """
    task = data.task
    key = fingerprint(source or base_teacher_source(builder, recipe, data, train))
    directory = builder.cache / FINETUNED_DIR / task.name
    meta = finetuned_teacher_meta(directory)
    if meta is not None and meta.get("settings_fingerprint") == key and meta.get("rates"):
        log(f"{task.name}: fine-tuned teacher (seed {TEACHER_SEED}) from {directory}")
        return (load_finetuned_teacher(directory, task, builder.head.dropout),
                FinetuneResult(**meta["result"]), meta["rates"])
    log(f"{task.name}: fine-tuning the teacher (seed {TEACHER_SEED})")
    build = FreshModels(lambda: builder.model(TEACHER, task, TEACHER_SEED))
    tokenizer = build.first.backbone
    dev = {suffix: encode_split(tokenizer, split) for suffix, split in data.dev.items()}
    log_path = run_log_path(builder.cache, TEACHER.slug, task.name, TEACHER_SEED)
    # the costliest run of all: its finished grid points survive a stop
    checkpoint = GridCheckpoint(builder.cache / FINETUNED_DIR / f".{task.name}.partial", key)
    kept = checkpoint.load()[0]
    restart_log(log_path, kept)
    if kept:
        log(f"{task.name}: {len(kept)} grid point(s) of the teacher kept from an earlier run")
    rates, encoder_rates = recipe.grid.points(teacher=True)
    grid = finetune_grid(build, task, encode_split(tokenizer, train), dev,
                         recipe.settings(teacher=True, seed=TEACHER_SEED), rates, device,
                         encoder_rates, log=lambda record: append_jsonl(log_path, record),
                         checkpoint=checkpoint)
    save_finetuned_teacher(grid.model, task, directory, key, grid.result, grid.rates(),
                           recipe.precision)
    checkpoint.clear()
    return grid.model, grid.result, grid.rates()
