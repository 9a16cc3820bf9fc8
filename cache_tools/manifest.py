"""``manifest.json``: the description of a complete shard directory, written last."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cache_tools.format import (
    EMBEDDINGS_FILE,
    FORMAT_VERSION,
    MANIFEST_NAME,
    TOKENIZER_DIR,
    ShardError,
)
from core.io import atomic_write_json, read_json_object


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


SENTENCE_VECTORS = "sentence_vectors"  # stage one: a corpus's sentence vectors
TASK_LOGITS = "task_logits"  # glue-eval's kd cache: a fine-tuned teacher's logits on a task


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
    corpus: dict[str, Any]
    corpus_fingerprint: str
    settings_fingerprint: str
    shards: list[ShardInfo]
    num_rows: int
    num_tokens: int
    num_bytes: int
    command: str
    vocab_size: int = 0
    embedding_dim: int = 0
    tokenizer_dir: str = TOKENIZER_DIR
    embeddings_file: str = EMBEDDINGS_FILE
    # Absent ("") in directories written before it existed: rerun the same encode command to add it.
    contextual_file: str = ""
    contextual_sha256: str = ""
    # The out-of-domain sentence set (a shard directory under OUT/ood): {"dir", "num_rows", ...}.
    ood: dict[str, Any] = field(default_factory=dict)
    # `encode --augment N`: {"variants": N, "file": AUGMENT_FILE, "sha256": ...}; empty without.
    augment: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    encode_seconds: float = 0.0
    format_version: int = FORMAT_VERSION
    kind: str = SENTENCE_VECTORS  # absent in every manifest written before kinds existed
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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
