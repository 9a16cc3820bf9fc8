"""Held-out agreement between student and teacher vectors."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def agreement(student: np.ndarray, teacher: np.ndarray, prefix: str = "val") -> dict[str, float]:
    """Mean cosine, MSE, and the Spearman correlation of the two models' pairwise cosines.

    The Spearman figure asks whether the student ranks sentence pairs by similarity as the
    teacher does, which is what downstream similarity search and STS care about.
    """
    student = np.asarray(student, dtype=np.float64)
    teacher = np.asarray(teacher, dtype=np.float64)
    s_unit, t_unit = _unit(student), _unit(teacher)
    metrics = {
        f"{prefix}_cosine": float((s_unit * t_unit).sum(axis=1).mean()),
        f"{prefix}_mse": float(((student - teacher) ** 2).mean()),
    }
    if len(student) >= 3:
        upper = np.triu_indices(len(student), k=1)
        rho = spearmanr((s_unit @ s_unit.T)[upper], (t_unit @ t_unit.T)[upper]).statistic
        metrics[f"{prefix}_spearman"] = float(rho) if np.isfinite(rho) else 0.0
    return metrics
