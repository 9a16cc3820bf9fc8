"""Collect one `benchmarks/reproduce.sh` run into committed results: tables, plots and raw files.

Reads RUN/glue/<TASK>/<system>/ (one glue-eval per task and system; RUN/glue/<TASK>/ in the first
edition), RUN/probe/<TASK>/, RUN/students/<variant>/ and RUN/ablation/<name>/, RUN/speed.txt and
RUN/stage_seconds.tsv; writes into OUT, with RUN and the repository written as RUN/ and ./:

- glue/results.json, glue/results.md: all tasks in one table (mean ± std over seeds), built from
  the runs.jsonl files with glue-eval's own summary code; glue/<TASK>/... the raw files;
- probe.md, probe/<TASK>/probe.json: every system's frozen-probe score per task;
- glue_bars.png: the GLUE table as a bar chart with the seeds' spread;
- sra_curves.png: training loss and held-out cosine of each student variant;
- ablation.md, ablation-probe/<TASK>/probe.json: each lever's agreement with the teacher at the
  same step budget, held out and out of domain, and its frozen probes;
- majority.md: the score of always predicting the training set's majority class, per task (from
  --glue-dir), the floor under every table;
- systems.md, quality_speed.png: each system's size (parameters, of which frozen; MB on disk) and
  speed (the probe run's side-by-side measure) beside its fine-tuned and probe averages;
- targets.md: issue 15's targets, each met or missed with its numbers;
- speed.txt, stage_seconds.tsv, commits.txt (the code each part ran), students/<variant>/
  (metrics.jsonl, training_summary.json).

With --update FILE.md, every block of FILE.md between `<!-- collected:NAME -->` and
`<!-- /collected:NAME -->` is replaced by the collected table of that name (targets, glue, probe,
majority, systems, ablation, stages), so the figures in benchmarks/RESULTS.md are the files', not
copies typed by hand.

    python benchmarks/collect_results.py --run runs/reproduce --out benchmarks/results \
        [--glue-dir ../shared/data/glue] [--update benchmarks/RESULTS.md]
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
from student.directory import CONFIG_NAME, SUMMARY_NAME, WEIGHTS_NAME  # noqa: E402

TASK_ORDER = ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI")
SINGLE_SENTENCE = ("CoLA", "SST-2")  # where reproduce.sh also scores the student variants


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
    order = [t for t in TASK_ORDER if t in tasks]
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


def read_probes(root: Path, run: Path, out: Path,
                label=short_label) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Every ROOT/<TASK>/probe.json (one --probe glue-eval per task) as label(system) -> task ->
    score, with the tasks in GLUE order; each file is kept in OUT/<ROOT's name>/<TASK>/ with
    relative paths."""
    table: dict[str, dict[str, float]] = {}
    tasks = []
    for path in sorted(root.glob("*/probe.json")):
        data = json.loads(path.read_text())
        for system, result in data["systems"].items():
            for task, cell in result["tasks"].items():
                table.setdefault(label(system), {})[task] = cell["score"]["mean"]
                tasks += [task] if task not in tasks else []
        raw = out / root.name / path.parent.name
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "probe.json").write_text(json.dumps(relative(data, run), indent=2) + "\n")
    return table, [t for t in TASK_ORDER if t in tasks]


def collect_probes(run: Path, out: Path) -> tuple[dict[str, dict[str, float]], list[str]]:
    """RUN/probe/<TASK>/probe.json as one table, probe.md: every system's frozen-probe score per
    task and the average over them. Returns the table (system -> task -> score) and the tasks."""
    table, order = read_probes(run / "probe", run, out)
    if not table:
        return {}, []
    lines = ["| system | " + " | ".join(order) + " | average |", "|---" * (len(order) + 2) + "|"]
    for system in sorted(table, key=system_order):
        cells = [table[system].get(task) for task in order]
        mean = average(table[system], order)
        lines.append(f"| {system} | " + " | ".join("–" if c is None else f"{c:.1f}" for c in cells)
                     + f" | {'–' if mean is None else f'{mean:.1f}'} |")
    (out / "probe.md").write_text("\n".join(lines) + "\n")
    return table, order


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


def ablation_table(run: Path, out: Path) -> str:
    """Each lever's agreement with the teacher at the same step budget (held out and out of
    domain) beside its frozen probes (RUN/ablation-probe/<TASK>/, when they ran)."""
    probes, tasks = read_probes(run / "ablation-probe", run, out,
                                label=lambda system: Path(system.partition(":")[2]).name)
    lines = ["| variant | held-out cosine | held-out Spearman | OOD cosine | OOD Spearman | "
             + "".join(f"{t} | " for t in tasks) + ("probe average |" if tasks else ""),
             "|---" * (5 + len(tasks) + bool(tasks)) + "|"]
    paths = sorted((run / "ablation").glob("*/training_summary.json"),
                   key=lambda p: (p.parent.name != "default", p.parent.name))
    for path in paths:
        final, name = json.loads(path.read_text())["final"], path.parent.name
        cells = [final.get(key) for key in ("val_cosine", "val_spearman", "ood_cosine", "ood_spearman")]
        row = [name, *("–" if c is None else f"{c:.3f}" for c in cells)]
        row += [f"{probes[name][t]:.1f}" if t in probes.get(name, {}) else "–" for t in tasks]
        if tasks:
            mean = average(probes.get(name, {}), tasks)
            row.append("–" if mean is None else f"{mean:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# -- the floor, size and speed, the targets ------------------------------------------------------
def majority_scores(glue_dir: Path, tasks: list[str]) -> dict[str, float]:
    """Each task's score for always predicting the training set's majority class (tasks whose
    files are absent are left out)."""
    from data.glue import load_task, missing_files, task_by_name
    from evaluation.metrics import majority_score

    scores = {}
    for name in tasks:
        if missing_files(glue_dir, task_by_name(name)):
            continue
        data = load_task(name, glue_dir)
        scores[name] = majority_score(data.task, data.train.labels,
                                      {suffix: split.labels for suffix, split in data.dev.items()})
    return scores


def base_system(label: str) -> str:
    """The system whose encoder a row uses: +kd changes the training, not the model, and the kd
    row is a scratch BiLSTM."""
    label = label.removesuffix("+kd")
    return "scratch" if label == "kd" else label


def model_files(run: Path) -> dict[str, Path]:
    """Each encoder's weights file: the bundled teacher, the run's model2vec and students. The
    scratch and embeddings rows have the default student's architecture, so its size."""
    from core.teacher import default_teacher

    files = {"teacher": Path(default_teacher()) / "model.safetensors"}
    static = sorted(run.glob("probe/*/model2vec/*/model.safetensors"))
    static += sorted(run.glob("glue/*/model2vec/model2vec/*/model.safetensors"))
    if static:
        files["model2vec"] = static[0]
    for path in sorted(run.glob(f"students/*/{WEIGHTS_NAME}")):
        files[f"student:{path.parent.name}"] = path
    if "student:default" in files:
        files["scratch"] = files["embeddings"] = files["student:default"]
    return files


def parameter_counts(path: Path) -> tuple[int, int]:
    """(all parameters, of which the token table) from a safetensors header; the token table is
    a lookup that costs no compute per token."""
    import math

    from safetensors import safe_open

    with safe_open(str(path), framework="np") as weights:
        shapes = {key: weights.get_slice(key).get_shape() for key in weights.keys()}
    total = sum(math.prod(shape) for shape in shapes.values())
    table = max((math.prod(shape) for key, shape in shapes.items()
                 if "embed" in key and "position" not in key and len(shape) == 2), default=0)
    return total, table


def probe_speeds(run: Path) -> dict[str, float]:
    """Sentences/s of every system, measured side by side by the probe run that measured most of
    them (CoLA first: short single sentences)."""
    best: dict[str, float] = {}
    for path in sorted((run / "probe").glob("*/probe.json"), key=lambda p: p.parent.name != "CoLA"):
        speeds = json.loads(path.read_text()).get("speed_sentences_per_s", {})
        if len(speeds) > len(best):
            best = {short_label(system): value for system, value in speeds.items()}
    return best


def average(scores: dict[str, float], tasks: list[str]) -> float | None:
    """The mean over ``tasks``, or None when a task is missing (an average over fewer tasks is not
    comparable)."""
    if not tasks or any(task not in scores for task in tasks):
        return None
    return sum(scores[task] for task in tasks) / len(tasks)


def above_floor_tasks(scores: dict[str, dict[str, float]], tasks: list[str],
                      majority: dict[str, float]) -> list[str]:
    """The tasks where some system beats the majority class; on the others (WNLI's adversarial dev
    set) no score says anything about the systems."""
    return [task for task in tasks if task not in majority
            or any(row.get(task, float("-inf")) > majority[task] + 1e-9 for row in scores.values())]


def fine_tuned_means(summary: dict) -> dict[str, dict[str, float]]:
    return {system: {task: cell["score"]["mean"] for task, cell in result["tasks"].items()}
            for system, result in summary.items()}


def systems_table(run: Path, fine_tuned: dict[str, dict[str, float]], fine_tasks: list[str],
                  probes: dict[str, dict[str, float]], probe_tasks: list[str],
                  speeds: dict[str, float]) -> tuple[str, list[dict]]:
    """Size and speed of every system beside its averages: systems.md's table and its rows."""
    files = model_files(run)
    single = list(SINGLE_SENTENCE)
    labels = sorted(set(fine_tuned) | set(probes), key=system_order)
    rows = []
    for label in labels:
        path, speed = files.get(base_system(label)), speeds.get(base_system(label))
        total, table = parameter_counts(path) if path else (None, None)
        rows.append({
            "system": label, "parameters": total, "token_table": table,
            "megabytes": path.stat().st_size / 1e6 if path else None,
            "sentences_per_s": speed,
            "x_teacher": speed / speeds["teacher"] if speed and speeds.get("teacher") else None,
            "fine_tuned": average(fine_tuned.get(label, {}), fine_tasks),
            "fine_tuned_single": average(fine_tuned.get(label, {}), single),
            "probe": average(probes.get(label, {}), probe_tasks),
        })

    def cell(value, form):
        return "–" if value is None else format(value, form)

    def names(tasks: list[str]) -> str:
        return ", ".join(tasks) or "no task above the majority class"

    lines = [f"| system | parameters | of which the token table | MB on disk | sentences/s | × teacher "
             f"| fine-tuned ({names(fine_tasks)}) | fine-tuned ({names(single)}) "
             f"| probe ({names(probe_tasks)}) |", "|---" * 9 + "|"]
    for row in rows:
        lines.append(
            f"| {row['system']} | {cell(row['parameters'] and row['parameters'] / 1e6, '.1f')}M "
            f"| {cell(row['token_table'] and row['token_table'] / 1e6, '.1f')}M "
            f"| {cell(row['megabytes'], '.0f')} | {cell(row['sentences_per_s'], ',.0f')} "
            f"| {cell(row['x_teacher'], '.1f')} | {cell(row['fine_tuned'], '.1f')} "
            f"| {cell(row['fine_tuned_single'], '.1f')} | {cell(row['probe'], '.1f')} |")
    return "\n".join(lines) + "\n", rows


def plot_quality_speed(rows: list[dict], fine_tasks: list[str], probe_tasks: list[str],
                       majority: dict[str, float], path: Path) -> dict[str, list[str]]:
    """quality_speed.png: each system's averages against its speed, one panel per average.
    Returns the systems drawn in each panel (by title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the middle panel: the single-sentence tasks, where the student sizes were fine-tuned too
    panels = (("fine_tuned", fine_tasks, "fine-tuned"),
              ("fine_tuned_single", list(SINGLE_SENTENCE), "fine-tuned, every student size"),
              ("probe", probe_tasks, "frozen probe"))
    fig, axes = plt.subplots(1, len(panels), figsize=(18, 4.5), sharex=True)
    drawn = {}
    for axis, (key, tasks, title) in zip(axes, panels, strict=True):
        points = [r for r in rows if r[key] is not None and r["sentences_per_s"]]
        drawn[title] = [row["system"] for row in points]
        for row in points:
            kd = row["system"].endswith("+kd") or row["system"] == "kd"
            axis.scatter(row["sentences_per_s"], row[key], marker="^" if kd else "o")
            axis.annotate(row["system"], (row["sentences_per_s"], row[key]), fontsize=7,
                          xytext=(4, 2), textcoords="offset points")
        floor = average(majority, tasks)
        if floor is not None:
            axis.axhline(floor, color="grey", lw=0.8, ls=":", label="majority class")
            axis.legend(fontsize=8)
        axis.set(xscale="log", xlabel="sentences/s on 2 CPU cores (log)",
                 ylabel=f"dev average × 100 ({', '.join(tasks)})", title=title)
        axis.grid(alpha=0.3)
    fig.suptitle("Quality against speed: teacher, model2vec and BiLSTMs (CPU, batch 64)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def teacher_caps(run: Path) -> dict[str, tuple[int, int]]:
    """Task -> (the teacher's training rows, the other systems') where the teacher row trained on
    fewer rows than the systems it is compared with (glue-eval's --teacher-max-train-samples)."""
    caps = {}
    for directory in glue_dirs(run):
        data = json.loads((directory / "results.json").read_text())
        if "teacher" not in data["systems"]:
            continue
        for task, rows in data.get("train_rows", {}).items():
            if rows.get("teacher", rows["systems"]) < rows["systems"]:
                caps[task] = (rows["teacher"], rows["systems"])
    return caps


def targets_table(fine_tuned: dict[str, dict[str, float]], tasks: list[str],
                  probes: dict[str, dict[str, float]], probe_tasks: list[str],
                  majority: dict[str, float], speeds: dict[str, float],
                  held_out_cosine: float | None,
                  capped: dict[str, tuple[int, int]] | None = None) -> str:
    """Issue 15's targets, each met or missed with the numbers that decide it. While tasks that were
    probed have not been fine-tuned yet, a fine-tuned verdict they could still change says so far.
    ``capped`` (:func:`teacher_caps`) names the tasks where the teacher row saw fewer training
    rows than the students: a verdict against it says so."""
    rows = []
    pending = [t for t in probe_tasks if t not in tasks]

    def judge(target: str, numbers: str, met: bool | None, final: bool = True,
              caveat: str = "") -> None:
        verdict = "–" if met is None else "met" if met else "**missed**"
        if met is not None and not final and pending:
            verdict += " so far"
        if met is not None and caveat:
            verdict += f", {caveat}"
        rows.append(f"| {target} | {numbers} | {verdict} |")

    student = fine_tuned.get("student:default", {})
    scored = above_floor_tasks(fine_tuned, tasks, majority)
    aside = [t for t in tasks if t not in scored]
    for rival in ("scratch", "embeddings"):
        other = fine_tuned.get(rival, {})
        both = [t for t in scored if t in student and t in other]
        numbers = ", ".join(f"{t} {student[t]:.1f} vs {other[t]:.1f}" for t in both)
        # one loss decides; without one, every scored task must be there to call it met
        lost = any(student[t] <= other[t] for t in both)
        judge(f"student > {rival} on every task" + (f" ({', '.join(aside)} aside: no system above "
                                                     "the majority class)" if aside else ""),
              numbers or "–", False if lost else True if both and len(both) == len(scored) else None,
              final=lost)
    bilstm = {s: average(v, scored) for s, v in fine_tuned.items()
              if s not in ("teacher", "model2vec") and average(v, scored) is not None}
    complete = all(row in bilstm for row in ("scratch", "embeddings", "kd", "student:default",
                                             "student:default+kd"))
    judge(f"student+kd best of the BiLSTM rows on average ({', '.join(scored)})",
          ", ".join(f"{s} {v:.1f}" for s, v in sorted(bilstm.items(), key=lambda x: -x[1])) or "–",
          max(bilstm, key=bilstm.get) == "student:default+kd" if complete else None, final=False)
    mine, static = average(student, scored), average(fine_tuned.get("model2vec", {}), scored)
    judge("student > model2vec, fine-tuned average",
          f"{mine:.1f} vs {static:.1f}" if None not in (mine, static) else "–",
          mine > static if None not in (mine, static) else None, final=False)
    probe_scored = above_floor_tasks(probes, probe_tasks, majority)
    mine = average(probes.get("student:default", {}), probe_scored)
    static = average(probes.get("model2vec", {}), probe_scored)
    judge(f"student > model2vec, probe average ({', '.join(probe_scored)})",
          f"{mine:.1f} vs {static:.1f}" if None not in (mine, static) else "–",
          mine > static if None not in (mine, static) else None)
    teacher = fine_tuned.get("teacher", {})
    above = [t for t in tasks if t in teacher and teacher[t] > majority.get(t, float("-inf"))]
    below = [t for t in tasks if t in teacher and t not in above]
    mine, theirs = average(student, above), average(teacher, above)
    short = {t: rows for t, rows in (capped or {}).items() if t in above}
    judge("student >= 90% of the teacher, fine-tuned average"
          + (f" ({', '.join(below)} excluded: the teacher is below the majority class)" if below else ""),
          (f"{mine:.1f} / {theirs:.1f} = {100 * mine / theirs:.1f}%" if None not in (mine, theirs) else "–")
          + ("; the teacher trained on " + ", ".join(f"{n:,} of {t}'s {m:,} rows"
                                                     for t, (n, m) in short.items()) if short else ""),
          mine >= 0.9 * theirs if None not in (mine, theirs) else None, final=False,
          caveat="against a capped teacher" if short else "")
    judge("held-out cosine >= 0.90",
          "–" if held_out_cosine is None else f"{held_out_cosine:.3f}",
          None if held_out_cosine is None else held_out_cosine >= 0.90)
    ratio = (speeds["student:default"] / speeds["teacher"]
             if speeds.get("student:default") and speeds.get("teacher") else None)
    judge("default student >= 5x the teacher's CPU throughput",
          "–" if ratio is None else f"{speeds['student:default']:,.0f} / {speeds['teacher']:,.0f} "
          f"sentences/s = {ratio:.1f}x", None if ratio is None else ratio >= 5)
    note = [f"\nStill to be fine-tuned: {', '.join(pending)}; a verdict marked so far may change."]
    note = note if pending else []
    return "\n".join(["| target | numbers | |", "|---|---|---|", *rows, *note]) + "\n"


def stages_table(path: Path) -> str:
    """RUN/stage_seconds.tsv as a table (a stage killed before it finished has no line)."""
    lines = ["| stage | seconds |", "|---|---|"]
    for line in path.read_text().splitlines():
        name, _, seconds = line.partition("\t")
        lines.append(f"| {name} | {int(seconds):,} |")
    return "\n".join(lines) + "\n"


def update_blocks(markdown: Path, blocks: dict[str, str]) -> list[str]:
    """Replace each `<!-- collected:NAME -->` ... `<!-- /collected:NAME -->` block of ``markdown``
    with ``blocks[NAME]``; returns the names replaced."""
    from core.io import atomic_write_bytes

    text, done = markdown.read_text(encoding="utf-8"), []
    for name, body in blocks.items():
        tag = re.escape(name)
        pattern = re.compile(rf"(<!-- collected:{tag} -->\n).*?(<!-- /collected:{tag} -->)", re.S)
        text, count = pattern.subn(lambda m: m.group(1) + body.strip("\n") + "\n" + m.group(2), text)
        done += [name] if count else []
    atomic_write_bytes(markdown, text.encode("utf-8"))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--glue-dir", type=Path, default=ROOT.parent / "shared" / "data" / "glue",
                        help="GLUE data, for the majority-class floor (skipped when absent)")
    parser.add_argument("--update", type=Path, metavar="FILE.md",
                        help="replace the <!-- collected:NAME --> blocks of this markdown file")
    args = parser.parse_args()
    if args.update and not args.update.is_file():
        parser.error(f"--update: {args.update} is not a file")  # one line, exit 2
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
        for file in (SUMMARY_NAME, CONFIG_NAME):
            if (directory.parent / file).is_file():
                raw = json.loads((directory.parent / file).read_text())
                (keep / file).write_text(json.dumps(relative(raw, args.run), indent=2) + "\n")
    if students:
        plot_sra_curves(students, args.out / "sra_curves.png")
    probes, probe_tasks = collect_probes(args.run, args.out)
    if probes:
        print((args.out / "probe.md").read_text())
    all_tasks = [t for t in TASK_ORDER if t in tasks or t in probe_tasks]
    majority = majority_scores(args.glue_dir, all_tasks) if args.glue_dir.is_dir() else {}
    if majority:
        text = ("| | " + " | ".join(majority) + " |\n" + "|---" * (len(majority) + 1) + "|\n"
                + "| majority class | " + " | ".join(f"{v:.1f}" for v in majority.values()) + " |\n")
        (args.out / "majority.md").write_text(text)
        print(text)
    fine_tuned = fine_tuned_means(summary)
    if fine_tuned or probes:
        speeds = probe_speeds(args.run)
        fine_tasks = above_floor_tasks(fine_tuned, tasks, majority)
        probe_scored = above_floor_tasks(probes, probe_tasks, majority)
        table, rows = systems_table(args.run, fine_tuned, fine_tasks, probes, probe_scored, speeds)
        (args.out / "systems.md").write_text(table)
        plot_quality_speed(rows, fine_tasks, probe_scored, majority, args.out / "quality_speed.png")
        summary_file = args.run / "students" / "default" / SUMMARY_NAME
        cosine = (json.loads(summary_file.read_text())["final"]["val_cosine"]
                  if summary_file.is_file() else None)
        targets = targets_table(fine_tuned, tasks, probes, probe_tasks, majority, speeds, cosine,
                                teacher_caps(args.run))
        (args.out / "targets.md").write_text(targets)
        print(table, targets, sep="\n")
    if (args.run / "ablation").is_dir():
        table = ablation_table(args.run, args.out)
        (args.out / "ablation.md").write_text(table)
        print(table)
    for name in ("speed.txt", "stage_seconds.tsv", "commits.txt"):
        if (args.run / name).is_file():
            shutil.copy(args.run / name, args.out / name)
    print(f"written to {args.out}")
    if args.update:
        blocks = {name: (args.out / file).read_text() for name, file in (
            ("targets", "targets.md"), ("glue", "glue/results.md"), ("probe", "probe.md"),
            ("majority", "majority.md"), ("systems", "systems.md"), ("ablation", "ablation.md"))
            if (args.out / file).is_file()}
        if (args.run / "stage_seconds.tsv").is_file():
            blocks["stages"] = stages_table(args.run / "stage_seconds.tsv")
        print(f"{args.update}: replaced {', '.join(update_blocks(args.update, blocks)) or 'no block'}")


if __name__ == "__main__":
    main()
