"""A user's own labelled data (.csv, .tsv, .jsonl, .parquet) as a task the GLUE loop accepts.

The file becomes a ``GlueTask`` (label names, classification or regression, metrics by task type)
and ``GlueSplit`` s, so fine-tuning, prediction and scoring are glue-eval's own code. The task type
comes from the labels: strings, integers or booleans are classes (label names sorted, integers
numerically), floats a regression score (``regression=True`` forces it). Anything the run cannot
use is refused up front with one line that says what and where (a missing column, one class, a
label that is neither a class nor a number, an empty file or cell, a dev label the training data
lacks).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from core.errors import UserError
from core.io import atomic_write_bytes
from data.glue import GlueSplit, GlueTask, Layout, TaskData

FORMATS = (".csv", ".tsv", ".jsonl", ".parquet")
# metrics by task type; a task's selection score is their mean (evaluation.metrics.task_score)
BINARY_METRICS = ("acc", "macro_f1", "mcc")
MULTICLASS_METRICS = ("acc", "macro_f1")
REGRESSION_METRICS = ("pearson", "spearman")
_CLASS_DTYPES = (pl.String, pl.Categorical, pl.Enum, pl.Boolean)


@dataclass(frozen=True)
class Columns:
    """Where the text, the optional second text of a pair and the label are."""

    text: str = "text"
    pair: str | None = None
    label: str = "label"


# -- reading ----------------------------------------------------------------------------------
def read_table(path: str | Path) -> pl.DataFrame:
    """A whole file as a frame; UserError for a missing, unreadable or empty file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"{path}: unsupported file type {suffix or '(none)'!r}; use {', '.join(FORMATS)}")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif suffix == ".jsonl":
            frame = pl.read_ndjson(path, infer_schema_length=None)
        else:
            # TSV as GLUE writes it: quoting off (fields hold unbalanced quotes); all rows typed
            frame = pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",",
                                quote_char=None if suffix == ".tsv" else '"',
                                infer_schema_length=None, encoding="utf8")
    except pl.exceptions.NoDataError:
        raise UserError(f"{path}: empty file") from None
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: cannot read it as {suffix[1:]} ({first})") from None
    if frame.height == 0:
        raise UserError(f"{path}: empty file (no data rows)")
    return frame


def require_columns(frame: pl.DataFrame, path: Path, names: list[str | None]) -> None:
    missing = [name for name in names if name is not None and name not in frame.columns]
    if missing:
        raise UserError(f"{path}: no column {', '.join(map(repr, missing))} "
                        f"(columns: {', '.join(frame.columns)})")


def text_column(frame: pl.DataFrame, path: Path, name: str, allow_empty: bool = False) -> list[str]:
    """A column as strings; an empty or missing cell is refused (rows counted from 1)."""
    series = frame[name]
    if series.dtype.is_nested():
        raise UserError(f"{path}: column {name!r} holds {series.dtype}, not text")
    values = series.cast(pl.String)
    if not allow_empty:
        empty = (values.is_null() | (values.str.strip_chars() == "")).arg_true()
        if len(empty):
            raise UserError(f"{path}: column {name!r} has {len(empty)} empty cell(s) "
                            f"(first: row {empty[0] + 1})")
    return [value or "" for value in values.to_list()]


# -- labels -----------------------------------------------------------------------------------
def infer_labels(series: pl.Series, path: Path, regression: bool) -> tuple[str, ...] | None:
    """Label names (sorted) for classes, or None for a regression; UserError when neither fits."""
    _check_present(series, path)
    if regression or series.dtype.is_float():
        _scores(series, path)  # every label must be a number
        return None
    if not (series.dtype.is_integer() or series.dtype in _CLASS_DTYPES):
        raise UserError(f"{path}: labels in {series.name!r} are {series.dtype}, neither classes "
                        "(strings or integers) nor numbers")
    values = series.unique().sort().to_list()  # integers numerically, strings as text
    names = tuple(_label_name(value) for value in values)
    if len(names) < 2:
        raise UserError(f"{path}: one class only ({names[0]!r}) in {series.name!r}; a classifier "
                        "needs at least two (float labels are a regression; see --regression)")
    return names


def label_array(series: pl.Series, path: Path, names: tuple[str, ...] | None,
                what: str = "the training data") -> np.ndarray:
    """(N,) int64 class ids into ``names``, or float32 scores when ``names`` is None."""
    _check_present(series, path)
    if names is None:
        return _scores(series, path)
    lookup = {name: i for i, name in enumerate(names)}
    raw = [_label_name(value) for value in series.to_list()]
    unknown = sorted(set(raw) - lookup.keys())
    if unknown:
        raise UserError(f"{path}: label(s) {', '.join(map(repr, unknown[:5]))} not in {what} "
                        f"(its classes: {', '.join(names)})")
    return np.asarray([lookup[value] for value in raw], dtype=np.int64)


def _label_name(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _check_present(series: pl.Series, path: Path) -> None:
    missing = series.is_null()
    if series.dtype == pl.String:
        missing = missing | (series.str.strip_chars() == "")
    rows = missing.arg_true()
    if len(rows):
        raise UserError(f"{path}: {len(rows)} row(s) without a label in {series.name!r} "
                        f"(first: row {rows[0] + 1})")


def _scores(series: pl.Series, path: Path) -> np.ndarray:
    try:
        scores = series.cast(pl.Float64, strict=True).to_numpy()
    except (pl.exceptions.PolarsError, TypeError):
        sample = next((v for v in series.to_list() if not _is_number(v)), None)
        raise UserError(f"{path}: label {sample!r} in {series.name!r} is not a number "
                        "(a regression needs numeric labels)") from None
    if not np.isfinite(scores).all():
        raise UserError(f"{path}: non-finite label(s) in {series.name!r}")
    return scores.astype(np.float32)


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def task_metrics(labels: tuple[str, ...] | None) -> tuple[str, ...]:
    if labels is None:
        return REGRESSION_METRICS
    return BINARY_METRICS if len(labels) == 2 else MULTICLASS_METRICS


def make_task(name: str, labels: tuple[str, ...] | None, columns: Columns, source: str) -> GlueTask:
    """The GlueTask the fine-tuning loop runs on (also what a saved classifier rebuilds)."""
    layout = Layout(columns.text, columns.pair, columns.label)
    return GlueTask(name, source, labels, train=layout, test=Layout(columns.text, columns.pair),
                    hub_config="", hub_columns=(columns.text, columns.pair),
                    metrics=task_metrics(labels))


def task_type(task: GlueTask) -> str:
    if task.regression:
        return "regression"
    return f"{'binary' if len(task.labels) == 2 else f'{len(task.labels)}-class'} classification"


# -- a task's splits --------------------------------------------------------------------------
def read_split(path: Path, frame: pl.DataFrame, task: GlueTask, columns: Columns, split: str,
               what: str = "the training data") -> GlueSplit:
    """A labelled split of ``task`` from a frame already read from ``path``."""
    require_columns(frame, path, [columns.text, columns.pair, columns.label])
    text_a = text_column(frame, path, columns.text)
    text_b = None if columns.pair is None else text_column(frame, path, columns.pair)
    labels = label_array(frame[columns.label], path, task.labels, what)
    return GlueSplit(task.name, split, text_a, text_b, labels, [str(i) for i in range(len(text_a))])


def task_name(path: Path) -> str:
    """The training file's stem, or its folder's name for a generic ``train.*`` file."""
    return path.parent.resolve().name if path.stem.lower() == "train" else path.stem


def load_user_task(train_path: str | Path, dev_path: str | Path | None, columns: Columns,
                   regression: bool = False, dev_fraction: float = 0.1, seed: int = 0) -> TaskData:
    """Read the training file (and a dev file, or split one off with ``seed``) as a task."""
    train_path = Path(train_path)
    frame = read_table(train_path)
    require_columns(frame, train_path, [columns.text, columns.pair, columns.label])
    labels = infer_labels(frame[columns.label], train_path, regression)
    task = make_task(task_name(train_path), labels, columns, str(train_path))
    train = read_split(train_path, frame, task, columns, "train")
    if dev_path is not None:
        dev_path = Path(dev_path)
        dev = read_split(dev_path, read_table(dev_path), task, columns, "dev",
                         what=f"the training file {train_path.name}")
    else:
        train, dev = split_off_dev(train, task, dev_fraction, seed, train_path)
    return TaskData(task, train, {"": dev}, source=str(train_path))


def split_off_dev(data: GlueSplit, task: GlueTask, fraction: float, seed: int,
                  path: Path) -> tuple[GlueSplit, GlueSplit]:
    """A seeded dev split, stratified by class when every class has two rows or more."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(data))
    dev_rows = max(1, round(fraction * len(data)))
    if len(data) - dev_rows < 2:
        raise UserError(f"{path}: {len(data)} row(s) are too few to split off a dev set; give --dev")
    stratify = None
    if not task.regression:
        counts = np.bincount(data.labels, minlength=task.num_outputs)
        if counts.min() >= 2 and dev_rows >= task.num_outputs:
            stratify = data.labels
    train_rows, held_out = train_test_split(rows, test_size=dev_rows, random_state=seed,
                                            stratify=stratify)
    train, dev = data.subset(np.sort(train_rows)), data.subset(np.sort(held_out))
    train.split, dev.split = "train", "dev"
    if not task.regression:
        lacking = sorted(set(dev.labels.tolist()) - set(train.labels.tolist()))
        if lacking:
            raise UserError(f"{path}: class(es) {', '.join(task.labels[i] for i in lacking)} "
                            "too rare to split off a dev set; give --dev")
        if len(set(train.labels.tolist())) < 2:
            raise UserError(f"{path}: one class only left for training after the dev split; give --dev")
    return train, dev


# -- writing ----------------------------------------------------------------------------------
def write_table(frame: pl.DataFrame, path: str | Path) -> None:
    """Write ``frame`` atomically in the format of ``path``'s suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    buffer = io.BytesIO()
    if suffix == ".parquet":
        frame.write_parquet(buffer)
    elif suffix == ".jsonl":
        frame.write_ndjson(buffer)
    elif suffix in (".csv", ".tsv"):
        # TSV is read with quoting off (as GLUE writes it), so it is written without quotes too
        frame.write_csv(buffer, separator="\t" if suffix == ".tsv" else ",",
                        quote_style="never" if suffix == ".tsv" else "necessary")
    else:
        raise UserError(f"{path}: unsupported output type {suffix or '(none)'!r}; use {', '.join(FORMATS)}")
    atomic_write_bytes(path, buffer.getvalue())
