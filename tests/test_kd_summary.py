"""benchmarks/kd_summary.py: the summary.json layout of the task-distillation issue and its targets,
judged from the numbers in glue-eval output directories."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location("kd_summary", ROOT / "benchmarks" / "kd_summary.py")
kd_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kd_summary)

TASKS = ["CoLA", "SST-2", "MRPC", "RTE"]
FULL = {"CoLA": 8551, "SST-2": 67349, "MRPC": 3668, "RTE": 2490}


def write_results(folder: Path, system: str, scores: dict[str, list[float]], trained: dict | None = None):
    """A glue-eval results.json with one system: TASK -> its per-seed scores."""
    tasks = {}
    for task, values in scores.items():
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        tasks[task] = {"score": {"mean": mean, "std": std, "values": values},
                       "train_rows": (trained or FULL)[task]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({
        "systems": {system: {"tasks": tasks}},
        "train_rows": {task: {"available": FULL[task]} for task in scores}}))
    # seed 0 searched two rates, the later seeds trained at its rate
    (folder / "runs.jsonl").write_text("".join(
        json.dumps({"seed": seed, "lr_grid": [{}, {}] if seed == 0 else None}) + "\n"
        for values in scores.values() for seed in range(len(values))))


def test_summary_layout_and_targets(tmp_path, monkeypatch, capsys):
    run, out = tmp_path / "run", tmp_path / "out"
    for task, score in {"CoLA": 30.0, "SST-2": 90.0, "MRPC": 85.0, "RTE": 65.0}.items():
        write_results(run / "glue" / task / "teacher", "teacher", {task: [score]})
        # student+kd: above both on CoLA, SST-2 and MRPC, below kd on RTE; SST-2 within 2.5
        write_results(run / "glue" / task / "student", "student:S",
                      {task: {"CoLA": [10, 12, 14], "SST-2": [86, 86, 86], "MRPC": [80, 80, 80],
                              "RTE": [56, 56, 56]}[task]})
        write_results(run / "glue" / task / "student-kd", "student:S+kd",
                      {task: {"CoLA": [20, 20, 20], "SST-2": [88, 88, 88], "MRPC": [82, 82, 82],
                              "RTE": [57, 57, 57]}[task]})
        write_results(run / "glue" / task / "kd", "kd:S",
                      {task: {"CoLA": [5, 5, 5], "SST-2": [84, 84, 84], "MRPC": [75, 75, 75],
                              "RTE": [58, 58, 58]}[task]})
    write_results(run / "glue" / "CoLA" / "augment-4", "student:S+kd", {"CoLA": [22, 23, 24]})
    write_results(run / "glue" / "SST-2" / "augment-4", "student:S+kd", {"SST-2": [87, 87, 87]})
    # a transfer-set row whose kd twin is not run yet: open, not missed
    write_results(run / "glue" / "MRPC" / "student-kd-aug16", "student:S+kd", {"MRPC": [83, 83, 83]})
    entry = run / "kd-cache" / "CoLA-abc"
    entry.mkdir(parents=True)
    (entry / "logits.json").write_text(json.dumps({"task": "CoLA", "rows": 42755, "originals": 8551,
                                                   "transfer": {"variants": 4}, "teacher": "t"}))
    log = tmp_path / "lane.log"
    log.write_text(f"CoLA: teacher logits cached in {entry}\nCoLA: 8551 training rows\n"
                   f"CoLA: teacher logits from the cache {entry}\n"
                   f"CoLA: teacher logits from the cache {entry}\n")
    monkeypatch.setattr(sys, "argv", ["kd_summary.py", "--run", str(run), "--out", str(out),
                                      "--logs", str(log)])
    kd_summary.main()

    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher"] == {"CoLA": 30.0, "SST-2": 90.0, "MRPC": 85.0, "RTE": 65.0}
    assert summary["teacher_train_rows"] == summary["full_train_rows"] == FULL
    assert summary["student"]["CoLA"] == [12.0, 2.0]
    assert summary["student+kd"]["SST-2"][0] == 88.0 and summary["kd"]["RTE"][0] == 58.0
    assert summary["augment_study"] == {"N 4": {"CoLA": [23.0, 1.0], "SST-2": [87.0, 0.0]}}
    assert summary["kd_cache"][0]["rows"] == 42755
    assert summary["kd_runs"]["CoLA"] == 3 * 4  # student-kd, kd and augment-4 (not the student)
    assert summary["student+kd-aug16"] == {"MRPC": [83.0, 0.0]}
    assert summary["logit_events"] == {"CoLA-abc": {"computed": 1, "read": 2}}
    report = (out / "kd.md").read_text()
    assert "The teacher trains on every row: met" in report
    # (20 + 88 + 82 + 57) / 4 = 61.75 against (30 + 90 + 85 + 65) / 4 = 67.5: 91.5 %
    assert "student+kd >= 95 % of the teacher's average: missed (61.8 / 67.5 = 91.5 %)" in report
    assert "student+kd above student and kd on CoLA: met" in report
    assert "student+kd above student and kd on RTE: missed" in report
    assert "student+kd within 2.5 of the teacher on SST-2: met" in report
    assert ("student+kd with the transfer set (N 4, the augment study's one rate) within 2.5 of "
            "the teacher on SST-2: missed (87.0 vs 90.0, gap 3.0)") in report
    assert ("student+kd-aug16 above student and kd-aug16 on MRPC: open "
            "(83.0 vs student 80.0, kd-aug16 –)") in report
    assert (out / "glue" / "RTE" / "kd" / "results.json").is_file()


def test_a_capped_teacher_is_not_a_full_one(tmp_path, monkeypatch, capsys):
    run, out = tmp_path / "run", tmp_path / "out"
    for task in TASKS:
        write_results(run / "glue" / task / "teacher", "teacher", {task: [50.0]},
                      trained={**FULL, "SST-2": 4000})
    monkeypatch.setattr(sys, "argv", ["kd_summary.py", "--run", str(run), "--out", str(out)])
    kd_summary.main()
    assert "The teacher trains on every row: open (CoLA 8,551 of 8,551, SST-2 4,000 of 67,349" in (
        out / "kd.md").read_text()


def test_stage_seconds_sum_the_parts_of_a_resumed_step(tmp_path):
    """A step stopped and resumed has a line per finished part: wall and CPU are their sums; parts
    whose CPU was not measured (NA, or an old wall-only line) count for wall only."""
    from stage_times import STAGES_FILE, stage_seconds

    (tmp_path / STAGES_FILE).write_text("\n".join([
        "glue-RTE-kd\t100.5\t90\t5\t1",
        "glue-CoLA-teacher\t1105",          # an old line: wall only
        "glue-RTE-kd\t200\t150\t10\t1",      # the resumed part
        "encode\tNA\tNA\tNA\t1",
        "glue-MRPC-kd\t60\tNA\tNA\t1",
    ]) + "\n")
    assert stage_seconds(tmp_path) == {"glue-RTE-kd": 300.5, "glue-CoLA-teacher": 1105.0,
                                       "glue-MRPC-kd": 60.0}
    assert stage_seconds(tmp_path, cpu=True) == {"glue-RTE-kd": 255.0}
    assert stage_seconds(tmp_path / "absent") == {}
