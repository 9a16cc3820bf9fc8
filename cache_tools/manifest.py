"""``manifest.json``: the description of a complete shard directory, written last."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cache_tools.format import (
    EMBEDDINGS_FILE,
    FORMAT_VERSION,
    MANIFEST_NAME,
    TOKENIZER_DIR,
    ShardError,
)
from core.io import atomic_write_json, read_json_object

R = TypeVar("R")


@dataclass
class ShardInfo:
    """One shard's entry in the manifest."""

    name: str
    index: int
    num_rows: int
    first_id: int
    num_bytes: int
    sha256: str
    num_tokens: int = 0
    # What making it cost (absent before they were recorded): wall seconds, and CPU seconds of
    # the process that made it, from the previous shard's receipt (or the pass's start) to its own.
    # Summed over a directory they are the teacher pass's cost, however many runs it took.
    seconds: float | None = None
    cpu_seconds: float | None = None


@dataclass(frozen=True)
class PassCost:
    """What the timed shards of a directory cost to make, summed over their receipts: the whole
    pass however many runs or ranks made it (shards written before timings existed are left out)."""

    timed: int  # shards with timings
    rows: int  # their rows
    seconds: float  # wall, summed over the processes
    cpu_seconds: float


def pass_cost(shards: list[ShardInfo]) -> PassCost:
    timed = [s for s in shards if s.seconds is not None and s.cpu_seconds is not None]
    return PassCost(len(timed), sum(s.num_rows for s in timed), sum(s.seconds for s in timed),
                    sum(s.cpu_seconds for s in timed))


SENTENCE_VECTORS = "sentence_vectors"  # stage one: a corpus's sentence vectors
# the shard-format kd cache glue-eval wrote before cache_tools.logit_cache: still read and verified
TASK_LOGITS = "task_logits"


def _record(cls: type[R], raw: dict[str, Any], what: str) -> R:
    """``cls`` from its JSON object; keys this version does not know are ignored (as the
    manifest's own are), a missing one is a ShardError."""
    if not isinstance(raw, dict):
        raise ShardError(f"manifest has a malformed {what} entry (not an object)")
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in raw.items() if k in names})
    except TypeError as exc:
        raise ShardError(f"manifest has a malformed {what} entry ({exc})") from None


@dataclass
class SourceRecord:
    """One corpus source as the corpus key describes it: a path (or the hub's name), and for a
    file its size and mtime."""

    source: str
    bytes: int | None = None
    mtime: int | None = None

    def to_dict(self) -> dict[str, Any]:
        # a hub source has no size or mtime: absent, not null
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class CorpusRecord:
    """What the sentence list was read from: stage one's corpus key (its sources and the rest of
    it) and the reader's counters. A kd-logit cache (kind task_logits) has neither sources nor
    counters: its ``{"task", "split", "rows"}`` land in ``settings``."""

    sources: list[SourceRecord] = field(default_factory=list)
    # The rest of the corpus key, in its order (text_column, min_words, ..., and exclude,
    # mix_sources, augment when set). data.corpus owns these names; the shard format only
    # carries them, so a setting added there reaches the manifest without a change here.
    settings: dict[str, Any] = field(default_factory=dict)
    # The reader's counters by name (data.corpus.CorpusStats): a table, not fields, for the same
    # reason; a manifest written before a counter existed lacks it.
    stats: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # as stage one has always written it: the key (sources first), then "stats"
        sources = {"sources": [s.to_dict() for s in self.sources]} if self.sources else {}
        return {**sources, **self.settings, **({"stats": self.stats} if self.stats else {})}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CorpusRecord:
        settings = {k: v for k, v in raw.items() if k not in ("sources", "stats")}
        sources = [_record(SourceRecord, s, "corpus source") for s in raw.get("sources", [])]
        return cls(sources, settings, dict(raw.get("stats", {})))


@dataclass
class OodRecord:
    """The out-of-domain sentence set: a complete shard directory of its own under OUT/ood."""

    dir: str
    num_rows: int
    settings_fingerprint: str  # its manifest's: verify checks that the same run wrote both
    sources: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class AugmentRecord:
    """`encode --augment N`: the file of every row's source row, beside the shards."""

    variants: int
    file: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ExtraRecord:
    """Information only, in no identity or fingerprint."""

    # what ran the teacher (torch or onnx: the same vectors); None in a kd-logit cache and in
    # directories written before backends existed
    teacher_backend: str | None = None
    # a teacher below fp32 (`encode --teacher-precision bf16`): its vectors against the same
    # teacher's in fp32 on the corpus's first sentences, {"sentences", "min_cosine", "mean_cosine"}
    precision_check: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class Manifest:
    """Everything needed to use a shard directory without the teacher. ``kind`` says what the
    vectors are; the teacher fields always describe the model that made them."""

    teacher: str
    teacher_fingerprint: str
    tokenizer_fingerprint: str
    pooling: str
    layer: int
    normalize: bool
    dim: int
    dtype: str
    max_length: int
    format: str
    corpus: CorpusRecord
    corpus_fingerprint: str
    settings_fingerprint: str
    shards: list[ShardInfo]
    num_rows: int
    num_tokens: int
    num_bytes: int
    command: str
    # the teacher's arithmetic (core.device.PRECISIONS), part of the vectors' space; absent in
    # every manifest written before it was recorded, all of which are fp32
    precision: str = "fp32"
    vocab_size: int = 0
    embedding_dim: int = 0
    tokenizer_dir: str = TOKENIZER_DIR
    embeddings_file: str = EMBEDDINGS_FILE
    # Absent ("") in directories written before it existed: rerun the same encode command to add it.
    contextual_file: str = ""
    contextual_sha256: str = ""
    # `encode --ood-corpus`; None without (written as {}, as before the records)
    ood: OodRecord | None = None
    # `encode --augment N`; None without (written as {})
    augment: AugmentRecord | None = None
    created: str = ""
    encode_seconds: float = 0.0
    format_version: int = FORMAT_VERSION
    kind: str = SENTENCE_VECTORS  # absent in every manifest written before kinds existed
    extra: ExtraRecord = field(default_factory=ExtraRecord)

    def __post_init__(self) -> None:
        if isinstance(self.corpus, dict):  # evaluation.kd passes its task split as a plain dict
            self.corpus = CorpusRecord.from_dict(self.corpus)

    def to_dict(self) -> dict[str, Any]:
        raw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**raw, "corpus": self.corpus.to_dict(),
                "shards": [dataclasses.asdict(s) for s in self.shards],
                "ood": self.ood.to_dict() if self.ood else {},
                "augment": self.augment.to_dict() if self.augment else {},
                "extra": self.extra.to_dict()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in raw and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ShardError(f"manifest is missing fields: {', '.join(missing)}")
        data = {k: v for k, v in raw.items() if k in names}
        try:
            data["shards"] = [ShardInfo(**s) for s in raw["shards"]]
        except TypeError as exc:
            raise ShardError(f"manifest has a malformed shard entry ({exc})") from None
        if not isinstance(raw["corpus"], dict):
            raise ShardError("manifest has a malformed corpus entry (not an object)")
        data["corpus"] = CorpusRecord.from_dict(raw["corpus"])
        # {} (or absent, in older manifests) means none
        data["ood"] = _record(OodRecord, raw["ood"], "ood") if raw.get("ood") else None
        augment = raw.get("augment")
        data["augment"] = _record(AugmentRecord, augment, "augment") if augment else None
        data["extra"] = _record(ExtraRecord, raw.get("extra", {}), "extra")
        return cls(**data)


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    path = Path(directory) / MANIFEST_NAME
    atomic_write_json(path, manifest.to_dict())
    return path


def read_manifest(directory: str | Path) -> Manifest:
    """The manifest of a complete shard directory; ShardError with a clear message otherwise."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ShardError(f"{directory}: no such shard directory")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ShardError(
            f"{directory}: no {MANIFEST_NAME}; the encode run is incomplete "
            "(rerun the same `pipeline encode` command to finish it)"
        )
    raw = read_json_object(path, "a manifest", ShardError)
    if raw.get("format_version") != FORMAT_VERSION:
        raise ShardError(
            f"{path}: format version {raw.get('format_version')!r}, this tool reads {FORMAT_VERSION}"
        )
    return Manifest.from_dict(raw)
