"""Results: aggregation over seeds, ``results.json``, ``results.md`` and GLUE submission files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.io import atomic_write_bytes, atomic_write_json
from data.glue import GlueSplit, GlueTask
from evaluation.metrics import TASK_METRICS, glue_average, predictions_from_outputs

METRIC_NAMES = {"mcc": "MCC", "acc": "acc", "f1": "F1", "pearson": "P", "spearman": "S"}
RESULTS_NAME = "results"  # fine-tuning: results.json / results.md
PROBE_NAME = "probe"  # --probe: probe.json / probe.md, beside a fine-tuning run's results
CHOSEN_KEYS = ("lr", "encoder_lr", "probe_c")  # what is selected on dev per run


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
                # per seed: the learning rates (or the probe's C) chosen on dev
                "chosen": {k: [r[k] for r in records] for k in CHOSEN_KEYS if k in records[0]},
            }
            if "train_rows" in records[0]:
                per_task[task]["train_rows"] = records[0]["train_rows"]
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
             teacher_seeds: int | None = None, config: dict | None = None,
             rows: dict[str, dict] | None = None, speeds: dict[str, float] | None = None) -> str:
    """The results table (rows: systems; columns: tasks and the GLUE average), what produced it
    (the protocol, the training-set caps, the rates chosen on dev) and the systems' speed."""
    config = config or {}
    probe = bool(config.get("probe"))
    lines = []
    if summary:
        header = ["system", *(task_header(t) for t in tasks), "GLUE avg"]
        teacher_note = ("" if teacher_seeds in (None, seeds) or "teacher" not in summary
                        else f" (the teacher: {teacher_seeds})")
        runs = "one probe per system" if probe else f"mean ± std over {seeds} seed(s){teacher_note}"
        lines += [
            f"{'Frozen probe' if probe else 'Fine-tuned'}: GLUE dev results, {runs}; scores × 100. "
            "Tasks with two metrics show both; the average is over the tasks in this table (each "
            "task's score is the mean of its metrics; MNLI m and mm count as one task).",
            "",
            protocol(config, probe),
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
        lines += chosen_table(summary, tasks, probe)
    if rows:
        lines += ["", "Training rows per task (a fixed random subset where capped): " + "; ".join(
            rows_note(task, counts, config) for task, counts in rows.items()) + "."]
    if speeds:
        lines += [
            "",
            "Speed: sentences/s of each encoder (tokenization + forward pass, no head) on the CPU, "
            f"batches of 64, over {config.get('speed_sentences', 'the same')} dev sentences of "
            f"{tasks[0] if tasks else 'the first task'} (a shared CPU makes these rough).",
            "",
            "| system | sentences/s |",
            "|---|---|",
            *(f"| {name} | {value:,.0f} |" for name, value in speeds.items()),
        ]
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


def protocol(config: dict, probe: bool) -> str:
    """How the numbers were produced, for the caption."""
    if probe:
        return ("Protocol: every encoder is frozen (students and teacher as trained, scratch random, "
                "embeddings a random LSTM over the teacher's token vectors, model2vec as distilled); its "
                "sentence vectors u (pairs: [u; v; |u-v|; u*v]) are standardised and fed to "
                "scikit-learn's logistic regression (ridge regression for STS-B), whose "
                f"regularisation C (ridge: 1/C) is chosen on dev from {config.get('probe_c_grid')}. "
                "Choosing on the dev set that is reported flatters every row alike (GLUE test "
                "labels are hidden).")
    if not config.get("lr_grid"):  # results of a run from before the grid: one rate each
        return ("Protocol: each system is fine-tuned with one learning rate; each run's epoch is "
                "picked on the dev set that is reported (GLUE test labels are hidden), the usual "
                "GLUE-dev practice, which flatters every row alike.")
    grid = ", ".join(f"{r:g}" for r in config["lr_grid"])
    teacher_grid = ", ".join(f"{r:g}" for r in config.get("teacher_lr_grid") or [])
    text = ("Protocol: each system (encoder + MLP head) is fine-tuned once per learning rate, a fresh "
            "model with the same seed each time; the rate whose best epoch scores highest on dev is "
            "kept and that epoch's score reported (the rates chosen are listed below). "
            f"Rates: {grid} for the whole model (students, scratch, embeddings, model2vec)")
    if teacher_grid:
        text += (f"; the teacher's transformer {teacher_grid} with its head at "
                 f"{config.get('teacher_head_lr', 0):g}")
    if config.get("grid_seeds") is not None:
        text += (f". Seeds 0..{config['grid_seeds'] - 1} search the grid; the later seeds train at "
                 "the rate with the best mean dev score over those")
    return text + (". Selecting epoch and rate on the dev set that is reported is the usual GLUE-dev "
                   "practice (test labels are hidden); it flatters every row alike.")


def _rate(value) -> str:
    return "–" if value is None else f"{value:g}"


def chosen_table(summary: dict, tasks: list[str], probe: bool) -> list[str]:
    """Per system and task, what dev selected (per seed): learning rates, or the probe's C."""
    def cell(stats: dict | None) -> str:
        if not stats or not stats.get("chosen"):
            return "–"
        chosen = stats["chosen"]
        if probe:
            return ", ".join(_rate(c) for c in chosen.get("probe_c", []))
        parts = []
        for lr, encoder_lr in zip(chosen.get("lr", []), chosen.get("encoder_lr", []), strict=False):
            parts.append(_rate(lr) if encoder_lr is None else f"{_rate(encoder_lr)} (head {_rate(lr)})")
        return ", ".join(parts)

    cells = {system: [cell(result["tasks"].get(t)) for t in tasks] for system, result in summary.items()}
    if all(c == "–" for row in cells.values() for c in row):
        return []
    title = ("Probe regularisation C chosen on dev (per system and task)" if probe else
             "Learning rates chosen on dev, per seed (the teacher: its transformer's rate, then its "
             "head's)")
    return ["", title + ":", "", "| system | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 1),
            *(f"| {system} | " + " | ".join(row) + " |" for system, row in cells.items())]


def rows_note(task: str, counts: dict, config: dict) -> str:
    """``RTE 200 of 2,490 (--max-train-samples 200); the teacher 100 (--teacher-max-train-samples
    100)``."""
    cap = config.get("max_train_samples")
    note = f"{task} {counts['systems']:,} of {counts['available']:,}"
    if cap is not None:
        note += f" (--max-train-samples {cap})"
    if counts["teacher"] != counts["systems"] or config.get("teacher_max_train_samples"):
        teacher_cap = config.get("teacher_max_train_samples") or cap
        note += f", the teacher {counts['teacher']:,}" + (
            f" (--teacher-max-train-samples {teacher_cap})" if teacher_cap is not None else "")
    return note


def write_results(out: Path, summary: dict, tasks: list[str], zero_shot: dict[str, float],
                  config: dict, rows: dict[str, dict] | None = None,
                  speeds: dict[str, float] | None = None, name: str = RESULTS_NAME) -> None:
    """``NAME.json`` and ``NAME.md``: the summary, the protocol, every cap (``rows``: per task the
    rows available, the systems' and the teacher's) and every chosen rate, the speeds."""
    seeds = int(config["seeds"])
    probe = bool(config.get("probe"))
    atomic_write_json(out / f"{name}.json", {
        "mode": "frozen probe" if probe else "fine-tuned",
        "protocol": protocol(config, probe),
        "scale": "0-100",
        "split": "dev (GLUE test labels are hidden; test predictions go to submissions/)",
        "average": "unweighted mean of per-task scores over the tasks evaluated; a task's score "
                   "is the mean of its metrics; MNLI m/mm form one task; AX is not included",
        "std": "sample standard deviation over seeds (ddof=1)",
        "tasks": tasks,
        "systems": summary,
        "zero_shot_stsb_spearman": zero_shot,
        "train_rows": rows or {},
        "caps": {"max_train_samples": config.get("max_train_samples"),
                 "teacher_max_train_samples": config.get("teacher_max_train_samples")},
        "speed_sentences_per_s": speeds or {},
        "config": config,
    })
    table = markdown(summary, tasks, zero_shot, seeds, config.get("teacher_seeds"), config, rows,
                     speeds)
    atomic_write_bytes(out / f"{name}.md", table.encode())


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


def run_record_path(out: Path, system_slug: str, task: str, seed: int) -> Path:
    """Where one finished run's record goes (what ``glue-eval --resume`` keeps)."""
    return out / "records" / system_slug / task / f"seed{seed}.json"


def run_partial_path(out: Path, system_slug: str, task: str, seed: int) -> Path:
    """Where an unfinished run keeps its finished grid points (``finetune.GridCheckpoint``)."""
    return out / "partial" / system_slug / task / f"seed{seed}"


def restart_log(path: Path, kept: list) -> None:
    """A run's epoch log as it starts: the records of the grid points it kept from before a stop
    (``kept``: GridPoints), none of the point that was cut short."""
    if not kept:
        path.unlink(missing_ok=True)
        return
    rates = {(point.lr, point.encoder_lr) for point in kept}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    kept_lines = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # the torn last line of a killed run
            continue
        if (record.get("lr"), record.get("encoder_lr")) in rates:
            kept_lines.append(json.dumps(record) + "\n")
    atomic_write_bytes(path, "".join(kept_lines).encode())


def append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
