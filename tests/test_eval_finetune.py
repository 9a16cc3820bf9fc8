"""The fine-tuning loop, heads, systems, the kd logit cache and the reports, on tiny inputs.

The loop is tested with a stand-in student defined here (the surface glue-eval uses from the
student API: ``model``, ``tokenize``, ``config``), so it does not depend on stage two.
"""

from __future__ import annotations

import json
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cache_tools import logit_cache
from core.batching import pad_batch
from core.errors import UserError
from data.glue import TASKS, GlueSplit, load_task
from evaluation import finetune as finetune_module
from evaluation import finetuned_teacher
from evaluation.backbones import StudentBackbone
from evaluation.config import EvalConfig
from evaluation.finetune import (
    Encoded,
    FinetuneResult,
    FreshModels,
    GridCheckpoint,
    TrainSettings,
    encode_split,
    evaluate,
    finetune,
    finetune_grid,
    predict,
    task_loss,
)
from evaluation.finetuned_teacher import (
    FINETUNED_DIR,
    load_finetuned_teacher,
    save_finetuned_teacher,
    seed0_teacher,
)
from evaluation.heads import TaskHead, TaskModel
from evaluation.report import append_jsonl, markdown, restart_log, summarize, write_submission
from evaluation.run import kd_training_data, resolve_inputs
from evaluation.systems import SystemSpec, parse_system
from evaluation.systems import resolve_systems as resolve_specs
from tests.helpers import GLUE_FIXTURES as FIXTURES
from tests.helpers import Stop, StoppedFinetune

CPU = torch.device("cpu")


class BagOfWords(nn.Module):
    """Stand-in encoder: mean of word embeddings; (B, T) ids, (B,) lengths -> (B, D)."""

    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        summed = self.embedding(ids).sum(1)  # (B, D); padding rows are zero
        return summed / lengths.clamp(min=1).unsqueeze(1).to(summed.dtype)


class StandInStudent:
    """What glue-eval uses of a SentenceStudent: ``model``, ``tokenize``, ``config``."""

    def __init__(self, vocab: int = 97, dim: int = 8):
        self.vocab = vocab
        self.model = BagOfWords(vocab, dim)
        self.config = SimpleNamespace(output_dim=dim, pad_token_id=0)

    def tokenize(self, texts):
        rows = [[1 + zlib.crc32(w.encode()) % (self.vocab - 1) for w in t.lower().split()]
                for t in texts]
        return pad_batch([np.asarray(r) for r in rows], 0)


def sentiment_split(n: int, seed: int) -> GlueSplit:
    """A separable single-sentence task: 'good' vs 'bad' among filler words."""
    rng = np.random.default_rng(seed)
    filler = "the film was a story of its time and place".split()
    labels = rng.integers(0, 2, n)
    texts = [" ".join([*rng.choice(filler, 4), "good" if y else "bad", *rng.choice(filler, 3)])
             for y in labels]
    return GlueSplit("SST-2", "train", texts, None, labels.astype(np.int64),
                     [str(i) for i in range(n)])


def stand_in_model(task, seed: int = 0) -> TaskModel:
    torch.manual_seed(seed)
    backbone = StudentBackbone(StandInStudent())
    return TaskModel(backbone, TaskHead(backbone.dim, task.num_outputs, task.pair, 16, 0.0))


def test_finetune_learns_and_restores_best_epoch():
    task = TASKS["SST-2"]
    model = stand_in_model(task)
    train = encode_split(model.backbone, sentiment_split(64, 0))
    dev = {"": encode_split(model.backbone, sentiment_split(32, 1))}
    records = []
    settings = TrainSettings(epochs=6, batch_size=8, lr=0.05, patience=6)
    result = finetune(model, task, train, dev, settings, CPU, log=records.append)
    assert [r["epoch"] for r in records] == list(range(1, 7)) == [r["epoch"] for r in result.history]
    assert result.dev_metrics["acc"] == 100.0
    assert result.score == max(r["dev_score"] for r in records)
    # the model holds the selected epoch's weights: scoring again gives the same numbers
    outputs = predict(model, dev[""], 8, CPU)
    assert outputs.shape == (32, 2)
    assert (outputs.argmax(1) == dev[""].labels).mean() == 1.0


def test_grid_keeps_the_dev_best_rate_and_records_every_point():
    task = TASKS["SST-2"]
    builder = stand_in_model(task)
    train = encode_split(builder.backbone, sentiment_split(64, 0))
    dev = {"": encode_split(builder.backbone, sentiment_split(32, 1))}
    records, built = [], []

    def build():
        built.append(stand_in_model(task))  # same seed: the points differ in their rate only
        return built[-1]

    settings = TrainSettings(epochs=4, batch_size=8, patience=4, seed=3)
    grid = finetune_grid(build, task, train, dev, settings, [1e-12, 0.05, 1e-11], CPU,
                         log=records.append)
    assert len(built) == 3 and grid.model is built[1]
    assert grid.lr == 0.05 and grid.encoder_lr is None
    assert [p.lr for p in grid.points] == [1e-12, 0.05, 1e-11]
    assert grid.result.score == max(p.score for p in grid.points) > grid.points[0].score
    assert {r["lr"] for r in records} == {1e-12, 0.05, 1e-11}
    # the kept model holds the chosen point's best weights
    assert evaluate(grid.model, task, dev, 8, CPU)["acc"] == grid.result.dev_metrics["acc"]
    assert settings.lr == TrainSettings().lr  # the caller's settings are not touched


def test_a_grid_stopped_between_points_resumes_to_the_same_result(tmp_path):
    """The points finished before a stop are kept (their weights when best) and not trained
    again; the resumed grid ends with the uninterrupted grid's points, choice and weights."""
    task = TASKS["SST-2"]
    train = encode_split(stand_in_model(task).backbone, sentiment_split(64, 0))
    dev = {"": encode_split(stand_in_model(task).backbone, sentiment_split(32, 1))}
    settings = TrainSettings(epochs=3, batch_size=8, patience=3, seed=3)
    rates = [1e-12, 0.05, 1e-11]
    built = []

    def build():
        built.append(stand_in_model(task))
        return built[-1]

    def grid(checkpoint, log=lambda record: None):
        return finetune_grid(build, task, train, dev, settings, rates, CPU, log=log,
                             checkpoint=checkpoint)

    whole = grid(GridCheckpoint(tmp_path / "whole", "run"))

    def stop_at_the_third_point(record):
        if record["lr"] == 1e-11:
            raise Stop

    cut = GridCheckpoint(tmp_path / "cut", "run")
    with pytest.raises(Stop):
        grid(cut, stop_at_the_third_point)
    kept, best, result = cut.load()
    assert [p.lr for p in kept] == [1e-12, 0.05] and best == 1 and result.score == whole.result.score
    built.clear()
    resumed = grid(cut)
    assert len(built) == 2  # the third point, then the kept best rebuilt from its weights
    assert [(p.lr, p.score, p.best_epoch) for p in resumed.points] == \
        [(p.lr, p.score, p.best_epoch) for p in whole.points]
    assert (resumed.lr, resumed.result.dev_metrics) == (whole.lr, whole.result.dev_metrics)
    torch.testing.assert_close(resumed.model.state_dict(), whole.model.state_dict())
    assert GridCheckpoint(tmp_path / "cut", "another run").load() == ([], None, None)
    cut.clear()
    assert not (tmp_path / "cut").exists()


def test_a_restarted_log_keeps_the_epochs_of_the_kept_points(tmp_path):
    path = tmp_path / "seed0.jsonl"
    for lr in (0.1, 0.1, 0.2):
        append_jsonl(path, {"lr": lr, "encoder_lr": None, "epoch": 1})
    path.write_text(path.read_text() + '{"lr": 0.3, "enc')  # the torn line of a killed run
    kept = [SimpleNamespace(lr=0.1, encoder_lr=None)]
    restart_log(path, kept)
    assert [json.loads(line)["lr"] for line in path.read_text().splitlines()] == [0.1, 0.1]
    restart_log(path, [])
    assert not path.exists()


def test_fresh_models_hands_over_the_first_model_once():
    task = TASKS["SST-2"]
    build = FreshModels(lambda: stand_in_model(task))
    first = build.first
    assert build() is first and build.first is None  # not kept once handed over
    again = build()
    assert again is not first
    torch.testing.assert_close(again.state_dict(), first.state_dict())  # seeded: equal weights


def test_grid_crosses_encoder_rates_and_ties_go_to_the_first_point():
    task = TASKS["SST-2"]
    data = encode_split(stand_in_model(task).backbone, sentiment_split(16, 0))
    # every rate too small to change anything: equal scores, the first point wins
    grid = finetune_grid(lambda: stand_in_model(task), task, data, {"": data},
                         TrainSettings(epochs=1), [1e-12, 2e-12], CPU, encoder_rates=[3e-12, 4e-12])
    assert [(p.lr, p.encoder_lr) for p in grid.points] == [
        (1e-12, 3e-12), (1e-12, 4e-12), (2e-12, 3e-12), (2e-12, 4e-12)]
    assert (grid.lr, grid.encoder_lr) == (1e-12, 3e-12)


def test_early_stopping_uses_patience():
    task = TASKS["SST-2"]
    model = stand_in_model(task)
    data = encode_split(model.backbone, sentiment_split(16, 0))
    # lr 0: nothing changes, so every epoch after the first is "no improvement"
    result = finetune(model, task, data, {"": data}, TrainSettings(epochs=10, lr=1e-12,
                                                                   patience=2), CPU)
    assert result.best_epoch == 1 and len(result.history) == 3


def test_pair_regression_with_kd_targets_runs():
    data = load_task("STS-B", FIXTURES)
    model = stand_in_model(data.task)
    train = encode_split(model.backbone, data.train)
    train.targets = np.random.default_rng(0).normal(size=(len(data.train), 1)).astype(np.float32)
    dev = {"": encode_split(model.backbone, data.dev[""])}
    result = finetune(model, data.task, train, dev, TrainSettings(epochs=2, batch_size=4), CPU)
    assert set(result.dev_metrics) == {"pearson", "spearman"}
    assert predict(model, dev[""], 4, CPU).shape == (len(data.dev[""]), 1)


def test_task_loss_is_tang_et_al_mix():
    task = TASKS["RTE"]
    outputs = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    data = Encoded([np.zeros(1)] * 2, None, np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    rows = np.array([0, 1])
    hard = nn.functional.cross_entropy(outputs, torch.tensor([0, 1]))
    soft = ((outputs - torch.tensor(data.targets, dtype=torch.float32)) ** 2).mean()
    got = task_loss(task, outputs, data, rows, 0.3, CPU)
    assert float(got) == pytest.approx(float(0.3 * hard + 0.7 * soft))
    data.targets = None
    assert float(task_loss(task, outputs, data, rows, 0.3, CPU)) == pytest.approx(float(hard))


def test_head_features():
    head = TaskHead(3, 2, pair=True, hidden=4, dropout=0.0)
    assert head.mlp[1].in_features == 12  # [u; v; |u-v|; u*v]
    assert head(torch.ones(5, 3), torch.zeros(5, 3)).shape == (5, 2)


# -- systems ------------------------------------------------------------------------------------
def resolve_systems(texts):
    return resolve_specs([parse_system(text) for text in texts])


def test_system_specs(tmp_path):
    from student import StudentConfig

    student = tmp_path / "s1"
    student.mkdir()
    with pytest.raises(UserError, match="not a saved student"):
        resolve_systems([f"student:{student}"])
    StudentConfig(vocab_size=10, output_dim=4).save(student)
    specs = resolve_systems([f"student:{student}", f"student:{student}+kd", "scratch", "kd",
                             "teacher"])
    assert [(s.kind, s.kd, s.path) for s in specs] == [
        ("student", False, student), ("student", True, student), ("scratch", False, student),
        ("scratch", True, student), ("teacher", False, None)]
    assert parse_system(f"kd:{student}") == SystemSpec(f"kd:{student}", "scratch", student, True)
    assert "/" not in specs[1].slug
    for bad, message in [("bert", "bad --system"), ("student", "needs a student directory"),
                         ("embeddings", "needs a student directory"), ("teacher+kd", "--teacher"),
                         (f"model2vec:{student}", "takes no directory"),
                         (f"student:{tmp_path}/nope", "not a dir")]:
        with pytest.raises(UserError, match=message):
            parse_system(bad)
    # without any student, scratch keeps no directory: the default architecture
    assert resolve_systems(["scratch", "model2vec+kd"]) == [
        SystemSpec("scratch", "scratch", None, False), SystemSpec("model2vec+kd", "model2vec", None, True)]
    with pytest.raises(UserError, match="twice"):
        resolve_systems(["teacher", "teacher"])
    with pytest.raises(UserError, match="training_summary.json"):
        resolve_systems([f"embeddings:{student}"])  # no record of its shard directory


def tiny_config(tmp_path, teacher_dir, **overrides) -> EvalConfig:
    settings = dict(out=tmp_path / "out", systems=["teacher"], glue_dir=FIXTURES,
                    teacher=str(teacher_dir), epochs=1, batch_size=8, head_hidden=8,
                    augment=0)  # the training rows only, unless a test asks for variants
    return EvalConfig(**{**settings, **overrides})


def test_config_validation(tmp_path):
    with pytest.raises(UserError, match="kd-alpha"):
        EvalConfig(out=tmp_path, systems=["teacher"], glue_dir=FIXTURES, kd_alpha=2.0)
    with pytest.raises(UserError, match="lr-grid"):
        EvalConfig(out=tmp_path, systems=["teacher"], lr_grid="1e-3,x")
    # the config is built without I/O; what needs the disk is checked when the run starts
    missing = EvalConfig(out=tmp_path, systems=["teacher"], glue_dir=tmp_path / "missing")
    with pytest.raises(UserError, match="no such directory"):
        resolve_inputs(missing)
    config = EvalConfig(out=tmp_path, systems=["teacher"], glue_dir=FIXTURES, tasks=["rte", "cola"])
    assert resolve_inputs(config).tasks == ["CoLA", "RTE"]  # GLUE order
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(UserError, match="RTE: missing dev.tsv"):
        resolve_inputs(EvalConfig(out=tmp_path, systems=["teacher"], glue_dir=tmp_path, tasks=["RTE"]))


def test_finetuned_teacher_roundtrip(tmp_path, tiny_teacher_dir):
    config = tiny_config(tmp_path, tiny_teacher_dir)
    data = load_task("RTE", FIXTURES)
    model = config.builder.model(SystemSpec("teacher", "teacher", None, False), data.task, seed=0)
    dev = encode_split(model.backbone, data.dev[""])
    before = predict(model, dev, 4, CPU)
    result = FinetuneResult(best_epoch=1, dev_metrics={"acc": 50.0}, score=50.0)
    save_finetuned_teacher(model, data.task, tmp_path / "ft", "k", result)
    loaded = load_finetuned_teacher(tmp_path / "ft", data.task, config.dropout)
    np.testing.assert_allclose(predict(loaded, dev, 4, CPU), before, rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="fine-tuned on RTE"):
        load_finetuned_teacher(tmp_path / "ft", TASKS["MRPC"], config.dropout)


def test_kd_logits_are_cached_once_in_their_own_format(tmp_path, tiny_teacher_dir, monkeypatch):
    config = tiny_config(tmp_path, tiny_teacher_dir)
    data = load_task("MRPC", FIXTURES)
    messages: list[str] = []
    taught = kd_training_data(config, data, data.train, data.train, CPU, log=messages.append)
    logits = taught.targets
    assert logits.shape == (len(data.train), 2) and logits.dtype == np.float32
    # no transfer set: the training rows as they are, every one with its gold label
    assert taught.train is data.train and taught.gold is None and taught.transfer is None
    (cache,) = [p for p in config.kd_cache.iterdir() if p.is_dir()]
    manifest = logit_cache.read_manifest(cache)
    assert manifest["rows"] == manifest["originals"] == len(data.train) and manifest["classes"] == 2
    assert manifest["transfer"] is None and manifest["task"] == "MRPC"
    assert (config.out / FINETUNED_DIR / "MRPC" / "glue_model.json").is_file()
    record = json.loads((config.out / FINETUNED_DIR / "MRPC" / "glue_model.json").read_text())
    # the entry records the fine-tuned weights it was computed with, as their own record does
    assert manifest["weights"]["teacher_fingerprint"] == record["teacher_fingerprint"]

    def no_finetuning(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(finetuned_teacher, "finetune_grid", no_finetuning)
    again = kd_training_data(config, data, data.train, data.train, CPU, log=messages.append)
    np.testing.assert_array_equal(again.targets, logits)
    assert any("from the cache" in m for m in messages)
    # --kd-alpha weighs the students' loss only: the same teacher and cache serve it
    other_alpha = tiny_config(tmp_path, tiny_teacher_dir, kd_alpha=0.9)
    np.testing.assert_array_equal(
        kd_training_data(other_alpha, data, data.train, data.train, CPU).targets, logits)
    # the teacher row's seed-0 run is the same fine-tuned teacher, loaded with its dev result
    # and the rates its grid chose (the transformer's grid, the head's rate fixed)
    _, result, rates = seed0_teacher(config.builder, config.recipe, data, data.train, CPU, messages.append)
    assert [(p["lr"], p["encoder_lr"]) for p in rates["lr_grid"]] == [
        (config.teacher_head_lr, rate) for rate in config.teacher_lr_grid]
    assert rates["encoder_lr"] in config.teacher_lr_grid
    logged = [json.loads(line) for line in
              (config.out / "logs" / "teacher" / "MRPC" / "seed0.jsonl").read_text().splitlines()]
    assert {record["encoder_lr"] for record in logged} == set(config.teacher_lr_grid)
    chosen = [{k: v for k, v in record.items() if k not in ("lr", "encoder_lr")}
              for record in logged if record["encoder_lr"] == rates["encoder_lr"]]
    assert result.history == chosen
    # a given fine-tuned teacher directory is used as is
    given = tiny_config(tmp_path, tiny_teacher_dir, out=tmp_path / "out2",
                        kd_teacher=config.out / FINETUNED_DIR)
    np.testing.assert_allclose(kd_training_data(given, data, data.train, data.train, CPU).targets,
                               logits, rtol=1e-5, atol=1e-6)


def test_teacher_cap_trains_the_teacher_on_fewer_rows_and_scores_all(tmp_path, tiny_teacher_dir):
    config = tiny_config(tmp_path, tiny_teacher_dir, teacher_lr_grid=[1e-4])
    data = load_task("MRPC", FIXTURES)
    few = data.train.subset(np.arange(4))
    logits = kd_training_data(config, data, data.train, few, CPU).targets
    assert logits.shape == (len(data.train), 2)  # the students' rows, all of them
    (log,) = (config.out / "logs" / "teacher" / "MRPC").iterdir()
    first_epoch = json.loads(log.read_text().splitlines()[0])
    assert first_epoch["epoch"] == 1 and first_epoch["encoder_lr"] == 1e-4
    # the cap is part of the teacher's identity: the full set fine-tunes another teacher
    _, _, rates = seed0_teacher(config.builder, config.recipe, data, few, CPU, lambda m: None)
    messages: list[str] = []
    seed0_teacher(config.builder, config.recipe, data, data.train, CPU, messages.append)
    assert messages == ["MRPC: fine-tuning the teacher (seed 0)"] and rates["lr"] == 1e-3


def test_the_seed0_teacher_keeps_its_finished_grid_points_across_a_stop(tmp_path, tiny_teacher_dir,
                                                                         monkeypatch):
    config = tiny_config(tmp_path, tiny_teacher_dir, teacher_lr_grid=[1e-4, 3e-5])
    data = load_task("MRPC", FIXTURES)
    finetune = StoppedFinetune("encoder_lr", at=3e-5)
    monkeypatch.setattr(finetune_module, "finetune", finetune)
    with pytest.raises(Stop):
        seed0_teacher(config.builder, config.recipe, data, data.train, CPU, lambda m: None)
    partial = config.out / FINETUNED_DIR / ".MRPC.partial"
    assert (partial / "points.json").is_file() and (partial / "best.pt").is_file()
    finetune.armed, messages = False, []
    finetune.trained.clear()
    _, _, rates = seed0_teacher(config.builder, config.recipe, data, data.train, CPU, messages.append)
    assert finetune.trained == [3e-5] and [p["encoder_lr"] for p in rates["lr_grid"]] == [1e-4, 3e-5]
    assert "MRPC: 1 grid point(s) of the teacher kept from an earlier run" in messages
    assert not partial.exists() and (config.out / FINETUNED_DIR / "MRPC" / "glue_model.json").is_file()


# -- reports ------------------------------------------------------------------------------------
def test_summary_table_and_submissions(tmp_path):
    runs = [
        {"system": "a", "task": "MRPC", "seed": s, "metrics": {"f1": f1, "acc": acc},
         "score": (f1 + acc) / 2, "best_epoch": 1}
        for s, (f1, acc) in enumerate([(80.0, 70.0), (82.0, 74.0)])
    ] + [
        {"system": "a", "task": "RTE", "seed": s, "metrics": {"acc": acc}, "score": acc,
         "best_epoch": 2} for s, acc in enumerate([60.0, 64.0])
    ]
    summary = summarize(runs, ["a"], ["MRPC", "RTE"])
    average = summary["a"]["average"]
    assert average["values"] == [(75.0 + 60.0) / 2, (78.0 + 64.0) / 2]
    assert average["std"] == pytest.approx(np.std(average["values"], ddof=1))
    table = markdown(summary, ["MRPC", "RTE"], {"teacher": 81.234}, seeds=2)
    assert "| system | MRPC (F1/acc) | RTE (acc) | GLUE avg |" in table
    assert "| a | 81.0 ± 1.4 / 72.0 ± 2.8 | 62.0 ± 2.8 | 69.2 ± 2.5 |" in table
    assert "| teacher | 81.2 |" in table
    one_seed = markdown(summarize([r for r in runs if r["seed"] == 0], ["a"], ["MRPC", "RTE"]),
                        ["MRPC", "RTE"], {}, seeds=1)
    assert "| a | 80.0 / 70.0 | 60.0 | 67.5 |" in one_seed  # one run: no "± 0.0"

    rte = load_task("RTE", FIXTURES, with_test=True)
    path = write_submission(tmp_path, rte.task, "RTE", rte.test["RTE"],
                            np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]]))
    assert path.read_text().splitlines() == [
        "index\tprediction", "0\tentailment", "1\tnot_entailment", "2\tentailment",
        "3\tnot_entailment"]
    stsb = load_task("STS-B", FIXTURES, with_test=True)
    path = write_submission(tmp_path, stsb.task, "STS-B", stsb.test["STS-B"],
                            np.array([[-1.0], [2.5], [7.0], [4.25]]))
    assert [line.split("\t")[1] for line in path.read_text().splitlines()[1:]] == [
        "0.000", "2.500", "5.000", "4.250"]
    mrpc = summary["a"]["tasks"]["MRPC"]
    assert mrpc["metrics"]["f1"] == {"mean": 81.0, "std": pytest.approx(2 ** 0.5), "values": [80.0, 82.0]}
    assert mrpc["score"]["values"] == [75.0, 78.0] and mrpc["best_epoch"] == [1, 1]
    assert summary["a"]["tasks"]["RTE"]["score"]["mean"] == 62.0
    assert summary["a"]["tasks"]["RTE"]["best_epoch"] == [2, 2]
    assert json.loads(json.dumps(summary)) == summary  # written to results.json as it is
