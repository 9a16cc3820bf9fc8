"""Collect the task-distillation study (benchmarks/kd_study.sh) into benchmarks/results/kd/.

Reads RUN/glue/<TASK>/<ROW>/results.json (one system per directory, as kd_study.sh writes them),
RUN/kd-cache/*/logits.json (the shared teacher-logit entries) and RUN/stage_seconds.tsv; writes
summary.json, kd.md (the rows, the augment-N study, the cache entries, every target met or missed)
and keeps the small raw files (results.json, results.md, runs.jsonl) beside them.

    python benchmarks/kd_summary.py --run RUN [--out benchmarks/results/kd]
        [--student PATTERN]   # the plain student row, a glue-eval output with {task} in it
        [--logs LOG ...]      # glue-eval's printed output: each logit entry computed and read
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

from glue_rows import TASKS, average, glue_rows, glue_table  # noqa: E402
from stage_times import STAGES_FILE, stage_seconds  # noqa: E402

from cache_tools.logit_cache import MANIFEST  # noqa: E402


def teacher_rows(run: Path) -> tuple[dict, dict, dict]:
    """The teacher row: {TASK: score}, the rows it trained on, and each task's full training set."""
    score, trained, full = {}, {}, {}
    for task in TASKS:
        path = run / "glue" / task / "teacher" / "results.json"
        if not path.is_file():
            continue
        results = json.loads(path.read_text())
        cell = results["systems"]["teacher"]["tasks"][task]
        score[task] = cell["score"]["mean"]
        trained[task] = cell["train_rows"]
        full[task] = results["train_rows"][task]["available"]
    return score, trained, full


def augmented(run: Path, prefix: str) -> list[int]:
    """The transfer-set sizes N run under RUN/glue/*/<prefix>N."""
    found = {int(m.group(1)) for d in run.glob(f"glue/*/{prefix}*")
             if (m := re.fullmatch(re.escape(prefix) + r"(\d+)", d.name))}
    return sorted(found)


def cache_entries(run: Path) -> list[dict]:
    """One line per kd-cache entry: its task, teacher, transfer set and rows."""
    entries = []
    for manifest in sorted((run / "kd-cache").glob(f"*/{MANIFEST}")):
        meta = json.loads(manifest.read_text())
        entries.append({"entry": manifest.parent.name, "task": meta["task"], "rows": meta["rows"],
                        "originals": meta["originals"], "transfer": meta.get("transfer"),
                        "teacher": meta.get("teacher")})
    return entries


def logit_events(logs: list[Path]) -> dict[str, dict[str, int]]:
    """Entry -> how often glue-eval computed its logits and how often it read them from the cache,
    from the lines it prints ("TASK: teacher logits cached in DIR" / "... from the cache DIR")."""
    events: dict[str, dict[str, int]] = {}
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if m := re.search(r"teacher logits (cached in|from the cache) (\S+)", line):
                counts = events.setdefault(Path(m.group(2)).name, {"computed": 0, "read": 0})
                counts["computed" if m.group(1) == "cached in" else "read"] += 1
    return events


def kd_runs(run: Path) -> dict[str, int]:
    """How many fine-tuning runs of +kd systems each task has finished, every rate of a seed's grid
    counted (all of them read the kd cache)."""
    counts: dict[str, int] = {}
    for path in run.glob("glue/*/*/results.json"):
        labels = json.loads(path.read_text())["systems"]
        if not any(label.endswith("+kd") or label.split(":")[0] == "kd" for label in labels):
            continue
        task, runs = path.parent.parent.name, path.parent / "runs.jsonl"
        lines = runs.read_text().splitlines() if runs.is_file() else []
        records = [json.loads(line) for line in lines if line]
        counts[task] = counts.get(task, 0) + sum(len(r.get("lr_grid") or [r]) for r in records)
    return counts


def targets(summary: dict) -> list[str]:
    """Every target of the issue, with its number, met, missed or not yet measurable."""
    teacher, lines = summary["teacher"], []
    teacher_avg = sum(teacher.values()) / len(TASKS) if len(teacher) == len(TASKS) else None
    trained, available = summary["teacher_train_rows"], summary["full_train_rows"]
    full = len(teacher) == len(TASKS) and all(trained[t] == available[t] for t in teacher)
    counts = ", ".join(f"{t} {trained[t]:,} of {available[t]:,}" for t in teacher)
    lines.append(f"- The teacher trains on every row: {'met' if full else 'open'} ({counts}).")
    for name in [k for k in summary if k.startswith("student+kd")]:
        kd_name = name.replace("student+kd", "kd")
        cells, plain, kd = summary[name], summary["student"], summary.get(kd_name, {})
        mean = average(cells)
        if mean is not None and teacher_avg is not None:
            ratio = mean / teacher_avg
            lines.append(f"- {name} >= 95 % of the teacher's average: {'met' if ratio >= 0.95 else 'missed'} "
                         f"({mean:.1f} / {teacher_avg:.1f} = {100 * ratio:.1f} %).")
        else:
            lines.append(f"- {name} >= 95 % of the teacher's average: not yet (tasks missing).")
        for task in TASKS:
            if task not in cells:
                continue
            above = [f"student {plain[task][0]:.1f}" if task in plain else "student –",
                     f"{kd_name} {kd[task][0]:.1f}" if task in kd else f"{kd_name} –"]
            if task in plain and task in kd:
                verdict = "met" if cells[task][0] > max(plain[task][0], kd[task][0]) else "missed"
            else:  # a row to compare with is not run yet
                verdict = "open"
            lines.append(f"- {name} above student and {kd_name} on {task}: {verdict} "
                         f"({cells[task][0]:.1f} vs {', '.join(above)}).")
        if "SST-2" in cells and "SST-2" in teacher:
            gap = teacher["SST-2"] - cells["SST-2"][0]
            lines.append(f"- {name} within 2.5 of the teacher on SST-2: {'met' if gap <= 2.5 else 'missed'} "
                         f"({cells['SST-2'][0]:.1f} vs {teacher['SST-2']:.1f}, gap {gap:.1f}).")
    for name, cells in summary.get("augment_study", {}).items():  # student+kd at one rate
        if "SST-2" in cells and "SST-2" in teacher and name != "N 0":
            gap = teacher["SST-2"] - cells["SST-2"][0]
            lines.append(f"- student+kd with the transfer set ({name}, the augment study's one rate) "
                         f"within 2.5 of the teacher on SST-2: {'met' if gap <= 2.5 else 'missed'} "
                         f"({cells['SST-2'][0]:.1f} vs {teacher['SST-2']:.1f}, gap {gap:.1f}).")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kd")
    parser.add_argument("--student", default=None,
                        help="the plain student row: a glue-eval output with {task} in it "
                             "[default: RUN/glue/{task}/student]")
    parser.add_argument("--logs", type=Path, nargs="*", default=[],
                        help="glue-eval's printed output (lane logs): how often each kd-cache entry "
                             "was computed and read")
    args = parser.parse_args()
    glue = f"{args.run}/glue/{{task}}"
    teacher, trained, full = teacher_rows(args.run)
    specs = [f"student={args.student or glue + '/student'}",
             f"student+kd={glue}/student-kd", f"kd={glue}/kd"]
    for n in sorted(set(augmented(args.run, "student-kd-aug")) | set(augmented(args.run, "kd-aug"))):
        specs += [f"student+kd-aug{n}={glue}/student-kd-aug{n}", f"kd-aug{n}={glue}/kd-aug{n}"]
    rows = glue_rows(specs)
    study = glue_rows([f"N {n}={glue}/augment-{n}" for n in augmented(args.run, "augment-")])
    summary = {"teacher": teacher, "teacher_train_rows": trained, "full_train_rows": full,
               **{row: rows.get(row, {}) for row in ("student", "student+kd", "kd")},
               **{row: cells for row, cells in rows.items() if "-aug" in row},
               "augment_study": study, "kd_cache": cache_entries(args.run),
               "kd_runs": kd_runs(args.run), "logit_events": logit_events(args.logs),
               "stage_seconds": stage_seconds(args.run)}
    lines = ["Fine-tuned (GLUE dev, x100, mean ± std over 3 seeds; the teacher: one seed):", "",
             *glue_table({"teacher": {t: [s, 0.0] for t, s in teacher.items()}, **rows}), "",
             "The augment-N study (student+kd, 3 seeds at one rate; 3 epochs at N=0, one pass "
             "over the transfer set at N > 0):",
             "", *glue_table(study), "", "Targets:", "", *targets(summary), "",
             "Teacher logits (one cache entry per teacher, task and transfer set):", ""]
    lines += [f"- {e['entry']}: {e['rows']:,} rows ({e['originals']:,} training rows), "
              f"transfer {json.dumps(e['transfer'])}" for e in summary["kd_cache"]]
    lines += [f"- {task}: {n} +kd fine-tuning runs read them"
              for task, n in sorted(summary["kd_runs"].items())]
    lines += [f"- {entry}: computed {n['computed']} time(s), read from the cache {n['read']} time(s) "
              "by other glue-eval processes" for entry, n in sorted(summary["logit_events"].items())]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "kd.md").write_text("\n".join(lines) + "\n")
    for path in args.run.glob("glue/*/*/results.json"):
        target = args.out / "glue" / path.parent.parent.name / path.parent.name
        target.mkdir(parents=True, exist_ok=True)
        for name in ("results.json", "results.md", "runs.jsonl"):
            if (path.parent / name).is_file():
                shutil.copy(path.parent / name, target / name)
    for name in (STAGES_FILE, "commits.txt"):
        if (args.run / name).is_file():
            shutil.copy(args.run / name, args.out / name)
    print((args.out / "kd.md").read_text())


if __name__ == "__main__":
    main()
