"""Students that ship inside the package, loadable by a short name wherever a student directory
is accepted (``embed``, ``finetune``, ``glue-eval --system student:NAME``, ``export``, and
``SentenceTransformer(path)``): a user without hours of CPU for encode and train-student gets a
distilled student ready-made. Each lives in ``student/pretrained/NAME/`` as a saved student
directory in half precision, with its model card (README.md).
"""

from __future__ import annotations

from pathlib import Path

from student.directory import CONFIG_NAME

PRETRAINED_ROOT = Path(__file__).parent / "pretrained"


def shipped_students() -> list[str]:
    """The short names of the students this package carries."""
    if not PRETRAINED_ROOT.is_dir():
        return []
    return sorted(d.name for d in PRETRAINED_ROOT.iterdir() if (d / CONFIG_NAME).is_file())


def student_path(name_or_path: str | Path) -> Path:
    """A student directory by path, or a shipped student by short name (an existing path wins)."""
    path = Path(name_or_path)
    if path.exists() or str(name_or_path) not in shipped_students():
        return path
    return PRETRAINED_ROOT / str(name_or_path)
