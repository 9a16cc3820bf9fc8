"""Corpus readers: Wikipedia (dump, extracted text, hub), plain text, JSONL, Parquet, TSV/CSV.

Everything streams: documents become paragraphs, paragraphs become sentences (blingfire's
sentence splitter), sentences are normalised, filtered by length and de-duplicated. Bad bytes,
empty or overlong lines and markup leftovers are counted in :class:`CorpusStats`, never fatal.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import heapq
import itertools
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import blingfire
import numpy as np

from cache_tools.format import MANIFEST_NAME, WORK_DIR
from cache_tools.reader import ShardDirectory
from core.errors import UserError

WIKI_SAMPLE_NAME = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
HUB_WIKIPEDIA = ("wikimedia/wikipedia", "20231101.en")
TEXT_SUFFIXES = {".txt", ".raw", ".text", ""}
TABLE_SUFFIXES = {".tsv", ".csv"}
# Files a corpus directory may hold beside its data (documentation, metadata): not corpus text.
NON_CORPUS_SUFFIXES = {".md", ".json", ".yaml", ".yml", ".py", ".sh", ".html"}


def _is_corpus_file(path: Path) -> bool:
    name = path.name.upper()
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() not in NON_CORPUS_SUFFIXES
        and not name.startswith(("README", "LICENSE", "LICENCE"))
    )

# WikiText's escaped punctuation and Wikipedia markup that the dump parser leaves behind.
_WIKITEXT_ESCAPES = {" @-@ ": "-", " @,@ ": ",", " @.@ ": "."}
_HEADING = re.compile(r"^\s*=+[^=].*=+\s*$")
_BOLD_ITALIC = re.compile(r"'{2,}")
_MARKUP = re.compile(r"\{\{|\}\}|\[\[|\]\]|\{\||\|\}|<[a-zA-Z/][^>]*>|&[a-z]+;|^\s*[|!*#:;{]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")


@dataclass
class CorpusConfig:
    """Which corpus to read and how to turn it into sentences."""

    sources: list[str] = field(default_factory=lambda: ["wiki"])
    text_column: str | None = None
    min_words: int = 4
    max_words: int = 128
    limit: int | None = None
    max_line_chars: int = 1_000_000
    dedupe: bool = True
    # Files whose sentences are never kept (evaluation sets): every text field, normalised; or
    # complete shard directories, every sentence they hold (a corpus grown past them).
    exclude: list[str] = field(default_factory=list)
    # Interleave the --corpus sources in proportion to their size (else one after the other), so
    # that every prefix of the sentence list (and of the shards) samples all of them.
    mix_sources: bool = False

    def __post_init__(self) -> None:
        if self.min_words < 1 or self.max_words < self.min_words:
            raise UserError(
                f"--min-words ({self.min_words}) must be >= 1 and <= --max-words ({self.max_words})"
            )
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be positive, got {self.limit}")
        if not self.sources:
            raise UserError("no corpus given")
        if "wiki-hub" in self.sources and self.limit is None:
            raise UserError("--corpus wiki-hub streams all of Wikipedia: bound it with --limit N")
        if self.mix_sources and "wiki-hub" in self.sources:
            raise UserError("--mix-sources needs files (their sizes set the mix), not wiki-hub")


@dataclass
class CorpusStats:
    """What the reader saw and what it dropped, kept in the manifest."""

    files: int = 0
    documents: int = 0
    lines: int = 0
    sentences_seen: int = 0
    sentences_kept: int = 0
    empty_lines: int = 0
    invalid_utf8_lines: int = 0
    overlong_lines: int = 0
    markup_lines: int = 0
    binary_files: int = 0
    bad_records: int = 0
    too_short: int = 0
    too_long: int = 0
    duplicates: int = 0
    excluded: int = 0  # sentences of an --exclude file

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def bundled_wiki_sample() -> Path:
    """The real (shortened) Wikipedia dump that ships inside the gensim wheel."""
    import gensim

    path = Path(gensim.__file__).parent / "test" / "test_data" / WIKI_SAMPLE_NAME
    if not path.is_file():
        raise UserError(f"the bundled Wikipedia sample is missing from gensim ({path})")
    return path


def resolve_sources(sources: list[str]) -> list[str]:
    """Expand ``wiki`` and directories into concrete, sorted sources (deterministic order)."""
    return [path for group in resolve_groups(sources) for path in group]


def resolve_groups(sources: list[str]) -> list[list[str]]:
    """The concrete sources of each ``--corpus`` argument: ``wiki`` (and ``wiki-sample``) is
    the bundled sample dump on every machine, ``wiki-hub`` the hub stream (asked for by name
    only), a directory its corpus files in sorted order."""
    groups: list[list[str]] = []
    for source in sources:
        if source in ("wiki", "wiki-sample"):
            groups.append([str(bundled_wiki_sample())])
        elif source == "wiki-hub":
            groups.append([source])
        else:
            path = Path(source)
            if not path.exists():
                raise UserError(f"corpus path not found: {source}")
            if path.is_dir():
                files = sorted(p for p in path.rglob("*") if _is_corpus_file(p))
                if not files:
                    raise UserError(f"corpus directory holds no corpus files: {source}")
                groups.append([str(p) for p in files])
            else:
                groups.append([str(path)])
    return groups


def describe_sources(sources: list[str]) -> list[dict[str, object]]:
    """Name, size and mtime of each source: cheap input to the corpus fingerprint."""
    described: list[dict[str, object]] = []
    for source in sources:
        if source == "wiki-hub":
            described.append({"source": "/".join(HUB_WIKIPEDIA)})
        else:
            stat = Path(source).stat()
            described.append({"source": os.path.abspath(source), "bytes": stat.st_size,
                              "mtime": int(stat.st_mtime)})
    return described


def normalize_sentence(text: str) -> str:
    """NFC Unicode, no control characters, WikiText escapes undone, single spaces."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    for escaped, plain in _WIKITEXT_ESCAPES.items():
        text = text.replace(escaped, plain)
    return " ".join(text.split())


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph, by blingfire's trained sentence boundary model."""
    if not paragraph.strip():
        return []
    return [s for s in blingfire.text_to_sentences(paragraph).split("\n") if s.strip()]


class KeySet:
    """Exact-duplicate memory in about 8 bytes a sentence (a 64-bit hash), whatever the corpus
    size: a sorted uint64 array, plus a small set of recent keys merged into it when full."""

    def __init__(self, keys: Iterable[int] = (), buffer: int = 1 << 18):
        self._sorted = np.zeros(0, dtype=np.uint64)
        self._recent: set[int] = set()
        self._buffer = buffer
        for key in keys:
            self.add(key)

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def __contains__(self, key: int) -> bool:
        if key in self._recent:
            return True
        at = int(np.searchsorted(self._sorted, np.uint64(key)))
        return at < len(self._sorted) and int(self._sorted[at]) == key

    def add(self, key: int) -> None:
        self._recent.add(key)
        if len(self._recent) >= self._buffer:
            recent = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
            self._sorted = np.union1d(self._sorted, recent)
            self._recent.clear()


def sentence_key(sentence: str) -> int:
    """The 64-bit hash that duplicates and exclusions are decided by."""
    return int.from_bytes(hashlib.blake2b(sentence.encode(), digest_size=8).digest(), "little")


def is_shard_directory(path: str | Path) -> bool:
    """A complete shard directory (``pipeline encode``'s output: its manifest is written last)."""
    return (Path(path) / MANIFEST_NAME).is_file()


def exclusion_sources(paths: list[str]) -> list[str]:
    """The ``--exclude`` arguments as concrete sources: a shard directory stays one source, any
    other directory becomes its corpus files (as ``--corpus`` expands it)."""
    for path in paths:
        if (Path(path) / WORK_DIR).is_dir() and not is_shard_directory(path):
            raise UserError(f"--exclude {path}: an unfinished shard directory (no manifest yet); "
                            "finish its encode first")
    return [source for path in paths
            for source in ([path] if is_shard_directory(path) else resolve_sources([path]))]


def exclusion_keys(paths: list[str]) -> KeySet:
    """Keys of every sentence of the given files (evaluation sets, never to be trained on).
    Every text field counts: each cell of a .tsv/.csv row, each string of a .jsonl record or a
    .parquet file, each line of any other file; normalised as corpus sentences are, both whole
    and split into sentences. A shard directory gives the sentences it holds: encoding the same
    corpus again with it excluded continues its sentence list (``--limit`` counting the new ones)."""
    keys = KeySet()
    for path in exclusion_sources(paths):
        if is_shard_directory(path):
            shards = ShardDirectory(path)
            for index in range(len(shards.manifest.shards)):
                for text in shards.read(index, with_text=True).texts:
                    keys.add(sentence_key(normalize_sentence(text)))
            continue
        reader = CorpusReader(CorpusConfig(sources=[path]))
        for text in reader.fields(Path(path)):
            for piece in [text, *split_sentences(text)]:
                sentence = normalize_sentence(piece)
                if sentence:
                    keys.add(sentence_key(sentence))
    return keys


class CorpusReader:
    """Streams sentences from the configured sources; ``stats`` fills in as it goes."""

    def __init__(self, config: CorpusConfig):
        self.config = config
        self.groups = resolve_groups(config.sources)
        self.sources = [path for group in self.groups for path in group]
        self.stats = CorpusStats()

    def __iter__(self) -> Iterator[str]:
        seen = KeySet()
        excluded = exclusion_keys(self.config.exclude) if self.config.exclude else KeySet()
        for paragraph in self._paragraphs():
            for raw in split_sentences(paragraph):
                self.stats.sentences_seen += 1
                sentence = normalize_sentence(raw)
                n_words = len(sentence.split())
                if n_words < self.config.min_words:
                    self.stats.too_short += 1
                    continue
                if n_words > self.config.max_words:
                    self.stats.too_long += 1
                    continue
                key = sentence_key(sentence)
                if key in excluded:
                    self.stats.excluded += 1
                    continue
                if self.config.dedupe:
                    if key in seen:
                        self.stats.duplicates += 1
                        continue
                    seen.add(key)
                self.stats.sentences_kept += 1
                yield sentence
                if self.config.limit is not None and self.stats.sentences_kept >= self.config.limit:
                    return

    # -- paragraphs -----------------------------------------------------------------------
    def _paragraphs(self) -> Iterator[str]:
        streams = [self._group_paragraphs(group) for group in self.groups]
        if not self.config.mix_sources or len(streams) == 1:
            yield from itertools.chain.from_iterable(streams)
            return
        # Take next from the source that is least far through its text (characters read over its
        # size in bytes): a deterministic interleave that keeps the sources' proportions.
        sizes = [max(sum(Path(p).stat().st_size for p in group), 1) for group in self.groups]
        heap = [(0.0, index) for index in range(len(streams))]
        while heap:
            progress, index = heapq.heappop(heap)
            paragraph = next(streams[index], None)
            if paragraph is not None:
                yield paragraph
                heapq.heappush(heap, (progress + (len(paragraph) + 1) / sizes[index], index))

    def _group_paragraphs(self, group: list[str]) -> Iterator[str]:
        for source in group:
            self.stats.files += 1
            try:
                yield from self._clean_lines(self._texts(source))
            except (OSError, EOFError) as exc:  # a corrupt .gz/.bz2, an unreadable file
                raise UserError(f"{source}: cannot read ({exc})") from None

    def _texts(self, source: str) -> Iterator[str]:
        """The documents of one source, by its kind."""
        if source == "wiki-hub":
            return self._hub_wikipedia()
        path = Path(source)
        name = path.name.lower()
        if ".xml" in name and ("pages-articles" in name or name.endswith((".xml", ".xml.bz2"))):
            return self._wiki_dump(path)
        if path.suffix.lower() == ".jsonl" or name.endswith(".jsonl.gz"):
            return self._jsonl(path)
        if path.suffix.lower() == ".parquet":
            return self._parquet(path)
        if path.suffix.lower() in TABLE_SUFFIXES:
            return self._table(path)
        return self._text_file(path)

    def fields(self, path: Path) -> Iterator[str]:
        """Every text field of a file, whatever its columns (``exclusion_keys``)."""
        suffix = path.suffix.lower()
        if suffix in TABLE_SUFFIXES:
            for row in self._csv_rows(path):
                yield from row
        elif suffix == ".jsonl" or path.name.lower().endswith(".jsonl.gz"):
            for line in self._decoded_lines(path):
                try:
                    yield from _strings(json.loads(line))
                except json.JSONDecodeError:
                    continue
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            for column in table.columns:
                yield from (v for v in column.to_pylist() if isinstance(v, str))
        else:
            for text in self._texts(str(path)):
                yield from text.splitlines()

    def _clean_lines(self, texts: Iterator[str]) -> Iterator[str]:
        """Split documents into lines and drop empty, overlong and markup lines (counted)."""
        for text in texts:
            self.stats.documents += 1
            for line in text.splitlines() or [""]:
                self.stats.lines += 1
                if not line.strip():
                    self.stats.empty_lines += 1
                elif len(line) > self.config.max_line_chars:
                    self.stats.overlong_lines += 1
                elif _HEADING.match(line) or _MARKUP.search(line):
                    self.stats.markup_lines += 1
                else:
                    yield _BOLD_ITALIC.sub("", line)

    def _open_binary(self, path: Path):
        if path.suffix == ".bz2":
            return bz2.open(path, "rb")
        if path.suffix == ".gz":
            return gzip.open(path, "rb")
        return open(path, "rb")

    def _is_binary(self, path: Path) -> bool:
        with self._open_binary(path) as handle:
            head = handle.read(8192)
        if b"\x00" in head:
            self.stats.binary_files += 1
            return True
        return False

    def _decoded_lines(self, path: Path) -> Iterator[str]:
        """Lines as str; invalid UTF-8 is replaced and counted, overlong lines skipped unread."""
        if self._is_binary(path):
            return
        limit = self.config.max_line_chars * 4 + 1  # bytes: a UTF-8 char is at most 4 bytes
        with self._open_binary(path) as handle:
            while True:
                raw = handle.readline(limit)
                if not raw:
                    return
                if len(raw) >= limit and not raw.endswith(b"\n"):
                    self.stats.overlong_lines += 1
                    while raw and not raw.endswith(b"\n"):  # drain the rest of the line
                        raw = handle.readline(limit)
                    continue
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.stats.invalid_utf8_lines += 1
                    yield raw.decode("utf-8", errors="replace")

    def _text_file(self, path: Path) -> Iterator[str]:
        in_doc_tags = False  # WikiExtractor output wraps articles in <doc ...> ... </doc>
        for line in self._decoded_lines(path):
            stripped = line.strip()
            if stripped.startswith("<doc ") or stripped == "</doc>":
                in_doc_tags = True
                continue
            yield line.rstrip("\r\n") if not in_doc_tags or stripped else ""

    def _wiki_dump(self, path: Path) -> Iterator[str]:
        from gensim.corpora.wikicorpus import extract_pages, filter_wiki

        with self._open_binary(path) as handle:
            pages = extract_pages(handle, filter_namespaces=("0",))
            while True:
                try:
                    _title, text, _pageid = next(pages)
                except StopIteration:
                    return
                except (ValueError, SyntaxError, EOFError, OSError) as exc:  # ParseError is a SyntaxError
                    raise UserError(f"{path}: not a MediaWiki XML dump ({exc})") from None
                if text and not text.lstrip().lower().startswith("#redirect"):
                    yield filter_wiki(text)

    def _hub_wikipedia(self) -> Iterator[str]:
        try:
            import datasets
        except ImportError:
            raise UserError("streaming Wikipedia from the hub needs `pip install datasets`") from None
        stream = datasets.load_dataset(*HUB_WIKIPEDIA, split="train", streaming=True)
        for record in stream:
            yield record["text"]

    def _columns(self) -> list[str]:
        """``--text-column`` candidates, e.g. ``Sentence,0``: each file uses the first that fits."""
        return [c.strip() for c in (self.config.text_column or "text").split(",") if c.strip()]

    def _record_text(self, record: object, columns: list[str]) -> str | None:
        if isinstance(record, dict):
            for column in columns:
                if isinstance(record.get(column), str):
                    return record[column]
        self.stats.bad_records += 1
        return None

    def _jsonl(self, path: Path) -> Iterator[str]:
        columns = self._columns()
        for line in self._decoded_lines(path):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                self.stats.bad_records += 1
                continue
            text = self._record_text(record, columns)
            if text is not None:
                yield text

    def _parquet(self, path: Path) -> Iterator[str]:
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise UserError(f"{path}: not a readable Parquet file ({exc})") from None
        column = next((c for c in self._columns() if c in parquet.schema_arrow.names), None)
        if column is None:
            column = self._columns()[0]
            raise UserError(
                f"{path}: no column {column!r} (columns: {', '.join(parquet.schema_arrow.names)});"
                " pass --text-column"
            )
        for batch in parquet.iter_batches(columns=[column], batch_size=4096):
            for text in batch.column(0).to_pylist():
                if isinstance(text, str):
                    yield text
                else:
                    self.stats.bad_records += 1

    def _csv_rows(self, path: Path) -> Iterator[list[str]]:
        """The rows of a .tsv/.csv file (a leading BOM dropped)."""
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        # Wikipedia-derived TSVs contain unbalanced quotes: read them with quoting off.
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        lines = (line.lstrip("\ufeff") for line in self._decoded_lines(path))
        return csv.reader(lines, delimiter=delimiter, quoting=quoting)

    def _table(self, path: Path) -> Iterator[str]:
        if self.config.text_column is None:
            raise UserError(f"{path}: a .tsv/.csv corpus needs --text-column (a name or 0-based index)")
        columns = self._columns()
        rows = self._csv_rows(path)
        first = next(rows, None)
        if first is None:
            return
        named = next((c for c in columns if not c.isdigit() and c in first), None)
        if named is not None:
            index = first.index(named)  # a header row: skip it
        else:
            number = next((c for c in columns if c.isdigit()), None)
            if number is None:
                raise UserError(f"{path}: no column {', '.join(map(repr, columns))} "
                                f"(header: {', '.join(first)})")
            index = int(number)
            rows = itertools.chain([first], rows)  # no header: the first row is data
        for row in rows:
            if len(row) > index:
                yield row[index]
            else:
                self.stats.bad_records += 1


def _strings(value: object) -> Iterator[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
