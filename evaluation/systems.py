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
- ``teacher``         the teacher (``--teacher``) with its pooling and the same head type
- ``+kd``             adds task-specific distillation from the fine-tuned teacher's logits;
                      ``kd[:DIR]`` is short for ``scratch[:DIR]+kd``

Without any ``--system``, glue-eval compares every student directory under ``--students-dir``
(see :func:`evaluation.config.discover_students`) with ``scratch``, ``model2vec`` and ``teacher``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core.errors import UserError
from core.io import atomic_output, atomic_write_json, read_json_object
from core.teacher import Teacher
from data.glue import GlueTask
from evaluation.backbones import Backbone, StudentBackbone, TeacherBackbone
from evaluation.config import EvalConfig
from evaluation.finetune import FinetuneResult
from evaluation.heads import TaskHead, TaskModel
from student.pretrained import student_path

KINDS = ("student", "scratch", "embeddings", "model2vec", "teacher")
NEEDS_DIR = ("student", "embeddings")
NO_DIR = ("model2vec", "teacher")
GRAMMAR = ("student:DIR, student:DIR+kd, scratch[:DIR], kd[:DIR], embeddings:DIR, model2vec, "
           "teacher (+kd on all but the teacher)")
FINETUNED_META = "glue_model.json"
HEAD_FILE = "head.safetensors"


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


def resolve_systems(texts: list[str]) -> list[SystemSpec]:
    """Parse all specs; scratch/kd without a directory borrow the first student's (when there is
    one; else they keep no directory and get the default architecture)."""
    specs = [parse_system(text) for text in texts]
    labels = [spec.label for spec in specs]
    if len(set(labels)) != len(labels):
        raise UserError(f"--system given twice: {sorted({x for x in labels if labels.count(x) > 1})}")
    first_student = next((s.path for s in specs if s.kind == "student"), None)
    resolved = []
    for spec in specs:
        if spec.kind == "scratch" and spec.path is None and first_student is not None:
            spec = SystemSpec(spec.label, spec.kind, first_student, spec.kd)
        if spec.path is not None:
            from student import StudentConfig

            StudentConfig.load(spec.path)  # a UserError now if DIR is no saved student
        if spec.kind == "embeddings":
            student_shards(spec.path)  # a UserError now if its shard directory cannot be found
        resolved.append(spec)
    return resolved


def student_shards(directory: Path):
    """The (first) shard directory a saved student was trained from, its training seed and the
    matrix it started from (``input`` or ``contextual``, as train-student picks it from
    ``--init-embeddings``): the source of the ``embeddings:DIR`` system's token embeddings. A
    student started from random embeddings gets the teacher's input embeddings."""
    from cache_tools.format import ShardError
    from cache_tools.reader import ShardDirectory

    summary_path = directory / "training_summary.json"
    if not summary_path.is_file():
        raise UserError(f"embeddings:{directory}: no training_summary.json, so no record of the "
                        "shard directory whose token embeddings the student started from")
    train = read_json_object(summary_path, "a training summary", UserError).get("train") or {}
    shards = train.get("shards") or []
    if not shards:
        raise UserError(f"{summary_path}: names no shard directory")
    init = train.get("init_embeddings", "teacher")  # "teacher" before the contextual matrix existed
    kind = "input" if init in ("teacher", "random") else init
    try:
        return ShardDirectory(shards[0]), int(train.get("seed", 0)), kind
    except ShardError as exc:
        raise UserError(f"embeddings:{directory}: its shard directory {shards[0]} is not "
                        f"readable ({exc})") from None


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
    if spec.kind == "model2vec":
        from evaluation.static import StaticBackbone, load_model2vec

        return StaticBackbone(load_model2vec(config))
    from student import SentenceStudent, StudentEncoder, load_student

    if spec.path is None:  # scratch without any student: the default architecture
        return StudentBackbone(default_scratch_student(config))
    student = load_student(spec.path)
    if spec.kind == "scratch":
        student = SentenceStudent(StudentEncoder(student.config), student.tokenizer, student.config)
    elif spec.kind == "embeddings":
        shards, seed, kind = student_shards(spec.path)
        encoder = StudentEncoder(student.config)  # random LSTM and projection (seeded by the run)
        encoder.init_embeddings(shards.load_embeddings(kind), seed=seed)  # as train-student does
        student = SentenceStudent(encoder, student.tokenizer, student.config)
    return StudentBackbone(student)


def default_scratch_student(config: EvalConfig):
    """A random student of train-student's default architecture with the teacher's tokenizer,
    its sizes taken from the teacher as train-student takes them from the shards."""
    from tokenizers import Tokenizer

    from student import SentenceStudent, StudentConfig, StudentEncoder
    from student.config import STUDENT_DEFAULTS
    from student.tokenization import pad_token_id

    teacher = Teacher(config.teacher, device="cpu")
    tokenizer = Tokenizer.from_str(teacher.tokenizer.backend_tokenizer.to_str())
    embedding = teacher.model.get_input_embeddings().weight  # (V, D_emb)
    student_config = StudentConfig(
        vocab_size=max(int(embedding.shape[0]), tokenizer.get_vocab_size()),
        output_dim=teacher.dim,
        embed_dim=int(embedding.shape[1]),
        hidden=STUDENT_DEFAULTS["hidden"],
        pad_token_id=pad_token_id(tokenizer, teacher.name if Path(teacher.name).is_dir() else None),
        max_length=teacher.max_length,
        normalize=teacher.normalize,
    )
    return SentenceStudent(StudentEncoder(student_config), tokenizer, student_config)


# -- fine-tuned teachers on disk --------------------------------------------------------------
def save_finetuned_teacher(model: TaskModel, task: GlueTask, directory: Path, key: str,
                           result: FinetuneResult, rates: dict | None = None) -> None:
    """The fine-tuned transformer and tokenizer (HF format), the head, what rebuilds them and
    the fine-tuning result."""
    backbone: TeacherBackbone = model.backbone
    meta = {
        "task": task.name,
        "labels": task.labels,
        # the fine-tuned weights' identity; its pooling, layer, normalize, max_length rebuild it
        **backbone.teacher.identify().to_dict(),
        "head_hidden": model.head.hidden,
        "settings_fingerprint": key,
        "result": dataclasses.asdict(result),
        "rates": rates,  # the chosen learning rates and the grid's dev scores
    }
    with atomic_output(directory, directory=True) as building:  # all of it, or the old one
        backbone.model.save_pretrained(building)
        backbone.tokenizer.save_pretrained(building)
        save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, building / HEAD_FILE)
        atomic_write_json(building / FINETUNED_META, meta)


def finetuned_teacher_meta(directory: Path) -> dict | None:
    path = directory / FINETUNED_META
    return read_json_object(path, "a fine-tuned teacher's record", UserError) if path.is_file() else None


def load_finetuned_teacher(directory: Path, task: GlueTask, config: EvalConfig) -> TaskModel:
    """A teacher saved by :func:`save_finetuned_teacher` for ``task``."""
    meta = finetuned_teacher_meta(directory)
    if meta is None:
        raise UserError(f"{directory}: no {FINETUNED_META}; not a fine-tuned teacher of glue-eval")
    if meta["task"] != task.name:
        raise UserError(f"{directory}: a teacher fine-tuned on {meta['task']}, not {task.name}")
    teacher = Teacher(str(directory), meta["pooling"], meta["layer"], meta["max_length"], "cpu",
                      normalize=meta["normalize"])  # no modules.json is saved here
    backbone = TeacherBackbone(teacher)
    head = TaskHead(backbone.dim, task.num_outputs, task.pair, meta["head_hidden"], config.dropout)
    head.load_state_dict(load_file(directory / HEAD_FILE))
    return TaskModel(backbone, head)
