"""Step one, the plan: the corpus read once into ``.work/plan.arrow`` (id, text[, source_id]),
and the corpus key that says when a plan (and a shard directory) can be reused.

``corpus_key`` and ``StreamingFingerprint`` feed the settings and corpus fingerprints: a change
to what they produce makes every existing shard directory start over instead of resuming.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from cache_tools.format import MANIFEST_NAME
from core.errors import UserError
from core.io import atomic_output, atomic_write_json, fingerprint, remove, sha256_file
from core.progress import bar
from data.augment import augment_corpus
from data.corpus import (
    CorpusConfig,
    CorpusReader,
    describe_sources,
    exclusion_sources,
    is_shard_directory,
    resolve_sources,
)

PLAN_NAME = "plan.arrow"
PLAN_BATCH_ROWS = 65_536  # the plan is written in record batches: the corpus is never in memory


def resolved_corpus(corpus: CorpusConfig) -> CorpusConfig:
    """The corpus, after checking that its sources resolve (paths exist, directories hold files)."""
    resolve_sources(corpus.sources)
    return corpus


def corpus_key(corpus: CorpusConfig) -> dict:
    """What determines the sentence list: the sources (paths, sizes, mtimes), the excluded files
    (by content) and reader settings. Settings added later join the key only when set, so that
    directories written before them still resume."""
    key = asdict(corpus)
    key["sources"] = describe_sources(resolve_sources(corpus.sources))
    key.pop("exclude"), key.pop("mix_sources")
    if corpus.exclude:
        # a shard directory by its manifest, which holds every shard's sha256
        key["exclude"] = [{"source": os.path.abspath(path),
                           "sha256": sha256_file(Path(path) / MANIFEST_NAME
                                                 if is_shard_directory(path) else Path(path))}
                          for path in exclusion_sources(corpus.exclude)]
    if corpus.mix_sources:
        key["mix_sources"] = True
    return key


class StreamingFingerprint:
    """``core.io.fingerprint`` of a list of strings, fed one string at a time."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256(b"[")
        self._first = True

    def add(self, text: str) -> None:
        self._digest.update((json.dumps(text) if self._first else ", " + json.dumps(text)).encode())
        self._first = False

    def hexdigest(self) -> str:
        digest = self._digest.copy()
        digest.update(b"]")
        return digest.hexdigest()[:16]


def build_plan(corpus: CorpusConfig, work: Path, progress: bool, augment: int = 0,
               mask_token: str = "[MASK]") -> tuple[pa.Table, dict]:
    """The sentence list with ids, read once and kept in ``.work/plan.arrow`` for reruns;
    ``corpus`` has its sources resolved (``resolved_corpus``). With ``augment`` N, every
    sentence is followed by N variants of it and a ``source_id`` column names each row's source."""
    key = corpus_key(corpus)
    if augment:  # only then: the plans (and fingerprints) of runs without it stay as they were
        key["augment"] = {"variants": augment, "mask_token": mask_token}
    key_fp = fingerprint(key)
    plan_path, info_path = work / PLAN_NAME, work / "plan.json"
    if plan_path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("key_fingerprint") == key_fp:
            return _read_plan(plan_path), info
    reader = CorpusReader(corpus)
    sentences = bar(reader, desc="reading corpus", unit=" sent", enabled=progress)
    fingerprint_of = StreamingFingerprint()
    with atomic_output(plan_path) as tmp:
        num_rows = _write_plan(tmp, _fingerprinted(sentences, fingerprint_of), augment, mask_token)
    if not reader.stats.sentences_kept:
        remove(plan_path)
        raise UserError(
            f"the corpus yielded no sentences ({describe_drops(reader.stats.as_dict())})"
        )
    info = {
        "key_fingerprint": key_fp,
        "corpus": key,
        "stats": reader.stats.as_dict(),
        "corpus_fingerprint": fingerprint_of.hexdigest(),
        "num_rows": num_rows,
    }
    atomic_write_json(info_path, info)
    return _read_plan(plan_path), info


def _fingerprinted(texts: Iterator[str], fingerprint_of: StreamingFingerprint) -> Iterator[str]:
    for text in texts:
        fingerprint_of.add(text)
        yield text


def _read_plan(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _write_plan(path: Path, texts: Iterator[str], augment: int, mask_token: str) -> int:
    """Write (id, text[, source_id]) rows to an Arrow IPC file in record batches; the row count.
    With ``augment`` the corpus is read whole first (augmentation is for small corpora)."""
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())]
                       + ([("source_id", pa.int64())] if augment else []))
    if augment:
        rows, sources = augment_corpus(list(texts), augment, mask_token)
        chunks = [(rows, sources)]
    else:
        batches = iter(lambda: list(itertools.islice(texts, PLAN_BATCH_ROWS)), [])
        chunks = ((chunk, None) for chunk in batches)
    num_rows = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for rows, sources in chunks:
            columns = [pa.array(np.arange(num_rows, num_rows + len(rows), dtype=np.int64)),
                       pa.array(list(rows), pa.string())]
            if sources is not None:
                columns.append(pa.array(sources, pa.int64()))
            writer.write_batch(pa.record_batch(columns, schema=schema))
            num_rows += len(rows)
    return num_rows


def drop_counts(stats: dict[str, int]) -> str:
    """The reader's skip and filter counts that are not zero: ``binary_files=1, too_short=3``."""
    counters = {"files", "documents", "lines", "sentences_seen", "sentences_kept"}
    return ", ".join(f"{k}={v}" for k, v in stats.items() if v and k not in counters)


def describe_drops(stats: dict[str, int]) -> str:
    """Why nothing was kept, with a hint when records lacked the text field."""
    hint = "; is --text-column right?" if stats.get("bad_records") else ""
    return (drop_counts(stats) or "empty input") + hint
