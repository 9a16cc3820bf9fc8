"""The teacher's transformer as an fp32 ONNX graph run by onnxruntime: the fast CPU backend.

A graph is exported once per teacher weights (``TeacherSpec.teacher_fingerprint``), pooled layer
and library versions, optimised by onnxruntime and kept in a cache directory,
``$SRA_CACHE/onnx-teachers/<key>/`` (``SRA_CACHE`` defaults to ``~/.cache/sra-distill``); later
processes load it from there. The vectors are the torch model's (fp32 both, checked by
``core.teacher.Teacher`` before first use), so the backend is no part of a teacher's identity.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from core.errors import UserError
from core.io import atomic_output, fingerprint, remove

BACKENDS = ("auto", "torch", "onnx")
OPSET = 17
CACHE_FORMAT = 1  # bump when the export changes: older cache entries are then left unused
MODEL_FILE = "model.onnx"
OUTPUT = "hidden"
TOKEN_TYPES = "token_type_ids"


class OnnxUnusable(Exception):
    """The ONNX graph could not be built, loaded or did not match the torch model (the reason)."""


def check_backend(backend: str) -> str:
    """``backend`` if it is one of BACKENDS, else a UserError."""
    if backend not in BACKENDS:
        raise UserError(f"--teacher-backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_directory(teacher_fingerprint: str, layer: int) -> Path:
    """Where the graph of these weights and this layer lives; new library versions export anew
    (the graph is traced from transformers' code and optimised by this onnxruntime)."""
    import onnxruntime
    import transformers

    root = Path(os.environ.get("SRA_CACHE") or Path.home() / ".cache" / "sra-distill")
    key = {"teacher": teacher_fingerprint, "layer": layer, "opset": OPSET, "format": CACHE_FORMAT,
           "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
           "transformers": transformers.__version__}
    return root / "onnx-teachers" / f"{teacher_fingerprint[:16]}-{fingerprint(key)}"


def export_graph(module: torch.nn.Module, example: dict[str, torch.Tensor]) -> bytes:
    """An ONNX fp32 graph of a copy of ``module`` (called with ``example``'s tensors, in order),
    every input and the output with dynamic batch and length axes. The copy runs with eager
    attention, which applies the mask as data (the sdpa path decides at trace time whether a
    mask is needed); ``module`` itself is left untouched."""
    names = [*example, OUTPUT]
    buffer = io.BytesIO()
    # the exporter needs ordinary tensors: the caller may be inside inference_mode
    with torch.inference_mode(False), warnings.catch_warnings():
        # the legacy exporter's deprecation and tracer warnings: the graph is checked, not trusted
        warnings.simplefilter("ignore")
        exported = copy.deepcopy(module).eval()
        for submodule in exported.modules():
            if hasattr(submodule, "set_attn_implementation"):
                submodule.set_attn_implementation("eager")
                break
        # dynamo=False: the torch.export-based exporter needs onnxscript, which is not installed
        torch.onnx.export(exported, tuple(example.values()), buffer, input_names=list(example),
                          output_names=[OUTPUT], dynamic_axes={n: {0: "batch", 1: "length"} for n in names},
                          opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


class OnnxEncoder:
    """An exported teacher transformer in an onnxruntime session: padded token ids and mask in,
    the pooled layer's hidden states (B, T, D) float32 out. ``threads``: intra-op threads."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), _session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        # The graph's inputs: BERT takes segment ids (all zero for one sentence), MPNet none, and
        # the exporter drops an unused one (the mask, when layer 0, the embeddings, is pooled).
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if TOKEN_TYPES in self.inputs:
            feed[TOKEN_TYPES] = np.zeros_like(input_ids)
        return self.session.run([OUTPUT], {name: feed[name] for name in self.inputs})[0]


def _session_options(threads: int, optimise_only: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no notes on stderr about initialisers it removed
    # Saved at the extended level, which stays valid on any CPU; the hardware-specific rest of
    # ORT_ENABLE_ALL is applied each time a session loads it.
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if optimise_only
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    return options


def _write_optimised(path: Path, graph: bytes) -> None:
    """onnxruntime's optimised form of ``graph``, written atomically to ``path``."""
    import onnxruntime as ort

    with atomic_output(path) as tmp:
        options = _session_options(1, optimise_only=True)
        options.optimized_model_filepath = str(tmp)
        ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def _load_checked(path: Path, threads: int, check: Callable[[OnnxEncoder], None]) -> OnnxEncoder | None:
    """The cached graph, or None when it is absent, unreadable or fails ``check`` (rebuilt then)."""
    if not path.is_file():
        return None
    try:
        encoder = OnnxEncoder(path, threads)
        check(encoder)
    except Exception:  # a torn or corrupt file: onnxruntime's errors have no common base class
        return None
    return encoder


def cached_encoder(directory: Path, export: Callable[[], bytes], threads: int,
                   check: Callable[[OnnxEncoder], None]) -> OnnxEncoder:
    """The encoder of ``directory``'s graph, exported (``export``) and optimised first when it is
    missing or bad. ``check`` raises OnnxUnusable on a graph whose vectors are not the teacher's.
    Processes that start together (torchrun ranks) export once: the others wait on a file lock."""
    path = directory / MODEL_FILE
    encoder = _load_checked(path, threads, check)
    if encoder is not None:
        return encoder
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / ".lock")):
        encoder = _load_checked(path, threads, check)  # another process may have written it meanwhile
        if encoder is not None:
            return encoder
        try:
            _write_optimised(path, export())
            encoder = OnnxEncoder(path, threads)
            check(encoder)
        except Exception as exc:  # the exporter and onnxruntime raise many types; all mean "unusable"
            remove(path)  # keep no graph that failed: the next process tries afresh
            if isinstance(exc, OnnxUnusable):
                raise
            raise OnnxUnusable(f"{type(exc).__name__}: {_first_line(exc)}") from exc
    return encoder


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"
