"""A student exported by `pipeline export`, run with onnxruntime, tokenizers and numpy only (no torch).

    from student.onnx import OnnxStudent
    student = OnnxStudent("students/default.onnx")
    vectors = student.encode(["A first sentence.", "Another one."], batch_size=64)  # (2, D) float32

Tokenization, truncation, length-sorted batching and the order of the rows are those of the torch
``SentenceStudent`` (both use student/batching.py), so the vectors match it (fp32: cosine > 0.9999).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import UserError
from core.io import read_json_object
from student.batching import encode_sorted, token_ids
from student.tokenization import TOKENIZER_FILE, load_tokenizer, suffix_length

ONNX_META = "onnx_student.json"
ONNX_MODEL = "model.onnx"
ONNX_FORMAT = "sra-distill-onnx-student"
ONNX_FORMAT_VERSION = 1
# The graph's inputs and output (see student/export.py).
INPUT_IDS, LENGTHS, OUTPUT = "input_ids", "lengths", "embeddings"
_REQUIRED = ("model", "max_length", "pad_token_id", "dim")


def is_onnx_student(directory: str | Path) -> bool:
    """True when ``directory`` is an export of `pipeline export` (it holds onnx_student.json)."""
    return (Path(directory) / ONNX_META).is_file()


def read_onnx_meta(directory: str | Path) -> dict[str, Any]:
    """The export's onnx_student.json, checked for what a caller needs."""
    path = Path(directory) / ONNX_META
    if not path.is_file():
        raise UserError(f"{directory}: no {ONNX_META}; not an ONNX student (make one with `pipeline export`)")
    meta = read_json_object(path, "an ONNX student description", UserError)
    if meta.get("format") != ONNX_FORMAT:
        raise UserError(f"{path}: not an {ONNX_FORMAT} description")
    if meta.get("format_version") != ONNX_FORMAT_VERSION:
        raise UserError(f"{path}: format_version {meta.get('format_version')!r}; this code reads "
                        f"{ONNX_FORMAT_VERSION} (export the student again)")
    missing = [key for key in _REQUIRED if key not in meta]
    if missing:
        raise UserError(f"{path}: missing keys {', '.join(missing)}")
    return meta


class OnnxStudent:
    """An exported student: text in, sentence vectors (float32) out, on onnxruntime.

    ``threads``: onnxruntime intra-op threads (default: its own choice, the physical cores).
    ``providers``: onnxruntime execution providers (default: CPU).
    """

    def __init__(self, directory: str | Path, threads: int | None = None,
                 providers: Sequence[str] | None = None):
        self.directory = Path(directory)
        self.meta = read_onnx_meta(self.directory)
        self.max_length = int(self.meta["max_length"])
        self.pad_token_id = int(self.meta["pad_token_id"])
        self.dim = int(self.meta["dim"])
        self.tokenizer = load_tokenizer(self.directory)  # padding and truncation off
        self._suffix = suffix_length(self.tokenizer)
        model = self.directory / str(self.meta["model"])
        if not model.is_file():
            raise UserError(f"{self.directory}: no {model.name}")
        import onnxruntime as ort  # here, so that is_onnx_student / read_onnx_meta stay cheap

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(model), options,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidGraph, ...)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{model}: onnxruntime cannot load it ({reason})") from None

    @property
    def quantize(self) -> str:
        return str(self.meta.get("quantize", "none"))

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with special tokens, truncated to ``max_length`` (as the torch student does)."""
        return token_ids(self.tokenizer, texts, self.max_length, self._suffix)

    def forward(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Padded ids (B, T) int64 and lengths (B,) int64 -> vectors (B, dim) float32."""
        (vectors,) = self.session.run([OUTPUT], {INPUT_IDS: np.ascontiguousarray(ids, np.int64),
                                                 LENGTHS: np.ascontiguousarray(lengths, np.int64)})
        return vectors

    def encode(self, texts: Sequence[str] | str, batch_size: int = 64,
               show_progress_bar: bool = False) -> np.ndarray:
        """Sentence vectors (N, dim) float32 in the order of ``texts``; batches over length-sorted
        sentences, like ``SentenceStudent.encode``."""
        if isinstance(texts, str):
            texts = [texts]
        return encode_sorted(self.token_ids(texts), self.forward, self.dim, self.pad_token_id,
                             batch_size, show_progress_bar)

    def __repr__(self) -> str:
        return f"OnnxStudent({str(self.directory)!r}, dim={self.dim}, quantize={self.quantize!r})"


__all__ = ["ONNX_META", "ONNX_MODEL", "OnnxStudent", "TOKENIZER_FILE", "is_onnx_student", "read_onnx_meta"]
