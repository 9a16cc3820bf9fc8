"""GLUE readers on fixture files in each task's exact format, and on the real data when present."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from core.errors import UserError
from data.glue import (
    DIAGNOSTIC,
    TASKS,
    available_tasks,
    load_task,
    read_diagnostic,
    task_by_name,
)
from tests.helpers import GLUE_FIXTURES as FIXTURES


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_reads_its_fixture(name):
    data = load_task(name, FIXTURES, with_test=True)
    task = data.task
    assert len(data.train) > 0
    assert set(data.dev) == set(task.dev_files)
    for split in [data.train, *data.dev.values()]:
        assert split.labels is not None and len(split.labels) == len(split)
        assert all(text.strip() for text in split.text_a)
        assert (split.text_b is not None) == task.pair
        if task.regression:
            assert split.labels.dtype == np.float32
        else:
            assert set(split.labels) <= set(range(len(task.labels)))
    for stem, split in data.test.items():
        assert split.labels is None and len(split) > 0
        assert stem in task.test_files or stem == DIAGNOSTIC


def test_quirks_cola_mrpc_mnli_qqp_rte_stsb():
    cola = load_task("cola", FIXTURES)
    # headerless file, dev.tsv without a final newline: nothing lost, nothing extra
    assert len(cola.train) == 12 and len(cola.dev[""]) == 6
    assert (FIXTURES / "CoLA" / "dev.tsv").read_bytes()[-1:] != b"\n"
    mrpc = load_task("MRPC", FIXTURES)
    # the BOM is gone from the header and unbalanced quotes stay inside their field
    assert len(mrpc.train) == 12
    assert mrpc.train.text_b[0].startswith('" ')
    assert mrpc.train.text_a[1].endswith('" quoted')
    mnli = load_task("mnli", FIXTURES, with_test=True)
    assert set(mnli.dev) == {"m", "mm"}
    assert set(mnli.test) == {"MNLI-m", "MNLI-mm", DIAGNOSTIC}
    assert mnli.train.text_a[0].endswith(".")  # sentence1, not a parse column
    qqp = load_task("QQP", FIXTURES, with_test=True)
    assert qqp.train.skipped == 1 and len(qqp.train) == 12
    assert qqp.test["QQP"].index == ["0", "1", "2", "3"]
    rte = load_task("RTE", FIXTURES)
    assert set(rte.train.labels) <= {0, 1}
    stsb = load_task("sts-b", FIXTURES)
    assert 0.0 <= stsb.train.labels.min() and stsb.train.labels.max() <= 5.0


def test_task_names_and_availability(tmp_path):
    assert task_by_name("sst2").name == "SST-2" and task_by_name("STS_B").name == "STS-B"
    with pytest.raises(UserError, match="unknown GLUE task"):
        task_by_name("squad")
    assert available_tasks(FIXTURES) == list(TASKS)
    assert available_tasks(tmp_path) == []


def test_bad_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="missing train.tsv"):
        load_task("RTE", tmp_path)
    rte = tmp_path / "RTE"
    rte.mkdir()
    (rte / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    (rte / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(UserError, match="unknown label"):
        load_task("RTE", tmp_path)
    (rte / "train.tsv").write_text("index\tpremise\thypothesis\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(UserError, match="missing column"):
        load_task("RTE", tmp_path)
    (rte / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tentailment\n")
    with pytest.raises(UserError, match=r"train.tsv:2: 3 columns, expected 4"):
        load_task("RTE", tmp_path)
    (rte / "train.tsv").write_bytes(b"index\tsentence1\tsentence2\tlabel\n0\tCaf\xe9\tb\tentailment\n")
    with pytest.raises(UserError, match=r"train.tsv: not UTF-8 text \(invalid continuation byte"):
        load_task("RTE", tmp_path)


def test_hub_without_datasets_is_a_clear_error():
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="datasets"):
            load_task("RTE", None)
    else:
        pytest.skip("datasets is installed; the hub path needs the network")


# Row counts of the real GLUE files (data rows, header excluded), from ../shared/data/README.md.
REAL_COUNTS = {
    "CoLA": (8551, {"": 1043}, {"CoLA": 1063}),
    "SST-2": (67349, {"": 872}, {"SST-2": 1821}),
    "MRPC": (3668, {"": 408}, {"MRPC": 1725}),
    "RTE": (2490, {"": 277}, {"RTE": 3000}),
    "WNLI": (635, {"": 71}, {"WNLI": 146}),
}


@pytest.mark.parametrize("name", list(REAL_COUNTS))
def test_real_glue_row_counts(shared_data, name):
    glue = shared_data / "glue"
    data = load_task(name, glue, with_test=True)
    train, dev, test = REAL_COUNTS[name]
    assert len(data.train) == train
    assert {k: len(v) for k, v in data.dev.items()} == dev
    assert {k: len(v) for k, v in data.test.items()} == test


def test_real_glue_qnli_dev_and_diagnostic(shared_data):
    glue = shared_data / "glue"
    assert "QNLI" not in available_tasks(glue)  # no train.tsv there
    with pytest.raises(UserError, match="missing train.tsv"):
        load_task("QNLI", glue)
    from data.glue import read_task_file

    qnli = TASKS["QNLI"]
    assert len(read_task_file(qnli, glue / "QNLI" / "dev.tsv", "dev", qnli.train)) == 5463
    assert len(read_task_file(qnli, glue / "QNLI" / "test.tsv", "test", qnli.test)) == 5463
    assert len(read_diagnostic(glue)) == 1104


class FakeHubSplit:
    """The part of a ``datasets.Dataset`` the hub reader uses."""

    def __init__(self, columns: dict[str, list], label_names: list[str]):
        self.columns = columns
        self.column_names = list(columns)
        self.features = {"label": SimpleNamespace(names=label_names)}

    def __getitem__(self, column: str) -> list:
        return self.columns[column]


def test_hub_reader_maps_hub_label_ids_to_ours(monkeypatch):
    hub_names = ["entailment", "neutral", "contradiction"]  # nyu-mll/glue's MNLI order

    def split(labels):
        return FakeHubSplit({"premise": ["p"] * len(labels), "hypothesis": ["h"] * len(labels),
                             "label": labels, "idx": list(range(len(labels)))}, hub_names)

    def load_dataset(path, config):
        assert path == "nyu-mll/glue"
        if config == "ax":
            return {"test": split([-1])}
        return {"train": split([0, 1, 2]), "validation_matched": split([2]),
                "validation_mismatched": split([1]), "test_matched": split([-1]),
                "test_mismatched": split([-1, -1])}

    monkeypatch.setitem(sys.modules, "datasets", SimpleNamespace(load_dataset=load_dataset))
    data = load_task("MNLI", None, with_test=True)
    ours = TASKS["MNLI"].labels
    assert [ours[i] for i in data.train.labels] == hub_names
    assert [ours[i] for i in data.dev["m"].labels] == ["contradiction"]
    assert set(data.test) == {"MNLI-m", "MNLI-mm", DIAGNOSTIC}
    assert data.test["MNLI-mm"].labels is None and data.test["MNLI-mm"].index == ["0", "1"]
