"""Results: aggregation over seeds, ``results.json``, ``results.md`` and GLUE submission files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cache_tools.manifest import atomic_write_bytes, atomic_write_json
from data.glue import GlueSplit, GlueTask
from evaluation.metrics import TASK_METRICS, glue_average, predictions_from_outputs

METRIC_NAMES = {"mcc": "MCC", "acc": "acc", "f1": "F1", "pearson": "P", "spearman": "S"}


def mean_std(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for a single run) of per-seed values."""
    values = [float(v) for v in values]
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "values": values}


def summarize(runs: list[dict], systems: list[str], tasks: list[str]) -> dict:
    """Per system: each task's metrics and score, and the GLUE average, as mean/std over seeds.

    ``runs`` holds one record per (system, task, seed) with ``metrics`` and ``score``.
    """
    summary: dict[str, dict] = {}
    for system in systems:
        mine = [r for r in runs if r["system"] == system]
        seeds = sorted({r["seed"] for r in mine})
        per_task = {}
        for task in tasks:
            records = [r for r in mine if r["task"] == task]
            if not records:
                continue
            per_task[task] = {
                "metrics": {k: mean_std([r["metrics"][k] for r in records])
                            for k in records[0]["metrics"]},
                "score": mean_std([r["score"] for r in records]),
                "best_epoch": [r["best_epoch"] for r in records],
            }
        averages = [
            glue_average({r["task"]: r["score"] for r in mine if r["seed"] == seed})
            for seed in seeds
        ]
        summary[system] = {"tasks": per_task, "average": mean_std(averages) if averages else None}
    return summary


def mean_std_cell(stats: dict) -> str:
    """Mean ± std; a single run has no spread to show."""
    if len(stats["values"]) < 2:
        return f"{stats['mean']:.1f}"
    return f"{stats['mean']:.1f} ± {stats['std']:.1f}"


def task_header(task: str) -> str:
    metrics = TASK_METRICS[task]
    if task == "MNLI":
        return "MNLI (m/mm acc)"
    return f"{task} ({'/'.join(METRIC_NAMES[m] for m in metrics)})"


def markdown(summary: dict, tasks: list[str], zero_shot: dict[str, float], seeds: int,
             teacher_seeds: int | None = None) -> str:
    """The results table (rows: systems; columns: tasks and the GLUE average)."""
    lines = []
    if summary:
        header = ["system", *(task_header(t) for t in tasks), "GLUE avg"]
        teacher_note = ("" if teacher_seeds in (None, seeds) or "teacher" not in summary
                        else f" (the teacher: {teacher_seeds})")
        lines += [
            f"GLUE dev results, mean ± std over {seeds} seed(s){teacher_note}; scores × 100. Tasks with two "
            "metrics show both; the average is over the tasks in this table (each task's score "
            "is the mean of its metrics; MNLI m and mm count as one task). Each run's epoch is "
            "picked on the same dev set (GLUE test labels are hidden), the usual GLUE-dev "
            "practice, which flatters every row alike.",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for system, result in summary.items():
            cells = [system]
            for task in tasks:
                stats = result["tasks"].get(task)
                cells.append(" / ".join(mean_std_cell(s) for s in stats["metrics"].values()) if stats
                             else "–")
            cells.append(mean_std_cell(result["average"]) if result["average"] else "–")
            lines.append("| " + " | ".join(cells) + " |")
    if zero_shot:
        lines += [
            "",
            "Zero-shot STS-B dev (no fine-tuning): Spearman × 100 of the cosine of sentence vectors.",
            "",
            "| encoder | STS-B Spearman |",
            "|---|---|",
            *(f"| {name} | {score:.1f} |" for name, score in zero_shot.items()),
        ]
    return "\n".join(lines) + "\n"


def write_results(out: Path, summary: dict, tasks: list[str], zero_shot: dict[str, float],
                  config: dict) -> None:
    seeds = int(config["seeds"])
    atomic_write_json(out / "results.json", {
        "scale": "0-100",
        "split": "dev (GLUE test labels are hidden; test predictions go to submissions/)",
        "average": "unweighted mean of per-task scores over the tasks evaluated; a task's score "
                   "is the mean of its metrics; MNLI m/mm form one task; AX is not included",
        "std": "sample standard deviation over seeds (ddof=1)",
        "tasks": tasks,
        "systems": summary,
        "zero_shot_stsb_spearman": zero_shot,
        "config": config,
    })
    table = markdown(summary, tasks, zero_shot, seeds, config.get("teacher_seeds"))
    atomic_write_bytes(out / "results.md", table.encode())


def write_submission(directory: Path, task: GlueTask, stem: str, split: GlueSplit,
                     outputs: np.ndarray) -> Path:
    """``<stem>.tsv`` for the GLUE server: ``index<TAB>prediction``, label strings where used."""
    predictions = predictions_from_outputs(task, outputs)
    if task.regression:
        # the server expects scores on the 0-5 scale
        values = [f"{v:.3f}" for v in np.clip(predictions, 0.0, 5.0)]
    else:
        # AX is predicted by the MNLI model, so it gets MNLI's label strings
        values = [task.labels[int(p)] for p in predictions]
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["index\tprediction", *(f"{i}\t{v}" for i, v in zip(split.index, values, strict=True))]
    path = directory / f"{stem}.tsv"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def run_log_path(out: Path, system_slug: str, task: str, seed: int) -> Path:
    """Where one run's per-epoch records go."""
    return out / "logs" / system_slug / task / f"seed{seed}.jsonl"


def append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
