"""glue-eval --grid-seeds: the first seeds search the rate grid, the later ones reuse its best."""

from __future__ import annotations

import json

import pytest

from evaluation.run import best_rate
from tests.helpers import GLUE_FIXTURES, assert_one_line_error, pipeline_main


def point(lr, score, encoder_lr=None):
    return {"lr": lr, "encoder_lr": encoder_lr, "score": score}


def test_best_rate_is_the_best_mean_over_the_searching_seeds():
    records = [{"lr_grid": [point(1e-3, 60.0), point(1e-4, 50.0)]},
               {"lr_grid": [point(1e-3, 40.0), point(1e-4, 52.0)]}]
    assert best_rate(records) == (1e-4, None)  # means 50 vs 51
    assert best_rate(records[:1]) == (1e-3, None)
    tie = [{"lr_grid": [point(1e-3, 50.0, 3e-5), point(1e-3, 50.0, 1e-4)]}]
    assert best_rate(tie) == (1e-3, 3e-5)  # the earlier point
    assert best_rate([]) is None


def read_runs(out):
    return {(r["system"], r["seed"]): r
            for r in map(json.loads, (out / "runs.jsonl").read_text().splitlines())}


def test_later_seeds_train_at_the_rate_the_grid_seeds_chose(tmp_path, tiny_teacher_dir, capsys,
                                                           monkeypatch):
    common = ["glue-eval", "--glue-dir", GLUE_FIXTURES, "--tasks", "RTE", "--system", "scratch",
              "--teacher", str(tiny_teacher_dir), "--epochs", "2", "--seeds", "2",
              "--lr-grid", "3e-3,1e-4", "--head-hidden", "8", "--device", "cpu"]
    code, _, err = pipeline_main(capsys, monkeypatch, *common, "--out", str(tmp_path / "all"))
    assert code == 0, err
    code, _, err = pipeline_main(capsys, monkeypatch, *common, "--grid-seeds", "1",
                                 "--out", str(tmp_path / "one"))
    assert code == 0, err
    everything, once = read_runs(tmp_path / "all"), read_runs(tmp_path / "one")
    # seed 0 searched the grid in both runs, with the same result
    assert len(once["scratch", 0]["lr_grid"]) == 2
    assert once["scratch", 0]["score"] == everything["scratch", 0]["score"]
    # seed 1 trained once, at seed 0's rate, and scored what that grid point scored in full
    chosen = once["scratch", 0]["lr"]
    assert [p["lr"] for p in once["scratch", 1]["lr_grid"]] == [chosen]
    assert once["scratch", 1]["lr"] == chosen
    full = {p["lr"]: p["score"] for p in everything["scratch", 1]["lr_grid"]}
    assert once["scratch", 1]["score"] == full[chosen]
    results = json.loads((tmp_path / "one" / "results.json").read_text())
    assert results["config"]["grid_seeds"] == 1
    assert "Seeds 0..0 search the grid" in (tmp_path / "one" / "results.md").read_text()


@pytest.mark.parametrize("value", ["0", "-1"])
def test_grid_seeds_must_be_positive(value, tmp_path, capsys, monkeypatch):
    code, _, err = pipeline_main(capsys, monkeypatch, "glue-eval", "--glue-dir", GLUE_FIXTURES,
                                 "--tasks", "RTE", "--system", "scratch", "--grid-seeds", value,
                                 "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "--grid-seeds must be positive")
