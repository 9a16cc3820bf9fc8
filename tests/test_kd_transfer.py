"""The kd-logit cache (one entry per teacher, task and transfer set, shared by every +kd system,
seed and run) and the augmented transfer set of Tang et al. (2019), on tiny random models."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cache_tools import logit_cache
from cache_tools.format import ShardError
from core.distributed import DistContext
from core.errors import UserError
from data.augment import (
    AUTO,
    TransferSettings,
    auto_variants,
    parse_augment,
    transfer_passes,
    transfer_settings,
)
from data.glue import TASKS, load_task
from evaluation import kd
from evaluation.config import EvalConfig
from evaluation.engine import fit
from evaluation.finetune import Encoded, task_loss
from evaluation.run import kd_training_data, run_source, run_task
from evaluation.systems import parse_system, resolve_systems
from evaluation.user_run import FinetuneConfig
from tests.helpers import GLUE_FIXTURES, assert_one_line_error, pipeline_main

CPU = torch.device("cpu")


def config_for(tmp_path: Path, teacher_dir: Path, **overrides) -> EvalConfig:
    settings = dict(out=tmp_path / "out", systems=["kd"], glue_dir=GLUE_FIXTURES,
                    teacher=str(teacher_dir), epochs=1, batch_size=8, head_hidden=8,
                    lr_grid=[1e-3], teacher_lr_grid=[1e-4], kd_cache=tmp_path / "kd-cache",
                    augment=0)  # the training rows only, unless a test asks for variants
    return EvalConfig(**{**settings, **overrides})


def counting_predictions(monkeypatch) -> list[int]:
    """Rows the teacher predicts for the kd cache, one entry per call."""
    calls: list[int] = []
    real = kd.predict

    def counted(model, data, *args, **kwargs):
        calls.append(len(data))
        return real(model, data, *args, **kwargs)

    monkeypatch.setattr(kd, "predict", counted)
    return calls


def test_one_entry_serves_every_kd_system_seed_and_run(tmp_path, tiny_teacher_dir, tiny_student_dir,
                                                       monkeypatch):
    data = load_task("RTE", GLUE_FIXTURES)
    calls = counting_predictions(monkeypatch)
    specs = resolve_systems([parse_system("kd"), parse_system(f"student:{tiny_student_dir}+kd")])
    config = config_for(tmp_path, tiny_teacher_dir, augment=2, seeds=2)
    records = run_task(specs, data, data.train, config, CPU, DistContext())
    assert len(records) == 4 and calls == [3 * len(data.train)]  # 12 rows and 2 variants of each
    assert {r["train_rows"] for r in records} == {3 * len(data.train)}
    # another glue-eval (another OUT, another kd_alpha) on the same --kd-cache: no teacher at all
    other = config_for(tmp_path, tiny_teacher_dir, augment=2, out=tmp_path / "other", kd_alpha=0.9)
    run_task(specs[:1], data, data.train, other, CPU, DistContext())
    assert calls == [3 * len(data.train)] and not (other.out / "finetuned-teacher").exists()
    (entry,) = [p for p in (tmp_path / "kd-cache").iterdir() if p.is_dir()]
    assert "OK: kd-logit cache, 36 rows (12 training rows, 2 variant(s) each)" in (
        logit_cache.verify_logit_cache(entry))
    # without variants: another entry, the training rows only
    plain = kd_training_data(config_for(tmp_path, tiny_teacher_dir), data, data.train,
                             data.train, CPU)
    assert calls[1:] == [len(data.train)] and plain.gold is None and plain.train is data.train


def test_variants_are_labelled_by_the_teacher_alone(tmp_path, tiny_teacher_dir):
    data = load_task("MRPC", GLUE_FIXTURES)  # pairs: both sides of a variant are varied together
    config = config_for(tmp_path, tiny_teacher_dir, augment=2)
    taught = kd_training_data(config, data, data.train, data.train, CPU)
    rows, m = taught.train, len(data.train)
    assert len(rows) == 3 * m and taught.targets.shape == (3 * m, 2)
    assert taught.gold.tolist() == [True] * m + [False] * (2 * m)
    assert rows.text_a[:m] == data.train.text_a and rows.text_b[:m] == data.train.text_b
    assert rows.index[m:m + 2] == [f"{data.train.index[0]}-aug0", f"{data.train.index[0]}-aug1"]
    np.testing.assert_array_equal(rows.labels[:m], data.train.labels)
    # the run's fingerprint names the transfer set; without one it is as it always was
    spec = parse_system("kd")
    assert run_source(spec, taught, 0, config, None)["transfer"] == TransferSettings(2).identity()
    plain = kd_training_data(config_for(tmp_path, tiny_teacher_dir), data, data.train,
                             data.train, CPU)
    assert "transfer" not in run_source(spec, plain, 0, config, None)
    # the training rows' logits do not depend on the variants beside them
    np.testing.assert_allclose(taught.targets[:m], plain.targets, rtol=1e-5, atol=1e-6)


def test_a_variant_has_no_hard_term_in_the_loss():
    task = TASKS["RTE"]
    outputs = torch.tensor([[2.0, -1.0], [0.5, 0.5], [1.0, 3.0]])  # (B, C)
    targets = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=np.float32)
    rows, alpha = np.arange(3), 0.3
    data = Encoded([np.zeros(1)] * 3, None, np.array([0, 1, 0]), targets,
                   gold=np.array([True, True, False]))
    soft = ((outputs - torch.tensor(targets)) ** 2).mean(dim=1)  # (B,)
    hard = torch.nn.functional.cross_entropy(outputs, torch.tensor([0, 1, 0]), reduction="none")
    want = (alpha * hard[:2] + (1 - alpha) * soft[:2]).sum() + (1 - alpha) * soft[2]
    assert float(task_loss(task, outputs, data, rows, alpha, CPU)) == pytest.approx(float(want) / 3)
    data.labels = np.array([0, 1, 1])  # a variant's placeholder label plays no part
    assert float(task_loss(task, outputs, data, rows, alpha, CPU)) == pytest.approx(float(want) / 3)
    # every row gold: the mix of rows without a mask (N = 0), the same loss
    data.gold, data.labels = np.ones(3, bool), np.array([0, 1, 0])
    masked = float(task_loss(task, outputs, data, rows, alpha, CPU))
    data.gold = None
    assert masked == pytest.approx(float(task_loss(task, outputs, data, rows, alpha, CPU)))


# -- the cache entry ------------------------------------------------------------------------------
def toy_entry(rows: int = 4, variants: int = 2) -> logit_cache.LogitEntry:
    originals = np.arange(rows)
    return logit_cache.LogitEntry(
        np.random.default_rng(0).normal(size=(rows * (variants + 1), 3)).astype(np.float32),
        np.concatenate([originals, np.repeat(originals, variants)]),
        np.concatenate([np.zeros(rows, np.int32), np.tile(np.arange(1, variants + 1), rows)]),
        [f"variant {i}" for i in range(rows * variants)], None, {"key": "toy"})


def _fill(directory: str, marker: str, results) -> None:
    """A process filling one entry: the compute is slow enough for the other to wait on it."""

    def compute() -> logit_cache.LogitEntry:
        with open(marker, "a") as handle:
            handle.write("computed\n")
        time.sleep(1.0)
        return toy_entry()

    entry, computed = logit_cache.cached_entry(Path(directory), compute)
    results.put((computed, entry.logits.tobytes()))


def test_two_processes_on_one_entry_compute_it_once(tmp_path):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    directory, marker = tmp_path / "cache" / "RTE-key", tmp_path / "computed.txt"
    workers = [context.Process(target=_fill, args=(str(directory), str(marker), results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(60)
    assert marker.read_text() == "computed\n"  # one process computed, the other waited and read
    assert sorted(computed for computed, _ in outcomes) == [False, True]
    assert outcomes[0][1] == outcomes[1][1] == toy_entry().logits.tobytes()
    assert logit_cache.read_entry(directory, full=True).meta["key"] == "toy"


def test_verify_catches_a_corrupted_array(tmp_path, capsys, monkeypatch):
    directory = tmp_path / "SST-2-key"
    logit_cache.write_entry(directory, toy_entry())
    code, out, err = pipeline_main(capsys, monkeypatch, "verify", directory)
    assert code == 0 and "OK: kd-logit cache, 12 rows (4 training rows, 2 variant(s) each)" in out
    path = directory / logit_cache.LOGITS
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # one value changed, the shape and header intact
    path.write_bytes(bytes(raw))
    assert pipeline_main(capsys, monkeypatch, "verify", "--quick", directory)[0] == 0  # no hashing
    assert_one_line_error(*pipeline_main(capsys, monkeypatch, "verify", directory)[::2],
                          "logits.npy: sha256 mismatch")
    np.save(path, np.zeros((12, 2), np.float32))  # another shape than the manifest's
    assert_one_line_error(*pipeline_main(capsys, monkeypatch, "verify", "--quick", directory)[::2],
                          "shape (12, 2) float32, the manifest says [12, 3] float32")
    (directory / logit_cache.MANIFEST).unlink()
    with pytest.raises(ShardError):
        logit_cache.read_entry(directory)


def test_an_entry_out_of_order_is_refused(tmp_path):
    entry = toy_entry()
    entry.source = entry.source[::-1].copy()
    with pytest.raises(ShardError, match="rows are not 4 originals then 2 variant"):
        logit_cache.write_entry(tmp_path / "bad", entry)
    assert not (tmp_path / "bad").exists()


def test_glue_eval_augment_and_a_shared_kd_cache(tmp_path, capsys, monkeypatch, tiny_teacher_dir):
    cache = tmp_path / "shared-kd"
    args = ["glue-eval", "--glue-dir", GLUE_FIXTURES, "--tasks", "RTE",
            "--teacher", tiny_teacher_dir, "--system", "kd", "--epochs", "1", "--lr-grid", "1e-3",
            "--teacher-lr-grid", "1e-4", "--head-hidden", "8", "--device", "cpu", "--augment", "1",
            "--kd-cache", cache]
    code, _, err = pipeline_main(capsys, monkeypatch, *args, "--out", tmp_path / "a")
    assert code == 0, err
    assert "RTE: 12 variants (1 per training row" in err and "teacher logits cached in" in err
    settings = json.loads((tmp_path / "a" / "results.json").read_text())["config"]
    assert settings["augment"] == 1 and settings["kd_cache"] == str(cache)
    code, _, err = pipeline_main(capsys, monkeypatch, *args, "--out", tmp_path / "b")
    assert code == 0 and "teacher logits from the cache" in err and "fine-tuning" not in err
    assert_one_line_error(*pipeline_main(capsys, monkeypatch, *args, "--augment", "-1")[::2],
                          "--augment must be 0 or more")
    assert_one_line_error(*pipeline_main(capsys, monkeypatch, *args[:7], "--system", "scratch",
                                         "--augment", "1")[::2], "--augment makes the transfer set")


# -- --augment auto and the passes over a transfer set ----------------------------------------
def test_auto_variants_aim_at_a_transfer_set_of_a_fixed_size():
    # RTE, MRPC and CoLA get the 16 variants measured, SST-2's 67k rows the 4 measured; a
    # training set as large as the target none
    assert [auto_variants(rows) for rows in (1, 2_490, 3_668, 8_551, 67_349, 150_000, 350_000,
                                             10**6)] == [16, 16, 16, 16, 4, 1, 0, 0]
    assert transfer_settings(AUTO, 8_551) == TransferSettings(16)
    assert transfer_settings(4, 8_551) == TransferSettings(4)
    assert transfer_settings("0", 10) == TransferSettings(0)
    for bad in ("-1", "many", None):
        with pytest.raises(UserError, match="--augment"):
            parse_augment(bad)


def test_a_transfer_set_is_passed_over_as_often_as_its_size_allows():
    assert transfer_passes(3, 8_551, 17 * 8_551) == 1  # CoLA, 16 variants: one pass
    assert transfer_passes(1, 67_349, 5 * 67_349) == 1  # SST-2, 4 variants, one epoch
    assert transfer_passes(3, 1_000, 2 * 1_000) == 2  # one variant: the steps of 3 epochs
    assert transfer_passes(3, 1_000, 1_000) == 3


def test_kd_with_a_transfer_set_trains_the_passes_its_size_allows(tmp_path, tiny_teacher_dir):
    data = load_task("MRPC", GLUE_FIXTURES)
    config = config_for(tmp_path, tiny_teacher_dir, augment=2, epochs=3, patience=3)
    taught = kd_training_data(config, data, data.train, data.train, CPU)
    spec = resolve_systems([parse_system("kd")])[0]
    log = tmp_path / "epochs.jsonl"
    fit(spec, taught, 0, config.recipe, config.builder, CPU, log)
    assert len(log.read_text().splitlines()) == 1  # 3 epochs of 12 rows: one pass over 36


def test_cli_augment_takes_auto_or_a_count(tmp_path, tiny_teacher_dir, capsys, monkeypatch):
    code, _, err = pipeline_main(capsys, monkeypatch, "glue-eval", "--glue-dir", GLUE_FIXTURES,
                                 "--tasks", "MRPC", "--system", "kd", "--augment", "many",
                                 "--out", tmp_path / "out", "--teacher", tiny_teacher_dir)
    assert_one_line_error(code, err, "--augment")
    # auto is the default of both runners, and needs no +kd system to be valid
    assert EvalConfig(out=tmp_path).augment == AUTO
    assert FinetuneConfig(train=tmp_path / "t.tsv", out=tmp_path / "o", systems=["scratch"]).augment == AUTO
    code, _, err = pipeline_main(capsys, monkeypatch, "glue-eval", "--glue-dir", GLUE_FIXTURES,
                                 "--tasks", "MRPC", "--system", "scratch", "--augment", "4",
                                 "--out", tmp_path / "out", "--teacher", tiny_teacher_dir)
    assert_one_line_error(code, err, "--augment", "+kd")
