"""benchmarks/collect_results.py's judgements: the majority-class floor, sizes and the targets."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("collect_results", ROOT / "benchmarks" / "collect_results.py")
collect = importlib.util.module_from_spec(spec)
spec.loader.exec_module(collect)

MAJORITY = {"CoLA": 0.0, "RTE": 52.7, "WNLI": 56.3}
TASKS = ["CoLA", "RTE", "WNLI"]


def scores(cola, rte, wnli):
    return {"CoLA": cola, "RTE": rte, "WNLI": wnli}


def test_tasks_where_nobody_clears_the_floor_are_set_aside():
    table = {"a": scores(10.0, 60.0, 56.3), "b": scores(5.0, 50.0, 40.0)}
    assert collect.above_floor_tasks(table, TASKS, MAJORITY) == ["CoLA", "RTE"]
    table["b"]["WNLI"] = 57.0
    assert collect.above_floor_tasks(table, TASKS, MAJORITY) == TASKS
    assert collect.above_floor_tasks(table, ["SST-2"], MAJORITY) == ["SST-2"]  # no floor known


def test_average_needs_every_task():
    assert collect.average(scores(10.0, 60.0, 50.0), ["CoLA", "RTE"]) == 35.0
    assert collect.average({"CoLA": 10.0}, ["CoLA", "RTE"]) is None
    assert collect.average({"CoLA": 10.0}, []) is None


def test_targets_are_judged_on_the_numbers():
    fine_tuned = {
        "teacher": scores(40.0, 60.0, 30.0),  # below WNLI's floor: WNLI leaves the 90% target
        "model2vec": scores(20.0, 55.0, 50.0),
        "scratch": scores(10.0, 58.0, 56.3),
        "embeddings": scores(15.0, 52.0, 56.3),
        "kd": scores(12.0, 57.0, 56.3),
        "student:default": scores(30.0, 56.0, 56.3),  # beats scratch on CoLA only
        "student:default+kd": scores(34.0, 57.0, 56.3),
    }
    probes = {"student:default": scores(8.0, 56.0, 18.0), "model2vec": scores(10.0, 52.7, 19.7)}
    speeds = {"teacher": 300.0, "student:default": 1200.0}
    lines = collect.targets_table(fine_tuned, TASKS, probes, TASKS, MAJORITY, speeds, 0.91).splitlines()
    verdicts = {line.split(" | ")[0].removeprefix("| "): line.rsplit(" | ", 1)[1] for line in lines[2:]}
    assert len(verdicts) == 8
    assert verdicts["student > scratch on every task (WNLI aside: no system above the majority class)"] \
        == "**missed** |"
    assert verdicts["student > embeddings on every task (WNLI aside: no system above the majority class)"] \
        == "met |"
    assert verdicts["student+kd best of the BiLSTM rows on average (CoLA, RTE)"] == "met |"
    assert verdicts["student > model2vec, fine-tuned average"] == "met |"  # 43.0 vs 37.5
    # probes over CoLA and RTE (WNLI aside: both below its floor): 32.0 vs 31.35
    assert verdicts["student > model2vec, probe average (CoLA, RTE)"] == "met |"
    teacher_row = next(line for line in lines if line.startswith("| student >= 90%"))
    assert "(WNLI excluded" in teacher_row and "43.0 / 50.0 = 86.0%" in teacher_row
    assert teacher_row.endswith("**missed** |")
    assert verdicts["held-out cosine >= 0.90"] == "met |"
    # a teacher trained on fewer rows than the students: the verdict says so, the numbers say where
    capped = collect.targets_table(fine_tuned, TASKS, probes, TASKS, MAJORITY, speeds, 0.91,
                                   {"RTE": (1000, 2490), "WNLI": (635, 700)}).splitlines()
    teacher_row = next(line for line in capped if line.startswith("| student >= 90%"))
    assert "; the teacher trained on 1,000 of RTE's 2,490 rows |" in teacher_row  # WNLI excluded
    assert teacher_row.endswith("**missed**, against a capped teacher |")
    speed_row = next(line for line in lines if "CPU throughput" in line)
    assert "= 4.0x" in speed_row and speed_row.endswith("**missed** |")


def test_parameter_counts_from_the_header(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"embedding.weight": np.zeros((100, 8), np.float32),
               "lstm.weight_ih_l0": np.zeros((32, 8), np.float32),
               "projection.bias": np.zeros(8, np.float32)}, str(path))
    assert collect.parameter_counts(path) == (800 + 256 + 8, 800)


def test_kd_rows_run_their_base_encoder():
    assert collect.base_system("student:default+kd") == "student:default"
    assert collect.base_system("kd") == "scratch"
    assert collect.base_system("model2vec") == "model2vec"


@pytest.mark.parametrize("label", ["teacher", "scratch"])
def test_speed_is_relative_to_the_teacher(label, tmp_path):
    table, rows = collect.systems_table(tmp_path, {label: {"RTE": 50.0}}, ["RTE"], {}, [],
                                        {"teacher": 100.0, "scratch": 800.0})
    assert rows[0]["x_teacher"] == (1.0 if label == "teacher" else 8.0)
    assert rows[0]["fine_tuned"] == 50.0 and rows[0]["probe"] is None
    assert table.count("\n") == 3


def test_the_chart_draws_the_student_sizes_where_they_were_fine_tuned(tmp_path):
    fine_tuned = {"student:default": {"CoLA": 12.0, "SST-2": 85.0, "RTE": 55.0},
                  "student:small": {"CoLA": 11.0, "SST-2": 84.0}}
    speeds = {"student:default": 2600.0, "student:small": 5100.0}
    _, rows = collect.systems_table(tmp_path, fine_tuned, ["CoLA", "SST-2", "RTE"], {}, [], speeds)
    path = tmp_path / "quality_speed.png"
    drawn = collect.plot_quality_speed(rows, ["CoLA", "SST-2", "RTE"], [], MAJORITY, path)
    assert list(drawn.values()) == [["student:default"], ["student:default", "student:small"], []]
    assert path.stat().st_size > 0


def test_no_verdict_without_a_task_above_the_floor():
    fine_tuned = {"student:default": {"WNLI": 50.0}, "scratch": {"WNLI": 56.3}, "embeddings": {"WNLI": 40.0}}
    lines = collect.targets_table(fine_tuned, ["WNLI"], {}, [], MAJORITY, {}, None).splitlines()
    rivals = [line for line in lines if line.startswith("| student > scratch") or
              line.startswith("| student > embeddings")]
    assert len(rivals) == 2 and all(line.endswith("| – | – |") for line in rivals)


def test_a_missing_task_leaves_the_verdict_open_unless_a_loss_decides_it():
    fine_tuned = {"student:default": {"RTE": 56.0}, "scratch": {"RTE": 58.0, "CoLA": 5.0},
                  "embeddings": {"RTE": 53.0, "CoLA": 9.0}}
    lines = collect.targets_table(fine_tuned, ["CoLA", "RTE"], {}, [], MAJORITY, {}, None).splitlines()
    scratch = next(line for line in lines if line.startswith("| student > scratch"))
    embeddings = next(line for line in lines if line.startswith("| student > embeddings"))
    assert scratch.endswith("| RTE 56.0 vs 58.0 | **missed** |")
    assert embeddings.endswith("| RTE 56.0 vs 53.0 | – |")  # CoLA still to come


def test_update_replaces_only_the_named_blocks(tmp_path):
    page = tmp_path / "RESULTS.md"
    page.write_text("# R\n<!-- collected:probe -->\nold\n<!-- /collected:probe -->\nkept\n"
                    "<!-- collected:glue -->\n<!-- /collected:glue -->\n")
    assert collect.update_blocks(page, {"probe": "| a |\n", "systems": "x"}) == ["probe"]
    assert page.read_text() == ("# R\n<!-- collected:probe -->\n| a |\n<!-- /collected:probe -->\nkept\n"
                                "<!-- collected:glue -->\n<!-- /collected:glue -->\n")


def test_stage_times_as_a_table(tmp_path):
    tsv = tmp_path / "stage_seconds.tsv"
    tsv.write_text("encode\t427\nglue-RTE-teacher\t1763\n")
    assert collect.stages_table(tsv).splitlines()[2:] == ["| encode | 427 |", "| glue-RTE-teacher | 1,763 |"]


def test_verdicts_say_so_far_while_probed_tasks_await_fine_tuning():
    fine_tuned = {"student:default": {"RTE": 56.0}, "scratch": {"RTE": 55.0}, "embeddings": {"RTE": 57.0},
                  "model2vec": {"RTE": 54.0}}
    lines = collect.targets_table(fine_tuned, ["RTE"], {}, ["CoLA", "RTE"], MAJORITY, {}, None).splitlines()
    assert next(line for line in lines if line.startswith("| student > scratch")).endswith("| met so far |")
    # a loss on a finished task cannot be undone
    embeddings = next(line for line in lines if line.startswith("| student > embeddings"))
    assert embeddings.endswith("| **missed** |")
    assert next(line for line in lines if "model2vec, fine-tuned" in line).endswith("| met so far |")
    assert lines[-1] == "Still to be fine-tuned: CoLA; a verdict marked so far may change."


def test_teacher_caps_come_from_the_runs_training_rows(tmp_path):
    def result(task, system, teacher_rows, available):
        directory = tmp_path / "glue" / task / system
        directory.mkdir(parents=True)
        rows = {"available": available, "systems": available, "teacher": teacher_rows}
        (directory / "results.json").write_text(json.dumps(
            {"systems": [system], "train_rows": {task: rows}}))

    result("RTE", "teacher", 1000, 2490)
    result("WNLI", "teacher", 635, 635)  # every row: not capped
    result("CoLA", "student-default", 4000, 8551)  # not the teacher's run
    assert collect.teacher_caps(tmp_path) == {"RTE": (1000, 2490)}
