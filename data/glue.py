"""GLUE task readers: the original GLUE TSV layout, or the Hugging Face hub (``nyu-mll/glue``).

The TSV layout is the one the GLUE download script writes, quirks included: CoLA's train/dev files
have no header, MRPC's header starts with a UTF-8 BOM, fields contain unbalanced ``"`` (so every
file is read with quoting off), MNLI has matched and mismatched dev/test files, test files have no
labels and an index column. Columns are found by their header names, so MNLI's 12-column train and
16-column dev files are read by one layout.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import UserError

DIAGNOSTIC = "AX"


@dataclass(frozen=True)
class Layout:
    """Where a split's fields are: header names, or 0-based positions in a headerless file."""

    text_a: str | int
    text_b: str | int | None = None
    label: str | int | None = None
    index: str | int | None = None
    header: bool = True
    width: int | None = None  # column count of a headerless file


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: its files, layouts and label set (None for the STS-B regression)."""

    name: str
    directory: str
    labels: tuple[str, ...] | None
    train: Layout
    test: Layout
    hub_config: str
    hub_columns: tuple[str, str | None]
    # dev file per metric suffix: "" for one dev set, "m"/"mm" for MNLI matched/mismatched
    dev_files: dict[str, str] = field(default_factory=lambda: {"": "dev.tsv"})
    # test file per GLUE-server submission name (without .tsv)
    test_files: dict[str, str] = field(default_factory=dict)
    # QQP's train file has a few malformed rows; the reference readers skip them too
    skip_malformed: bool = False
    # metric names (evaluation.metrics.METRICS) of a task that is not GLUE's (a user's own data);
    # empty: the GLUE task's own metrics
    metrics: tuple[str, ...] = ()

    @property
    def pair(self) -> bool:
        return self.train.text_b is not None

    @property
    def regression(self) -> bool:
        return self.labels is None

    @property
    def num_outputs(self) -> int:
        return 1 if self.labels is None else len(self.labels)


BINARY = ("0", "1")
NLI2 = ("entailment", "not_entailment")
NLI3 = ("contradiction", "entailment", "neutral")
_PAIR = Layout("sentence1", "sentence2", "label", "index")
_PAIR_TEST = Layout("sentence1", "sentence2", None, "index")

TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask(
            "CoLA", "CoLA", BINARY,
            train=Layout(text_a=3, label=1, header=False, width=4),
            test=Layout("sentence", index="index"),
            hub_config="cola", hub_columns=("sentence", None),
            test_files={"CoLA": "test.tsv"},
        ),
        GlueTask(
            "SST-2", "SST-2", BINARY,
            train=Layout("sentence", label="label"),
            test=Layout("sentence", index="index"),
            hub_config="sst2", hub_columns=("sentence", None),
            test_files={"SST-2": "test.tsv"},
        ),
        GlueTask(
            "MRPC", "MRPC", BINARY,
            train=Layout("#1 String", "#2 String", "Quality"),
            test=Layout("#1 String", "#2 String", None, "index"),
            hub_config="mrpc", hub_columns=("sentence1", "sentence2"),
            test_files={"MRPC": "test.tsv"},
        ),
        GlueTask(
            "STS-B", "STS-B", None,
            train=Layout("sentence1", "sentence2", "score", "index"),
            test=_PAIR_TEST,
            hub_config="stsb", hub_columns=("sentence1", "sentence2"),
            test_files={"STS-B": "test.tsv"},
        ),
        GlueTask(
            "QQP", "QQP", BINARY,
            train=Layout("question1", "question2", "is_duplicate", "id"),
            test=Layout("question1", "question2", None, "id"),
            hub_config="qqp", hub_columns=("question1", "question2"),
            test_files={"QQP": "test.tsv"},
            skip_malformed=True,
        ),
        GlueTask(
            "MNLI", "MNLI", NLI3,
            train=Layout("sentence1", "sentence2", "gold_label", "index"),
            test=_PAIR_TEST,
            hub_config="mnli", hub_columns=("premise", "hypothesis"),
            dev_files={"m": "dev_matched.tsv", "mm": "dev_mismatched.tsv"},
            test_files={"MNLI-m": "test_matched.tsv", "MNLI-mm": "test_mismatched.tsv"},
        ),
        GlueTask(
            "QNLI", "QNLI", NLI2,
            train=Layout("question", "sentence", "label", "index"),
            test=Layout("question", "sentence", None, "index"),
            hub_config="qnli", hub_columns=("question", "sentence"),
            test_files={"QNLI": "test.tsv"},
        ),
        GlueTask(
            "RTE", "RTE", NLI2, train=_PAIR, test=_PAIR_TEST,
            hub_config="rte", hub_columns=("sentence1", "sentence2"),
            test_files={"RTE": "test.tsv"},
        ),
        GlueTask(
            "WNLI", "WNLI", BINARY, train=_PAIR, test=_PAIR_TEST,
            hub_config="wnli", hub_columns=("sentence1", "sentence2"),
            test_files={"WNLI": "test.tsv"},
        ),
    )
}
# The diagnostic set (AX) is predicted by the MNLI model; it has no training data of its own.
DIAGNOSTIC_FILE = ("diagnostic", "diagnostic.tsv")
_ALIASES = {name.lower().replace("-", ""): name for name in TASKS}


@dataclass
class GlueSplit:
    """One split of one task, column-wise. ``labels`` is None for test splits."""

    task: str
    split: str
    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray | None  # (N,) int64 class index, or float32 score for STS-B
    index: list[str]  # the row ids a GLUE submission file uses
    skipped: int = 0  # malformed rows dropped (QQP only)

    def __len__(self) -> int:
        return len(self.text_a)

    def subset(self, rows: np.ndarray) -> GlueSplit:
        pick = [int(i) for i in rows]
        return GlueSplit(
            self.task,
            self.split,
            [self.text_a[i] for i in pick],
            None if self.text_b is None else [self.text_b[i] for i in pick],
            None if self.labels is None else self.labels[pick],
            [self.index[i] for i in pick],
        )


def task_by_name(name: str) -> GlueTask:
    """The task for a name as users write it (``sst2``, ``SST-2``, ``sts-b``...)."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in _ALIASES:
        raise UserError(f"unknown GLUE task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[_ALIASES[key]]


def available_tasks(glue_dir: str | Path) -> list[str]:
    """Tasks whose train and dev files are all present under ``glue_dir``, in GLUE order."""
    return [task.name for task in TASKS.values() if not missing_files(glue_dir, task)]


def missing_files(glue_dir: str | Path, task: GlueTask, with_test: bool = False) -> list[str]:
    """The names of the task's train/dev (and test) files that ``glue_dir`` lacks."""
    folder = Path(glue_dir) / task.directory
    needed = ["train.tsv", *task.dev_files.values()]
    needed += list(task.test_files.values()) if with_test else []
    return [name for name in needed if not (folder / name).is_file()]


def check_task_files(glue_dir: str | Path, task: GlueTask, with_test: bool = False) -> None:
    """UserError naming the missing files, before any time is spent on other tasks."""
    missing = missing_files(glue_dir, task, with_test)
    if missing:
        raise UserError(
            f"{task.name}: missing {', '.join(missing)} in {Path(glue_dir) / task.directory} "
            "(expected the original GLUE TSV layout, as written by the GLUE download script)"
        )


# -- TSV --------------------------------------------------------------------------------------
def read_tsv_rows(path: Path) -> list[list[str]]:
    """All rows of a GLUE TSV file: tab separated, quoting off, BOM stripped."""
    if not path.is_file():
        raise UserError(f"{path}: missing GLUE file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise UserError(f"{path}: not a TSV file ({exc})") from None


def read_task_file(task: GlueTask, path: Path, split: str, layout: Layout) -> GlueSplit:
    """Read one GLUE TSV file of ``task`` with ``layout``; UserError on anything unexpected."""
    rows = read_tsv_rows(path)
    if layout.header:
        if not rows:
            raise UserError(f"{path}: empty file, expected a header row")
        header, rows, first_line = rows[0], rows[1:], 2
        positions = _header_positions(path, header, layout)
        width = len(header)
    else:
        positions = {k: getattr(layout, k) for k in ("text_a", "text_b", "label", "index")}
        width, first_line = layout.width, 1
    text_a: list[str] = []
    text_b: list[str] = []
    raw_labels: list[str] = []
    index: list[str] = []
    skipped = 0
    for line, row in enumerate(rows, start=first_line):
        if len(row) != width:
            if task.skip_malformed:
                skipped += 1
                continue
            raise UserError(f"{path}:{line}: {len(row)} columns, expected {width} ({task.name})")
        text_a.append(row[positions["text_a"]])
        if positions["text_b"] is not None:
            text_b.append(row[positions["text_b"]])
        if positions["label"] is not None:
            raw_labels.append(row[positions["label"]])
        index.append(row[positions["index"]] if positions["index"] is not None else str(len(index)))
    labels = _parse_labels(task, raw_labels, path) if layout.label is not None else None
    return GlueSplit(
        task.name, split, text_a, text_b if task.pair else None, labels, index, skipped
    )


def _header_positions(path: Path, header: list[str], layout: Layout) -> dict[str, int | None]:
    wanted = {k: getattr(layout, k) for k in ("text_a", "text_b", "label", "index")}
    missing = [name for name in wanted.values() if name is not None and name not in header]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; header is "
            f"{header[:12]!r}"
        )
    return {k: None if v is None else header.index(v) for k, v in wanted.items()}


def _parse_labels(task: GlueTask, raw: list[str], path: Path) -> np.ndarray:
    if task.labels is None:
        try:
            return np.asarray([float(value) for value in raw], dtype=np.float32)
        except ValueError:
            bad = next(v for v in raw if not _is_float(v))
            raise UserError(f"{path}: score {bad!r} is not a number ({task.name})") from None
    lookup = {label: i for i, label in enumerate(task.labels)}
    unknown = sorted(set(raw) - lookup.keys())
    if unknown:
        raise UserError(
            f"{path}: unknown label(s) {', '.join(map(repr, unknown[:5]))} for {task.name} "
            f"(expected {', '.join(task.labels)})"
        )
    return np.asarray([lookup[value] for value in raw], dtype=np.int64)


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


# -- a task's splits --------------------------------------------------------------------------
@dataclass
class TaskData:
    """What fine-tuning and scoring one task needs."""

    task: GlueTask
    train: GlueSplit
    dev: dict[str, GlueSplit]  # metric suffix -> labelled dev split
    test: dict[str, GlueSplit] = field(default_factory=dict)  # submission name -> test split
    source: str = ""


def load_task_tsv(glue_dir: str | Path, name: str, with_test: bool = False) -> TaskData:
    """Read a task from a GLUE directory in the original layout."""
    task = task_by_name(name)
    check_task_files(glue_dir, task, with_test)
    folder = Path(glue_dir) / task.directory
    train = read_task_file(task, folder / "train.tsv", "train", task.train)
    dev = {
        suffix: read_task_file(task, folder / f, f.removesuffix(".tsv"), task.train)
        for suffix, f in task.dev_files.items()
    }
    test = {}
    if with_test:
        test = {
            stem: read_task_file(task, folder / f, f.removesuffix(".tsv"), task.test)
            for stem, f in task.test_files.items()
        }
        # AX is optional: without diagnostic/diagnostic.tsv there is just no AX.tsv
        if task.name == "MNLI" and Path(glue_dir).joinpath(*DIAGNOSTIC_FILE).is_file():
            test[DIAGNOSTIC] = read_diagnostic(glue_dir)
    return TaskData(task, train, dev, test, source=str(folder))


def read_diagnostic(glue_dir: str | Path) -> GlueSplit:
    """The GLUE diagnostic set (AX): MNLI-style pairs without labels."""
    path = Path(glue_dir).joinpath(*DIAGNOSTIC_FILE)
    return read_task_file(TASKS["MNLI"], path, DIAGNOSTIC, _PAIR_TEST)


# -- the Hugging Face hub ---------------------------------------------------------------------
def load_task_hub(name: str, with_test: bool = False) -> TaskData:
    """Read a task from ``nyu-mll/glue`` with the ``datasets`` library (needs the network)."""
    task = task_by_name(name)
    try:
        import datasets
    except ImportError:
        raise UserError(
            "reading GLUE from the hub needs the `datasets` package "
            "(pip install datasets), or pass --glue-dir"
        ) from None
    try:
        dataset = datasets.load_dataset("nyu-mll/glue", task.hub_config)
        diagnostic = (
            datasets.load_dataset("nyu-mll/glue", "ax")["test"]
            if with_test and task.name == "MNLI"
            else None
        )
    except Exception as exc:  # offline, hub down, rate limit: all end the same way
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot load nyu-mll/glue/{task.hub_config} from the Hugging Face hub ({first}); "
            "pass --glue-dir with the GLUE TSV files instead"
        ) from None
    mnli = task.name == "MNLI"
    dev_names = {"m": "validation_matched", "mm": "validation_mismatched"} if mnli else {
        "": "validation"}
    test_names = (
        {"MNLI-m": "test_matched", "MNLI-mm": "test_mismatched"} if mnli else {task.name: "test"}
    )
    data = TaskData(
        task,
        _hub_split(task, dataset["train"], "train", labelled=True),
        {s: _hub_split(task, dataset[n], n, labelled=True) for s, n in dev_names.items()},
        source=f"hub:nyu-mll/glue/{task.hub_config}",
    )
    if with_test:
        data.test = {s: _hub_split(task, dataset[n], n, labelled=False) for s, n in test_names.items()}
        if diagnostic is not None:
            data.test[DIAGNOSTIC] = _hub_split(task, diagnostic, DIAGNOSTIC, labelled=False)
    return data


def _hub_split(task: GlueTask, rows, split: str, labelled: bool) -> GlueSplit:
    col_a, col_b = task.hub_columns
    labels = None
    if labelled:
        values = rows["label"]
        if task.labels is None:
            labels = np.asarray(values, dtype=np.float32)
        else:
            # the hub numbers classes its own way; map through the label names to ours
            names = rows.features["label"].names
            ours = [n if n in task.labels else str(i) for i, n in enumerate(names)]
            lookup = {label: i for i, label in enumerate(task.labels)}
            labels = np.asarray([lookup[ours[v]] for v in values], dtype=np.int64)
    return GlueSplit(
        task.name,
        split,
        list(rows[col_a]),
        list(rows[col_b]) if col_b else None,
        labels,
        [str(i) for i in rows["idx"]],
    )


def load_task(
    name: str, glue_dir: str | Path | None, with_test: bool = False
) -> TaskData:
    """A task from ``glue_dir`` (TSV) or, when it is None, from the hub."""
    if glue_dir is None:
        return load_task_hub(name, with_test)
    return load_task_tsv(glue_dir, name, with_test)
