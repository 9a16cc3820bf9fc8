"""Fine-tuned rows read from glue-eval output directories, shared by the benchmark summaries
(scale_summary.py, kd_summary.py): ``{ROW: {TASK: [mean, std]}}`` and its markdown table."""

from __future__ import annotations

import json
from pathlib import Path

TASKS = ["CoLA", "SST-2", "MRPC", "RTE"]


def glue_rows(specs: list[str]) -> dict:
    """``{ROW: {TASK: [mean, std]}}`` from ``ROW=PATTERN`` specs, PATTERN a glue-eval output
    directory with ``{task}`` in it (one system per directory, as scale_study.sh glue and the
    second edition's reproduce.sh write them); tasks not finished yet are left out."""
    table: dict[str, dict[str, list[float]]] = {}
    for spec in specs:
        row, _, pattern = spec.partition("=")
        for task in TASKS:
            path = Path(pattern.format(task=task)) / "results.json"
            if not path.is_file():
                continue
            for result in json.loads(path.read_text())["systems"].values():
                cell = result["tasks"][task]["score"]
                table.setdefault(row, {})[task] = [cell["mean"], cell["std"]]
    return table


def average(cells: dict) -> float | None:
    """A row's mean over the four tasks; None until every task is in."""
    return sum(cells[t][0] for t in TASKS) / len(TASKS) if all(t in cells for t in TASKS) else None


def glue_table(glue: dict) -> list[str]:
    """The fine-tuned rows as a markdown table: mean ± std over seeds, and the average."""
    lines = ["| system | " + " | ".join(TASKS) + " | average |", "|---" * (len(TASKS) + 2) + "|"]
    for row, cells in glue.items():
        scores = [f"{cells[t][0]:.1f} ± {cells[t][1]:.1f}" if t in cells else "–" for t in TASKS]
        mean = average(cells)
        lines.append(f"| {row} | " + " | ".join(scores) + f" | {'–' if mean is None else f'{mean:.1f}'} |")
    return lines
