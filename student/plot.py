"""Training curves as a PNG (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.io import atomic_output


def plot_metrics(records: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Left: training loss parts by step. Right: held-out cosine and Spearman by step."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    parts = sorted({k for r in train for k in r if k.startswith("loss_")})
    # The total only adds a line when there are several parts.
    for key in parts + (["loss"] if len(parts) > 1 else []):
        points = [(r["step"], r[key]) for r in train if key in r]
        left.plot(*zip(*points), label=key)
    left.set(xlabel="step", ylabel="training loss", yscale="log")
    for key in ("val_cosine", "val_spearman"):
        points = [(r["step"], r[key]) for r in evals if key in r]
        if points:
            right.plot(*zip(*points), marker="o", label=key)
    right.set(xlabel="step", ylabel="held-out agreement with the teacher")
    for axis in (left, right):
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
        axis.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
