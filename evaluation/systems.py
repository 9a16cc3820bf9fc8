"""The systems compared on GLUE, built fresh for every run.

A system spec is ``KIND[:DIR][+kd]``:

- ``student:DIR``    the SRA-distilled student saved in DIR, fine-tuned end to end
- ``scratch[:DIR]``  the same architecture and tokenizer, randomly initialised (no distillation);
                     without DIR, the first ``student:DIR`` given
- ``teacher``        the teacher (``--teacher``) with its pooling and the same head type
- ``+kd``            adds task-specific distillation from the fine-tuned teacher's logits;
                     ``kd[:DIR]`` is short for ``scratch[:DIR]+kd``
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from data.glue import GlueTask
from evaluation.backbones import Backbone, StudentBackbone, TeacherBackbone
from evaluation.config import EvalConfig
from evaluation.finetune import FinetuneResult
from evaluation.heads import TaskHead, TaskModel
from pipeline.errors import UserError
from pipeline.teacher import Teacher

KINDS = ("student", "scratch", "teacher")
GRAMMAR = "student:DIR, student:DIR+kd, scratch[:DIR], kd[:DIR], teacher"
FINETUNED_META = "glue_model.json"
HEAD_FILE = "head.safetensors"


@dataclass(frozen=True)
class SystemSpec:
    label: str  # as given on the command line: the row name in the results
    kind: str  # student | scratch | teacher
    path: Path | None  # the student directory (architecture and tokenizer for scratch)
    kd: bool

    @property
    def slug(self) -> str:
        """A file-system safe name for logs and submission folders."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.label).strip("_")


TEACHER = SystemSpec("teacher", "teacher", None, kd=False)


def parse_system(text: str) -> SystemSpec:
    """One ``--system`` value; UserError for anything outside the grammar."""
    label = text.strip()
    body, kd = (label[:-3], True) if label.endswith("+kd") else (label, False)
    kind, _, path = body.partition(":")
    if kind == "kd" and not kd:
        kind, kd = "scratch", True
    if kind not in KINDS:
        raise UserError(f"bad --system {text!r}: expected one of {GRAMMAR}")
    if kind == "teacher" and (path or kd):
        raise UserError(f"bad --system {text!r}: the teacher is given with --teacher; {GRAMMAR}")
    if kind == "student" and not path:
        raise UserError(f"bad --system {text!r}: a student needs its directory (student:DIR)")
    if path and not Path(path).is_dir():
        raise UserError(f"--system {text!r}: {path} is not a directory")
    return SystemSpec(label, kind, Path(path) if path else None, kd)


def resolve_systems(texts: list[str]) -> list[SystemSpec]:
    """Parse all specs; scratch/kd without a directory borrow the first student's."""
    specs = [parse_system(text) for text in texts]
    labels = [spec.label for spec in specs]
    if len(set(labels)) != len(labels):
        raise UserError(f"--system given twice: {sorted({x for x in labels if labels.count(x) > 1})}")
    first_student = next((s.path for s in specs if s.kind == "student"), None)
    resolved = []
    for spec in specs:
        if spec.kind == "scratch" and spec.path is None:
            if first_student is None:
                raise UserError(
                    f"--system {spec.label}: needs a student architecture and tokenizer to copy; "
                    "write scratch:DIR (or kd:DIR) or add a student:DIR system"
                )
            spec = SystemSpec(spec.label, spec.kind, first_student, spec.kd)
        if spec.path is not None:
            from student import StudentConfig

            StudentConfig.load(spec.path)  # a UserError now if DIR is no saved student
        resolved.append(spec)
    return resolved


# -- building ---------------------------------------------------------------------------------
def build_model(spec: SystemSpec, task: GlueTask, config: EvalConfig, seed: int) -> TaskModel:
    """A fresh model for one run: weights from disk (student, teacher) or seeded random."""
    torch.manual_seed(seed)  # scratch weights and the head's initialisation
    backbone = _backbone(spec, config)
    head = TaskHead(backbone.dim, task.num_outputs, task.pair, config.head_hidden, config.dropout)
    return TaskModel(backbone, head)


def _backbone(spec: SystemSpec, config: EvalConfig) -> Backbone:
    if spec.kind == "teacher":
        return TeacherBackbone(Teacher(config.teacher, device="cpu"))
    from student import SentenceStudent, StudentEncoder, load_student

    student = load_student(spec.path)
    if spec.kind == "scratch":
        student = SentenceStudent(StudentEncoder(student.config), student.tokenizer, student.config)
    return StudentBackbone(student)


# -- fine-tuned teachers on disk --------------------------------------------------------------
def save_finetuned_teacher(model: TaskModel, task: GlueTask, directory: Path, key: str,
                           result: FinetuneResult) -> None:
    """The fine-tuned transformer and tokenizer (HF format), the head, what rebuilds them and
    the fine-tuning result."""
    backbone: TeacherBackbone = model.backbone
    directory.mkdir(parents=True, exist_ok=True)
    backbone.model.save_pretrained(directory)
    backbone.tokenizer.save_pretrained(directory)
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, directory / HEAD_FILE)
    meta = {
        "task": task.name,
        "labels": task.labels,
        "pooling": backbone.pooling,
        "normalize": backbone.normalize,
        "layer": backbone.layer,
        "max_length": backbone.max_length,
        "head_hidden": model.head.hidden,
        "settings_fingerprint": key,
        "result": dataclasses.asdict(result),
    }
    # written last: its presence means the directory is complete
    (directory / FINETUNED_META).write_text(json.dumps(meta, indent=2) + "\n")


def finetuned_teacher_meta(directory: Path) -> dict | None:
    path = directory / FINETUNED_META
    return json.loads(path.read_text()) if path.is_file() else None


def load_finetuned_teacher(directory: Path, task: GlueTask, config: EvalConfig) -> TaskModel:
    """A teacher saved by :func:`save_finetuned_teacher` for ``task``."""
    meta = finetuned_teacher_meta(directory)
    if meta is None:
        raise UserError(f"{directory}: no {FINETUNED_META}; not a fine-tuned teacher of glue-eval")
    if meta["task"] != task.name:
        raise UserError(f"{directory}: a teacher fine-tuned on {meta['task']}, not {task.name}")
    teacher = Teacher(str(directory), meta["pooling"], meta["layer"], meta["max_length"], "cpu")
    # Teacher reads normalisation from a sentence-transformers modules.json, which is not saved here
    teacher.normalize = meta["normalize"]
    backbone = TeacherBackbone(teacher)
    head = TaskHead(backbone.dim, task.num_outputs, task.pair, meta["head_hidden"], config.dropout)
    head.load_state_dict(load_file(directory / HEAD_FILE))
    return TaskModel(backbone, head)
