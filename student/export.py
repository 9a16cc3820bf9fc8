"""`pipeline export`: a saved student -> a directory that runs with onnxruntime alone.

The ONNX graph is written node by node with ``onnx.helper`` from the student's weights: the
standard ``LSTM`` operator (bidirectional, one per layer) with ``sequence_lens`` runs every
sentence over its own tokens only, so padding never reaches a state. student/model.py gets the
same states another way (no packing: the forward direction runs over the padded batch, where pads
come last, and the backward one over each sentence reversed within its own length); the export
checks the two agree. Pooling masks pad positions (max), divides by the true length (mean) or
takes the forward state at the last real token and the backward state at the first (last, the
LSTM's ``Y_h``). Batch size and length are dynamic.

The directory: model.onnx, tokenizer.json and onnx_student.json (what a caller needs: max_length,
pad_token_id, dim, ...). It is written to a temporary directory beside OUT and renamed into place.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import UserError
from core.io import atomic_output, atomic_write_json, sha256_file
from student.config import StudentConfig
from student.directory import TOKENIZER_NAME, StudentDirectory
from student.onnx import (
    INPUT_IDS,
    LENGTHS,
    ONNX_FORMAT,
    ONNX_FORMAT_VERSION,
    ONNX_META,
    ONNX_MODEL,
    OUTPUT,
    OnnxStudent,
    is_onnx_student,
)
from student.pretrained import student_path

if TYPE_CHECKING:
    import onnx

QUANTIZE = ("none", "int8")
OPSET = 17
# fp32 must reproduce the torch student; below this the export is refused.
FP32_MIN_COSINE = 0.9999
# Checked at export against the torch student: lengths from 1 token to past any max_length.
CHECK_SENTENCES = (
    "",
    "Yes.",
    "The river froze.",
    "She wrote the album in Paris during the long winter of 1971.",
    "A small village church was built on the island in the early twelfth century.",
    "They played the first season at the old station, then moved to a larger ground in the city.",
    "Despite heavy rain, the team won the game, and the crowd stayed long after the final whistle "
    "to sing with the band that had opened the night.",
    "Named after the county's first king, the school opened in 1902; its library, which holds "
    "early maps, letters and a hand-written law book, was moved twice before it found a home in "
    "the new house by the water, where it is still open to anyone who asks.",
    " ".join(["word"] * 300),
    "Ünïcödé, emoji 🙂 and numbers 3.14159 all go through the tokenizer.",
)


@dataclass
class ExportConfig:
    """`pipeline export`: student directory in, ONNX directory out."""

    student: str
    out: str | None = None  # None: the student directory's path + ".onnx"
    quantize: str = "none"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZE:
            raise UserError(f"unknown --quantize {self.quantize!r}; choose one of {', '.join(QUANTIZE)}")

    @property
    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        student = Path(self.student)  # a shipped student's short name: ./NAME.onnx
        return student.with_name(student.name + ".onnx")


@dataclass
class ExportResult:
    out: Path
    quantize: str
    size_bytes: int
    min_cosine: float
    mean_cosine: float
    sentences: int

    def summary(self) -> str:
        return (f"wrote {self.out} ({self.quantize if self.quantize != 'none' else 'fp32'}, "
                f"model {self.size_bytes / 2**20:.1f} MiB); cosine to the torch student over "
                f"{self.sentences} check sentences: min {self.min_cosine:.6f}, mean {self.mean_cosine:.6f}")


# -- the graph ------------------------------------------------------------------------------------
def _lstm_gates(weight: np.ndarray, hidden: int) -> np.ndarray:
    """PyTorch's gate blocks (i, f, g, o) along axis 0 -> ONNX's (i, o, f, c)."""
    i, f, g, o = (weight[k * hidden : (k + 1) * hidden] for k in range(4))
    return np.concatenate([i, o, f, g], axis=0)


def build_graph(config: StudentConfig, state: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The encoder of ``config`` with the weights ``state`` (StudentEncoder's state_dict, numpy)."""
    graph = _Graph()
    x, lengths, seq_lens = _embed(graph, state)
    x, y_h = _bilstm(graph, config, state, x, seq_lens)
    pooled = _pool(graph, config, x, y_h, lengths)
    _project(graph, config, state, pooled)
    return _model(graph, config)


class _Graph:
    """The initializers and nodes of the graph being built, in the order they are added (the
    order is part of the exported file, so the helpers below add them top to bottom)."""

    def __init__(self) -> None:
        self.inits: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []
        self.names: set[str] = set()

    def const(self, name: str, value) -> str:
        from onnx import numpy_helper

        if name not in self.names:  # shared constants are added once, where first used
            self.names.add(name)
            self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def axis(self, k: int) -> str:
        return self.const(f"axis{k}", np.array([k], np.int64))

    def one(self) -> str:
        return self.const("one_i64", np.array(1, np.int64))

    def node(self, op: str, inputs: list[str], output: str | list[str], **attrs) -> str:
        from onnx import helper

        outputs = [output] if isinstance(output, str) else output
        name = outputs[-1] + "_" + op
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))
        return outputs[-1]


def _embed(graph: _Graph, state: dict[str, np.ndarray]) -> tuple[str, str, str]:
    """Token ids -> x (T, B, E), the lengths clamped to 1 (B,) int64, and them as int32."""
    from onnx import TensorProto

    one = graph.one()
    embedding = graph.const("embedding", state["embedding.weight"].astype(np.float32))
    embedded = graph.node("Gather", [embedding, INPUT_IDS], "embedded", axis=0)  # (B, T, E)
    x = graph.node("Transpose", [embedded], "x0", perm=[1, 0, 2])  # (T, B, E)
    lengths = graph.node("Max", [LENGTHS, one], "lengths_min1")  # (B,), as the model's clamp(min=1)
    seq_lens = graph.node("Cast", [lengths], "seq_lens", to=TensorProto.INT32)
    return x, lengths, seq_lens


def _bilstm(graph: _Graph, config: StudentConfig, state: dict[str, np.ndarray], x: str,
            seq_lens: str) -> tuple[str, str]:
    """The stacked bidirectional LSTM: its outputs x (T, B, 2H), or for ``last`` pooling the final
    states Y_h of the top layer ("" while there are none)."""
    hidden = config.hidden
    for layer in range(config.layers):
        inputs = [x, *_lstm_weights(graph, state, layer, hidden), seq_lens]
        if layer == config.layers - 1 and config.pooling == "last":
            # Only the final states: Y_h (2, B, H), forward after the last real token, backward
            # after the first; Y is not computed ("" marks an omitted output).
            y_h = graph.node("LSTM", inputs, ["", "last_Y_h"], hidden_size=hidden,
                             direction="bidirectional")
            return x, y_h
        y = graph.node("LSTM", inputs, f"lstm{layer}_Y", hidden_size=hidden,
                       direction="bidirectional")  # Y (T, 2, B, H), zero after each row's length
        y = graph.node("Transpose", [y], f"lstm{layer}_Y_t", perm=[0, 2, 1, 3])  # (T, B, 2, H)
        shape = graph.const("shape_tb2h", np.array([0, 0, 2 * hidden], np.int64))
        x = graph.node("Reshape", [y, shape], f"x{layer + 1}")  # (T, B, 2H): [forward; backward]
    return x, ""


def _lstm_weights(graph: _Graph, state: dict[str, np.ndarray], layer: int,
                  hidden: int) -> list[str]:
    """One layer's W, R and B in ONNX's layout, both directions stacked."""
    w, r, b = [], [], []
    for suffix in ("", "_reverse"):  # ONNX direction 0 forward, 1 reverse
        w.append(_lstm_gates(state[f"lstm.weight_ih_l{layer}{suffix}"], hidden))
        r.append(_lstm_gates(state[f"lstm.weight_hh_l{layer}{suffix}"], hidden))
        b.append(np.concatenate([_lstm_gates(state[f"lstm.bias_ih_l{layer}{suffix}"], hidden),
                                 _lstm_gates(state[f"lstm.bias_hh_l{layer}{suffix}"], hidden)]))
    return [graph.const(f"lstm{layer}_W", np.stack(w).astype(np.float32)),  # (2, 4H, in)
            graph.const(f"lstm{layer}_R", np.stack(r).astype(np.float32)),  # (2, 4H, H)
            graph.const(f"lstm{layer}_B", np.stack(b).astype(np.float32))]  # (2, 8H)


def _pool(graph: _Graph, config: StudentConfig, x: str, y_h: str, lengths: str) -> str:
    """(B, 2H): the final states (last), or x over each row's real tokens (max, mean)."""
    if config.pooling == "last":
        states = graph.node("Transpose", [y_h], "last_t", perm=[1, 0, 2])  # (B, 2, H)
        shape = graph.const("shape_b2h", np.array([0, 2 * config.hidden], np.int64))
        return graph.node("Reshape", [states, shape], "pooled")  # (B, 2H): [forward; backward]
    mask = _mask(graph, lengths)
    if config.pooling == "max":
        neg_inf = graph.const("neg_inf", np.array(-np.inf, np.float32))
        masked = graph.node("Where", [mask, x, neg_inf], "masked")
        return graph.node("ReduceMax", [masked], "pooled", axes=[0], keepdims=0)  # (B, 2H)
    return _mean(graph, mask, x, lengths)


def _mask(graph: _Graph, lengths: str) -> str:
    """mask (T, B, 1): step < length."""
    steps_len = graph.node("Shape", [INPUT_IDS], "steps_len", start=1, end=2)  # [T]
    steps_end = graph.node("Squeeze", [steps_len, graph.axis(0)], "steps_end")
    zero = graph.const("zero_i64", np.array(0, np.int64))
    steps = graph.node("Range", [zero, steps_end, graph.one()], "steps")  # (T,)
    steps = graph.node("Unsqueeze", [steps, graph.axis(1)], "steps_col")  # (T, 1)
    row = graph.node("Unsqueeze", [lengths, graph.axis(0)], "lengths_row")  # (1, B)
    mask = graph.node("Less", [steps, row], "mask_tb")  # (T, B)
    return graph.node("Unsqueeze", [mask, graph.axis(2)], "mask")  # (T, B, 1)


def _mean(graph: _Graph, mask: str, x: str, lengths: str) -> str:
    """The mean of x over the real tokens (B, 2H)."""
    from onnx import TensorProto

    zero = graph.const("zero_f32", np.array(0.0, np.float32))
    masked = graph.node("Where", [mask, x, zero], "masked")
    total = graph.node("ReduceSum", [masked, graph.axis(0)], "total", keepdims=0)  # (B, 2H)
    count = graph.node("Unsqueeze", [lengths, graph.axis(1)], "count_i64")  # (B, 1)
    count = graph.node("Cast", [count], "count", to=TensorProto.FLOAT)
    return graph.node("Div", [total, count], "pooled")


def _project(graph: _Graph, config: StudentConfig, state: dict[str, np.ndarray],
             pooled: str) -> None:
    """pooled (B, 2H) -> the output (B, D), L2-normalised if the student normalises."""
    # Projection as MatMul + Add (not Gemm) so that dynamic int8 quantization reaches it.
    weight = graph.const("projection_W", state["projection.weight"].astype(np.float32).T.copy())
    bias = graph.const("projection_b", state["projection.bias"].astype(np.float32))
    projected = graph.node("MatMul", [pooled, weight], "projected")  # (B, D)
    if not config.normalize:
        graph.node("Add", [projected, bias], OUTPUT)
        return
    biased = graph.node("Add", [projected, bias], "biased")
    norm = graph.node("ReduceL2", [biased], "norm", axes=[-1], keepdims=1)  # (B, 1)
    eps = graph.const("eps", np.array(1e-12, np.float32))  # as torch.nn.functional.normalize
    graph.node("Div", [biased, graph.node("Max", [norm, eps], "norm_eps")], OUTPUT)


def _model(graph: _Graph, config: StudentConfig) -> onnx.ModelProto:
    """The graph's nodes and initializers as a checked model with dynamic batch and length."""
    import onnx
    from onnx import TensorProto, helper

    onnx_graph = helper.make_graph(
        graph.nodes, "sra_student",
        inputs=[helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", "length"]),
                helper.make_tensor_value_info(LENGTHS, TensorProto.INT64, ["batch"])],
        outputs=[helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", config.output_dim])],
        initializer=graph.inits,
    )
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="sra-distill", doc_string="BiLSTM sentence encoder (SRA student)")
    model.ir_version = 8  # readable by onnxruntime >= 1.10
    onnx.checker.check_model(model, full_check=True)
    return model


# -- the directory --------------------------------------------------------------------------------
def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, D) arrays (float64)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-300)


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization (weights int8, activations quantized on the fly) of
    Gather (the embedding), LSTM and MatMul."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint at WARNING
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["Gather", "LSTM", "MatMul"])
    finally:
        root.setLevel(level)


def run_export(config: ExportConfig) -> ExportResult:
    """Export ``config.student`` to ``config.out_dir`` (see the module docstring)."""
    import onnx

    from student.sentence import load_student

    source = student_path(config.student)  # a shipped student by its short name too
    if is_onnx_student(source):
        raise UserError(f"{source}: already an ONNX export; give the torch student directory")
    if not source.is_dir():
        raise UserError(f"{source}: no such student directory")
    student = load_student(source, device="cpu")  # UserError when it is not a student directory
    saved = StudentDirectory(source)
    if student.config.architecture != "bilstm":
        raise UserError(f"{source}: architecture {student.config.architecture!r} cannot be exported")
    out = config.out_dir
    if out.exists() and not config.overwrite:
        raise UserError(f"{out} exists; give --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)

    state = {k: v.detach().cpu().float().numpy() for k, v in student.model.state_dict().items()}
    model = build_graph(student.config, state)
    reference = student.encode(list(CHECK_SENTENCES), batch_size=4)
    with atomic_output(out, directory=True) as tmp:  # an existing out (--overwrite) goes last
        fp32_path = tmp / (ONNX_MODEL if config.quantize == "none" else "model.fp32.onnx")
        onnx.save_model(model, str(fp32_path))
        if config.quantize == "int8":
            quantize_int8(fp32_path, tmp / ONNX_MODEL)
            fp32_path.unlink()
        shutil.copyfile(saved.tokenizer_path, tmp / TOKENIZER_NAME)
        meta = _meta(student.config, config.quantize, saved)
        atomic_write_json(tmp / ONNX_META, meta)
        vectors = OnnxStudent(tmp, threads=1).encode(list(CHECK_SENTENCES), batch_size=4)
        found = cosines(vectors, reference)
        if config.quantize == "none" and not found.min() > FP32_MIN_COSINE:
            raise UserError(f"the ONNX graph does not reproduce the torch student (min cosine "
                            f"{found.min():.6f} <= {FP32_MIN_COSINE}); nothing written")
        meta["check"] = {"against": "the torch student", "sentences": len(CHECK_SENTENCES),
                         "min_cosine": round(float(found.min()), 7),
                         "mean_cosine": round(float(found.mean()), 7)}
        atomic_write_json(tmp / ONNX_META, meta)
    return ExportResult(out=out, quantize=config.quantize, size_bytes=(out / ONNX_MODEL).stat().st_size,
                        min_cosine=float(found.min()), mean_cosine=float(found.mean()),
                        sentences=len(CHECK_SENTENCES))


def _meta(student: StudentConfig, quantize: str, source: StudentDirectory) -> dict[str, Any]:
    digest = sha256_file(source.weights_path)
    return {
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "model": ONNX_MODEL,
        "tokenizer": TOKENIZER_NAME,
        "max_length": student.max_length,
        "pad_token_id": student.pad_token_id,
        "dim": student.output_dim,
        "normalize": student.normalize,
        "quantize": quantize,
        "opset": OPSET,
        "inputs": {INPUT_IDS: "int64 (batch, length), padded with pad_token_id",
                   LENGTHS: "int64 (batch,), real tokens per row"},
        "output": {OUTPUT: "float32 (batch, dim)"},
        "student": {key: value for key, value in dataclasses.asdict(student).items()
                    if key not in ("dropout",)},
        "source": {"directory": str(source.path), "weights_sha256": digest},
    }
