"""`pipeline embed`: sentences from a file -> vectors from a saved student (.npy or .arrow).

The student is a torch student directory, or an ONNX export of one (`pipeline export`, recognised
by its onnx_student.json), which runs on onnxruntime.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.errors import UserError
from core.io import atomic_output
from student.config import EmbedConfig
from student.onnx import OnnxStudent, is_onnx_student

INPUT_FORMATS = (".txt", ".jsonl", ".tsv", ".csv")
OUTPUT_FORMATS = (".npy", ".arrow")
# Sentences per encode call: bounds memory while keeping length sorting effective.
CHUNK = 65536


def read_texts(path: str | Path, text_column: str = "text") -> list[str]:
    """One sentence a line (.txt), or a column of a .jsonl / .tsv / .csv file (with a header)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such input file")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        texts = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                texts.append(str(json.loads(line)[text_column]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path}:{number}: not a JSON object with a {text_column!r} field") \
                    from None
        return texts
    if suffix in (".tsv", ".csv"):
        import polars as pl

        frame = pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", quote_char=None
                            if suffix == ".tsv" else '"', infer_schema=False)
        if text_column not in frame.columns:
            raise UserError(f"{path}: no column {text_column!r} (columns: {', '.join(frame.columns)})")
        return [text or "" for text in frame[text_column].to_list()]
    # Anything else is plain text; each line is one sentence, so rows match line numbers.
    return path.read_text(encoding="utf-8").splitlines()


def _chunks(texts: list[str]) -> Iterator[tuple[int, list[str]]]:
    for start in range(0, len(texts), CHUNK):
        yield start, texts[start : start + CHUNK]


def open_student(directory: str | Path, device: str | None = None):
    """(student, dim): an :class:`OnnxStudent` for an ONNX export, else the torch student on
    ``device``. Both have ``encode(texts, batch_size, show_progress_bar=...)``."""
    if is_onnx_student(directory):
        if device not in (None, "auto", "cpu"):
            raise UserError(f"{directory} is an ONNX export, which runs on the CPU; drop --device {device}")
        student = OnnxStudent(directory)
        return student, student.dim
    from student.sentence import load_student

    student = load_student(directory, device=device)
    return student, student.config.output_dim


def run_embed(config: EmbedConfig) -> Path:
    """Encode every sentence of ``config.input`` and write the vectors in input order."""
    out = Path(config.out)
    if out.suffix not in OUTPUT_FORMATS:
        raise UserError(f"--out must end in {' or '.join(OUTPUT_FORMATS)}, got {out.name!r}")
    student, dim = open_student(config.student, config.device)
    texts = read_texts(config.input, config.text_column)
    if not texts:
        raise UserError(f"{config.input}: no sentences")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:  # a complete file or none under the final name
        if out.suffix == ".npy":
            vectors = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                shape=(len(texts), dim))
            for start, chunk in _chunks(texts):
                vectors[start : start + len(chunk)] = student.encode(
                    chunk, config.batch_size, show_progress_bar=config.progress)
            vectors.flush()
            del vectors
        else:
            schema = pa.schema([("id", pa.int64()), ("text", pa.string()),
                                ("vector", pa.list_(pa.float32(), dim))])
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                for start, chunk in _chunks(texts):
                    encoded = student.encode(chunk, config.batch_size, show_progress_bar=config.progress)
                    writer.write_table(pa.table({
                        "id": pa.array(np.arange(start, start + len(chunk))),
                        "text": pa.array(chunk, pa.string()),
                        "vector": pa.FixedSizeListArray.from_arrays(pa.array(encoded.reshape(-1)), dim),
                    }, schema=schema))
    return out
