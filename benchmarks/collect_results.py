"""Collect one `benchmarks/reproduce.sh` run into committed results: tables, plots and raw files.

Reads RUN/glue/<TASK>/<system>/ (one glue-eval per task and system; RUN/glue/<TASK>/ in the first
edition), RUN/probe/<TASK>/, RUN/students/<variant>/ and RUN/ablation/<name>/, RUN/speed.txt and
RUN/stage_seconds.tsv; writes into OUT, with RUN and the repository written as RUN/ and ./:

- glue/results.json, glue/results.md: all tasks in one table (mean ± std over seeds), built from
  the runs.jsonl files with glue-eval's own summary code; glue/<TASK>/... the raw files;
- probe.md, probe/<TASK>/probe.json: every system's frozen-probe score per task;
- glue_bars.png: the GLUE table as a bar chart with the seeds' spread;
- sra_curves.png: training loss and held-out cosine of each student variant;
- ablation.md: each lever's held-out agreement with the teacher at the same step budget;
- speed.txt, stage_seconds.tsv, commits.txt (the code each part ran), students/<variant>/
  (metrics.jsonl, training_summary.json).

    python benchmarks/collect_results.py --run runs/reproduce --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.report import mean_std_cell, summarize, write_results  # noqa: E402


def short_label(system: str) -> str:
    """``student:/abs/students/default+kd`` -> ``student:default+kd``; ``kd:/abs/default`` -> ``kd``;
    ``embeddings:/abs/default`` -> ``embeddings``."""
    kind, _, rest = system.partition(":")
    if not rest:
        return system
    kd = rest.endswith("+kd")
    name = Path(rest.removesuffix("+kd")).name
    if kind in ("scratch", "kd", "embeddings"):
        return kind
    return f"{kind}:{name}{'+kd' if kd else ''}"


def relative(value, run: Path):
    """A config value with the run directory and the repository written relatively (the raw files
    are committed; absolute paths of the machine that ran them say nothing elsewhere)."""
    if isinstance(value, dict):  # keys too: results are keyed by system labels with paths
        return {relative(key, run): relative(item, run) for key, item in value.items()}
    if isinstance(value, list):
        return [relative(item, run) for item in value]
    if isinstance(value, str):
        return relative_text(value, run)
    return value


def relative_text(text: str, run: Path) -> str:
    """RUN for the run directory (and where its links point), . for the repository, ../ for what
    lies beside it (../shared/data, another run)."""
    for path, name in ((run.resolve(), "RUN"), (run, "RUN"),
                       *((link.resolve(), f"RUN/{link.name}") for link in run.iterdir() if link.is_symlink()),
                       (ROOT, "."), (ROOT.parent, "..")):
        # whole path components only: /x/all must not turn /x/all-default into RUN/shards-default
        text = re.sub(re.escape(str(path)) + r"(?![\w.-])", name, text)
    return text


def glue_dirs(run: Path) -> list[Path]:
    """Every finished glue-eval output under RUN/glue: one per task (first edition) or one per
    task and system (RUN/glue/<TASK>/<system>/, second edition)."""
    found = []
    for task_dir in sorted((run / "glue").glob("*/")):
        if (task_dir / "results.json").is_file():
            found.append(task_dir)
        found += sorted(d for d in task_dir.glob("*/") if (d / "results.json").is_file())
    return found


def collect_glue(run: Path, out: Path) -> tuple[dict, list[str]]:
    runs, systems, tasks, configs = [], [], [], {}
    for directory in glue_dirs(run):
        data = json.loads((directory / "results.json").read_text())
        name = directory.relative_to(run / "glue").as_posix()
        configs[name] = relative(data["config"], run)
        tasks += [t for t in data["tasks"] if t not in tasks]
        for system in data["systems"]:
            if short_label(system) not in systems:
                systems.append(short_label(system))
        for line in (directory / "runs.jsonl").read_text().splitlines():
            record = json.loads(line)
            runs.append({**record, "system": short_label(record["system"])})
        raw = out / "glue" / name
        raw.mkdir(parents=True, exist_ok=True)
        for file in ("results.md", "runs.jsonl"):
            text = (directory / file).read_text()
            (raw / file).write_text(relative_text(text, run))
        (raw / "results.json").write_text(json.dumps(relative(data, run), indent=2) + "\n")
    if not runs:
        return {}, []
    order = [t for t in ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI")
             if t in tasks]
    systems.sort(key=system_order)
    summary = summarize(runs, systems, order)
    for result in summary.values():
        if len(result["tasks"]) < len(order):  # an average over fewer tasks is not comparable
            result["average"] = None
    first = next(iter(configs.values()))
    # the grids (glue-eval since issue 12) as the runs used them, the teacher's from a run that
    # fine-tuned the teacher; absent in older runs
    teacher = next((c for c in configs.values() if "teacher" in c.get("systems", [])), first)
    grids = {k: first[k] for k in ("lr_grid", "grid_seeds") if k in first}
    grids |= {k: teacher[k] for k in ("teacher_lr_grid", "teacher_head_lr") if k in teacher}
    write_results(out / "glue", summary, order, {}, {
        "seeds": first["seeds"], "teacher_seeds": first.get("teacher_seeds"), **grids,
        "per_task_config": configs})
    if "WNLI" in order and len(order) > 1:
        append_average_without_wnli(out / "glue", runs, systems, [t for t in order if t != "WNLI"])
    return summary, order


ORDER = ("teacher", "model2vec", "scratch", "embeddings", "kd", "student:default",
         "student:default+kd", "student:small", "student:small+kd", "student:large", "student:large+kd")


def system_order(label: str) -> tuple[int, str]:
    return (ORDER.index(label) if label in ORDER else len(ORDER), label)


def collect_probes(run: Path, out: Path) -> str | None:
    """RUN/probe/<TASK>/probe.json (one --probe glue-eval per task) as one table: every system's
    frozen-probe score per task and the average over the tasks it has."""
    table: dict[str, dict[str, float]] = {}
    tasks = []
    for path in sorted((run / "probe").glob("*/probe.json")):
        data = json.loads(path.read_text())
        for system, result in data["systems"].items():
            for task, cell in result["tasks"].items():
                table.setdefault(short_label(system), {})[task] = cell["score"]["mean"]
                tasks += [task] if task not in tasks else []
        raw = out / "probe" / path.parent.name
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "probe.json").write_text(json.dumps(relative(data, run), indent=2) + "\n")
    if not table:
        return None
    order = [t for t in ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI")
             if t in tasks]
    lines = ["| system | " + " | ".join(order) + " | average |", "|---" * (len(order) + 2) + "|"]
    for system in sorted(table, key=system_order):
        cells = [table[system].get(task) for task in order]
        known = [c for c in cells if c is not None]
        average = f"{sum(known) / len(known):.1f}" if len(known) == len(order) else "–"
        lines.append(f"| {system} | " + " | ".join("–" if c is None else f"{c:.1f}" for c in cells)
                     + f" | {average} |")
    text = "\n".join(lines) + "\n"
    (out / "probe.md").write_text(text)
    return text


def append_average_without_wnli(directory: Path, runs: list[dict], systems: list[str],
                                tasks: list[str]) -> None:
    """WNLI's dev set punishes learning (the majority class scores 56.3; the BERT paper leaves it
    out), so the average is also given without it, in results.md and results.json."""
    summary = summarize([r for r in runs if r["task"] in tasks], systems, tasks)
    averages = {name: result["average"] for name, result in summary.items()
                if len(result["tasks"]) == len(tasks)}
    lines = ["", f"Average without WNLI ({', '.join(tasks)}):", "",
             "| system | average |", "|---|---|"]
    lines += [f"| {name} | {mean_std_cell(stats)} |" for name, stats in averages.items()]
    with open(directory / "results.md", "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    results = json.loads((directory / "results.json").read_text())
    results["average_without_wnli"] = {"tasks": tasks, "systems": averages}
    (directory / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def plot_glue(summary: dict, tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = [*tasks, "average"]
    systems = list(summary)
    width = 0.8 / len(systems)
    fig, axis = plt.subplots(figsize=(12, 4.5))
    for k, system in enumerate(systems):
        cells = [summary[system]["tasks"].get(t, {}).get("score") for t in tasks]
        cells.append(summary[system]["average"])
        means = [c["mean"] if c else np.nan for c in cells]
        stds = [c["std"] if c else 0.0 for c in cells]
        x = np.arange(len(columns)) + (k - (len(systems) - 1) / 2) * width
        axis.bar(x, means, width, yerr=stds, capsize=2, label=system)
    axis.set_xticks(np.arange(len(columns)), columns)
    axis.set(ylabel="dev score × 100 (mean ± std over seeds)",
             title="GLUE dev: teacher, baselines and SRA students")
    axis.legend(fontsize=8, ncols=2)
    axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_sra_curves(students: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, records in students.items():
        train = [r for r in records if r.get("kind") == "train"]
        evals = [r for r in records if r.get("kind") == "eval"]
        left.plot([r["step"] for r in train], [r["loss"] for r in train], label=name, lw=0.8)
        right.plot([r["step"] for r in evals], [r["val_cosine"] for r in evals], marker="o",
                   ms=3, label=f"{name}: cosine")
        right.plot([r["step"] for r in evals], [r["val_spearman"] for r in evals], ls="--",
                   label=f"{name}: Spearman")
    left.set(xlabel="step (64 sentences)", ylabel="training loss (MSE)", yscale="log")
    right.axhline(0.90, color="grey", lw=0.8, ls=":", label="cosine target 0.90")
    right.set(xlabel="step (64 sentences)", ylabel="held-out agreement with the teacher")
    for axis in (left, right):
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    fig.suptitle("SRA: student vs teacher (all-MiniLM-L6-v2) on 1,000 held-out sentences")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ablation_table(run: Path) -> str:
    lines = ["| variant | held-out cosine | held-out Spearman | MSE |", "|---|---|---|---|"]
    paths = sorted((run / "ablation").glob("*/training_summary.json"),
                   key=lambda p: (p.parent.name != "default", p.parent.name))
    for path in paths:
        final = json.loads(path.read_text())["final"]
        lines.append(f"| {path.parent.name} | {final['val_cosine']:.4f} | "
                     f"{final['val_spearman']:.4f} | {final['val_mse']:.6f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary, tasks = collect_glue(args.run, args.out)
    if summary:
        plot_glue(summary, tasks, args.out / "glue_bars.png")
        print((args.out / "glue" / "results.md").read_text())
    students = {}
    for directory in sorted((args.run / "students").glob("*/metrics.jsonl")):
        name = directory.parent.name
        students[name] = read_jsonl(directory)
        keep = args.out / "students" / name
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(directory, keep / directory.name)  # metrics.jsonl
        for file in ("training_summary.json", "config.json"):
            if (directory.parent / file).is_file():
                raw = json.loads((directory.parent / file).read_text())
                (keep / file).write_text(json.dumps(relative(raw, args.run), indent=2) + "\n")
    if students:
        plot_sra_curves(students, args.out / "sra_curves.png")
    probes = collect_probes(args.run, args.out)
    if probes:
        print(probes)
    if (args.run / "ablation").is_dir():
        table = ablation_table(args.run)
        (args.out / "ablation.md").write_text(table)
        print(table)
    for name in ("speed.txt", "stage_seconds.tsv", "commits.txt"):
        if (args.run / name).is_file():
            shutil.copy(args.run / name, args.out / name)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
