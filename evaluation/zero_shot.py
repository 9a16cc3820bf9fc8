"""The zero-shot check: STS-B Spearman of cosine similarity, without any fine-tuning."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import spearmanr

from core.teacher import Teacher
from data.glue import GlueSplit
from evaluation.systems import SystemSpec


def cosine_spearman(u: np.ndarray, v: np.ndarray, gold: np.ndarray) -> float:
    """100 x Spearman's rho between row-wise cosine(u, v) (N, D) and the gold scores (N,)."""
    u = u / np.linalg.norm(u, axis=1, keepdims=True).clip(min=1e-12)
    v = v / np.linalg.norm(v, axis=1, keepdims=True).clip(min=1e-12)
    return 100.0 * float(spearmanr((u * v).sum(axis=1), gold).statistic)


def stsb_zero_shot(specs: Sequence[SystemSpec], dev: GlueSplit, teacher_name: str | None, device: str,
                   log: Callable[[str], None]) -> dict[str, float]:
    """Zero-shot STS-B dev Spearman for the teacher and each distinct student directory."""
    encoders: dict[str, Callable[[list[str]], np.ndarray]] = {}
    teacher = Teacher(teacher_name, device=device)
    encoders["teacher"] = teacher.encode
    for spec in specs:
        if spec.kind == "student" and f"student:{spec.path}" not in encoders:
            from student import load_student

            encoders[f"student:{spec.path}"] = load_student(spec.path).encode
    results = {}
    for name, encode in encoders.items():
        score = cosine_spearman(encode(dev.text_a), encode(dev.text_b), dev.labels)
        log(f"STS-B zero-shot (cosine) Spearman, {name}: {score:.2f}")
        results[name] = score
    return results
