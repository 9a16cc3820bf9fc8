"""The systems compared on GLUE, built fresh for every run.

A system spec is ``KIND[:DIR][+kd]``:

- ``student:DIR``     the SRA-distilled student saved in DIR, fine-tuned end to end
- ``scratch[:DIR]``   the same architecture and tokenizer, randomly initialised (no distillation);
                      without DIR, the first ``student:DIR`` given, else the default student
                      architecture (train-student's defaults) with the teacher's tokenizer
- ``embeddings:DIR``  DIR's architecture and tokenizer with the token embeddings a student starts
                      SRA training from (the input or contextual matrix of DIR's shard directory,
                      as train-student initialised DIR) and everything else random: what the
                      teacher's token vectors alone give, without SRA
- ``model2vec``       the teacher distilled into static token vectors by the model2vec library
                      (mean pooling); its embedding table is fine-tuned with the same head
- ``teacher``         the teacher (``--teacher``) with its pooling and the same head type; on
                      pairs a cross-encoder (one sequence a pair) unless ``--teacher-pairs siamese``
- ``+kd``             adds task-specific distillation from the fine-tuned teacher's logits;
                      ``kd[:DIR]`` is short for ``scratch[:DIR]+kd``

Without any ``--system``, glue-eval compares every student directory under ``--students-dir``
(:func:`discover_students`) with ``scratch``, ``model2vec`` and ``teacher``. A system is parsed
once into a :class:`SystemSpec` (a student's directory as a path) and built by a
:class:`Builder` (the base teacher, the cache of what is built from it, the head).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.errors import UserError
from core.teacher import Teacher
from data.glue import GlueTask
from evaluation.backbones import JOINT, Backbone, StudentBackbone, TeacherBackbone
from evaluation.heads import TaskModel, task_head
from evaluation.settings import HeadSettings
from student.directory import StudentDirectory
from student.pretrained import student_path

KINDS = ("student", "scratch", "embeddings", "model2vec", "teacher")
NEEDS_DIR = ("student", "embeddings")
NO_DIR = ("model2vec", "teacher")
GRAMMAR = ("student:DIR, student:DIR+kd, scratch[:DIR], kd[:DIR], embeddings:DIR, model2vec, "
           "teacher (+kd on all but the teacher)")
BASELINES = ("scratch", "model2vec", "teacher")  # what a bare glue-eval compares the students with


@dataclass(frozen=True)
class SystemSpec:
    label: str  # as given on the command line: the row name in the results
    kind: str  # one of KINDS
    path: Path | None  # the student directory (architecture and tokenizer for scratch, embeddings)
    kd: bool

    @property
    def slug(self) -> str:
        """A file-system safe name for logs and submission folders."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.label).strip("_")

    @property
    def student(self) -> StudentDirectory | None:
        return None if self.path is None else StudentDirectory(self.path)


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
    if kind in NO_DIR and path:
        raise UserError(f"bad --system {text!r}: {kind} takes no directory (it is built from --teacher)")
    if kind in NEEDS_DIR and not path:
        raise UserError(f"bad --system {text!r}: {kind} needs a student directory ({kind}:DIR)")
    directory = student_path(path) if path else None  # a shipped student's short name too
    if directory is not None and not directory.is_dir():
        raise UserError(f"--system {text!r}: {path} is not a directory")
    return SystemSpec(label, kind, directory, kd)


def student_system(directory: Path, kd: bool = False) -> SystemSpec:
    """``student:DIR`` (``+kd``) for a directory already in hand: no string to parse back."""
    label = f"student:{directory}{'+kd' if kd else ''}"
    path = student_path(directory)  # a shipped student's short name too
    if not path.is_dir():
        raise UserError(f"--system {label!r}: {directory} is not a directory")
    return SystemSpec(label, "student", path, kd)


def discover_students(root: Path) -> list[SystemSpec]:
    """``student:DIR`` for ``root`` itself if it is a saved student, else for each directory
    directly under it that is one (config.json + model.safetensors), sorted by name.

    train-student writes ``students/student/`` and, inside it, ``best/`` (the checkpoint with the
    best held-out cosine); being one level deeper, ``best/`` is not counted.
    """
    if StudentDirectory.is_student(root):
        return [student_system(root)]
    found = (sorted(d for d in root.iterdir() if d.is_dir() and StudentDirectory.is_student(d))
             if root.is_dir() else [])
    if not found:
        state = "is not a directory" if not root.is_dir() else "holds no student directory"
        raise UserError(
            f"--students-dir {root} {state} (config.json + model.safetensors); train one with "
            f"`pipeline train-student --shards DIR --out {root}/student` or name systems with --system"
        )
    return [student_system(directory) for directory in found]


def resolve_systems(specs: list[SystemSpec]) -> list[SystemSpec]:
    """Check the systems; scratch/kd without a directory borrow the first student's (when there
    is one; else they keep no directory and get the default architecture)."""
    labels = [spec.label for spec in specs]
    if len(set(labels)) != len(labels):
        raise UserError(f"--system given twice: {sorted({x for x in labels if labels.count(x) > 1})}")
    first_student = next((s.path for s in specs if s.kind == "student"), None)
    resolved = []
    for spec in specs:
        if spec.kind == "scratch" and spec.path is None and first_student is not None:
            spec = SystemSpec(spec.label, spec.kind, first_student, spec.kd)
        if spec.path is not None:
            spec.student.config  # a UserError now if DIR is no saved student
        if spec.kind == "embeddings":
            spec.student.source_shards()  # a UserError now if its shard directory cannot be found
        resolved.append(spec)
    return resolved


# -- building ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Builder:
    """Where every system's weights come from: the base teacher (None: the packaged
    all-MiniLM-L6-v2), the folder that caches what is built from it (model2vec, the seed-0
    fine-tuned teacher: glue-eval's OUT, finetune's cache directory), the head, and how the
    teacher reads a pair (``joint``: one sequence, a cross-encoder; ``siamese``: each side apart,
    as the students do)."""

    teacher: str | None
    cache: Path
    head: HeadSettings = field(default_factory=HeadSettings)
    teacher_pairs: str = JOINT

    def model(self, spec: SystemSpec, task: GlueTask, seed: int) -> TaskModel:
        """A fresh model for one run: weights from disk (student, teacher) or seeded random."""
        torch.manual_seed(seed)  # scratch weights and the head's initialisation
        backbone = self.backbone(spec)
        return TaskModel(backbone, task_head(backbone, task, self.head.hidden, self.head.dropout))

    def backbone(self, spec: SystemSpec) -> Backbone:
        if spec.kind == "teacher":
            return TeacherBackbone(Teacher(self.teacher, device="cpu"),
                                   joint_pairs=self.teacher_pairs == JOINT)
        if spec.kind == "model2vec":
            from evaluation.static import StaticBackbone, load_model2vec

            return StaticBackbone(load_model2vec(self.teacher, self.cache))
        from student import SentenceStudent, StudentEncoder, load_student

        if spec.path is None:  # scratch without any student: the default architecture
            return StudentBackbone(default_scratch_student(self.teacher))
        student = load_student(spec.path)
        if spec.kind == "scratch":
            student = SentenceStudent(StudentEncoder(student.config), student.tokenizer, student.config)
        elif spec.kind == "embeddings":
            shards, seed, kind = spec.student.source_shards()
            encoder = StudentEncoder(student.config)  # random LSTM and projection (seeded by the run)
            encoder.init_embeddings(shards.load_embeddings(kind), seed=seed)  # as train-student does
            student = SentenceStudent(encoder, student.tokenizer, student.config)
        return StudentBackbone(student)


def default_scratch_student(teacher_name: str | None):
    """A random student of train-student's default architecture with the teacher's tokenizer,
    its sizes taken from the teacher as train-student takes them from the shards."""
    from tokenizers import Tokenizer

    from student import SentenceStudent, StudentConfig, StudentEncoder
    from student.config import STUDENT_DEFAULTS

    teacher = Teacher(teacher_name, device="cpu")
    tokenizer = Tokenizer.from_str(teacher.tokenizer.backend_tokenizer.to_str())
    embedding = teacher.model.get_input_embeddings().weight  # (V, D_emb)
    student_config = StudentConfig(
        vocab_size=max(int(embedding.shape[0]), tokenizer.get_vocab_size()),
        output_dim=teacher.dim,
        embed_dim=int(embedding.shape[1]),
        hidden=STUDENT_DEFAULTS["hidden"],
        pad_token_id=teacher.pad_id,  # the teacher's own, also for a model named on the hub
        max_length=teacher.max_length,
        normalize=teacher.normalize,
    )
    return SentenceStudent(StudentEncoder(student_config), tokenizer, student_config)
