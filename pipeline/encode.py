"""Stage one: stream a corpus through the teacher and write sharded sentence vectors.

The run has three steps, each resumable:

1. plan: read the corpus into ``.work/plan.arrow`` (id, text). The shard plan is a pure function of
   the corpus and settings: shard ``i`` holds ids ``[i * shard_size, (i + 1) * shard_size)``.
2. shards: tokenize and encode each missing shard, write it to a temporary name and rename it;
   a receipt (rows, bytes, sha256) goes to ``.work/`` once the shard is in place
   (``cache_tools.sharded_map``, shared with glue-eval's teacher-logit cache).
3. manifest: written last, from the receipts; its presence means "complete".
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
from filelock import FileLock, Timeout
from tqdm import tqdm

from cache_tools.format import (
    AUGMENT_FILE,
    CONTEXTUAL_FILE,
    DTYPES,
    EMBEDDINGS_FILE,
    FORMATS,
    LOCK_NAME,
    MANIFEST_NAME,
    OOD_DIR,
    TOKENIZER_DIR,
    WORK_DIR,
    parse_shard_name,
)
from cache_tools.manifest import Manifest, read_manifest, write_manifest
from cache_tools.sharded_map import PreparedShard, ShardedMap
from core.distributed import LONG_WAIT, DistContext, init_distributed
from core.errors import UserError
from core.io import (
    atomic_output,
    atomic_write_json,
    fingerprint,
    is_temporary,
    remove,
    remove_leftovers,
    sha256_file,
)
from core.teacher import LAST_LAYER, Teacher
from core.teacher_onnx import check_backend
from data.augment import augment_corpus
from data.corpus import CorpusConfig, CorpusReader, describe_sources, resolve_sources

PLAN_NAME = "plan.arrow"
# Temporary names: write_shard's ``*.tmp-<pid>``, atomic_write_bytes' ``.*.tmp``, ``*.tmp`` here.
RUN_NAME = "run.json"


@dataclass
class EncodeConfig:
    """Everything `pipeline encode` needs."""

    out: Path
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    teacher: str | None = None
    pooling: str | None = None
    layer: int = LAST_LAYER
    max_length: int | None = None
    format: str = "arrow"
    shard_size: int = 20_000
    dtype: str = "float16"
    batch_size: int = 64
    # token budget of a batch; None: the teacher's default for the device (512 on CPU, where small
    # batches run faster per token, 16384 on GPU; benchmarks/encode_throughput.py)
    max_tokens: int | None = None
    device: str = "auto"
    # what runs the teacher: "auto" = onnx on CPU (same vectors, faster), torch on CUDA
    teacher_backend: str = "auto"
    overwrite: bool = False
    progress: bool = True
    command: str = ""
    # Out-of-domain sentences (e.g. GLUE dev sentences) encoded into OUT/ood, never trained on:
    # train-student reports the student's cosine to the teacher on them.
    ood: list[str] = field(default_factory=list)
    ood_text_column: str | None = None
    ood_limit: int = 2000
    is_ood: bool = False  # set internally: this run writes the OUT/ood of another run
    # N teacher-encoded variants of every sentence (masked, word-dropped, n-gram sampled words).
    augment: int = 0

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.format not in FORMATS:
            raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.augment < 0:
            raise UserError(f"--augment must be 0 or more, got {self.augment}")
        check_backend(self.teacher_backend)
        for name in ("shard_size", "batch_size", "max_tokens", "ood_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")


@dataclass
class EncodeResult:
    manifest: Manifest
    encoded_rows: int
    encoded_tokens: int
    encode_seconds: float  # the teacher loop alone
    total_seconds: float
    rank: int = 0

    def summary(self) -> str:
        m = self.manifest
        seconds = max(self.encode_seconds, 1e-9)
        return (
            f"{m.num_rows} sentences ({m.num_tokens} tokens) in {len(m.shards)} shards, "
            f"{m.num_bytes / 1e6:.1f} MB; this run encoded {self.encoded_rows} sentences at "
            f"{self.encoded_rows / seconds:.1f} sent/s, {self.encoded_tokens / seconds:.0f} tok/s "
            f"({self.total_seconds:.1f}s in all); dropped: "
            f"{_drop_counts(m.corpus.get('stats', {})) or 'nothing'}"
        )


# -- plan -----------------------------------------------------------------------------------
PLAN_BATCH_ROWS = 65_536  # the plan is written in record batches: the corpus is never in memory


def _resolved_corpus(config: EncodeConfig) -> CorpusConfig:
    """The corpus, after checking that its sources resolve (paths exist, directories hold files)."""
    resolve_sources(config.corpus.sources)
    return config.corpus


def _resolve_or_refusal(config: EncodeConfig) -> tuple[CorpusConfig | None, str | None]:
    """The resolved corpus, or why it cannot be resolved (sent to every rank either way)."""
    try:
        return _resolved_corpus(config), None
    except UserError as exc:
        return None, str(exc)


def _corpus_key(corpus: CorpusConfig) -> dict:
    """What determines the sentence list: the sources (paths, sizes, mtimes), the excluded files
    (by content) and reader settings. Settings added later join the key only when set, so that
    directories written before them still resume."""
    key = asdict(corpus)
    key["sources"] = describe_sources(resolve_sources(corpus.sources))
    key.pop("exclude"), key.pop("mix_sources")
    if corpus.exclude:
        key["exclude"] = [{"source": os.path.abspath(path), "sha256": sha256_file(Path(path))}
                          for path in resolve_sources(corpus.exclude)]
    if corpus.mix_sources:
        key["mix_sources"] = True
    return key


class _StreamingFingerprint:
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
    ``corpus`` has its sources resolved (``_resolved_corpus``). With ``augment`` N, every
    sentence is followed by N variants of it and a ``source_id`` column names each row's source."""
    key = _corpus_key(corpus)
    if augment:  # only then: the plans (and fingerprints) of runs without it stay as they were
        key["augment"] = {"variants": augment, "mask_token": mask_token}
    key_fp = fingerprint(key)
    plan_path, info_path = work / PLAN_NAME, work / "plan.json"
    if plan_path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("key_fingerprint") == key_fp:
            return _read_plan(plan_path), info
    reader = CorpusReader(corpus)
    sentences = tqdm(reader, desc="reading corpus", unit=" sent", disable=not progress)
    fingerprint_of = _StreamingFingerprint()
    with atomic_output(plan_path) as tmp:
        num_rows = _write_plan(tmp, _fingerprinted(sentences, fingerprint_of), augment, mask_token)
    if not reader.stats.sentences_kept:
        remove(plan_path)
        raise UserError(
            f"the corpus yielded no sentences ({_describe_drops(reader.stats.as_dict())})"
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


def _fingerprinted(texts: Iterator[str], fingerprint_of: _StreamingFingerprint) -> Iterator[str]:
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
        chunks = ((chunk, None) for chunk in iter(lambda: list(itertools.islice(texts, PLAN_BATCH_ROWS)), []))
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


def _drop_counts(stats: dict) -> str:
    """The reader's skip and filter counts that are not zero: ``binary_files=1, too_short=3``."""
    counters = {"files", "documents", "lines", "sentences_seen", "sentences_kept"}
    return ", ".join(f"{k}={v}" for k, v in stats.items() if v and k not in counters)


def _describe_drops(stats: dict) -> str:
    """Why nothing was kept, with a hint when records lacked the text field."""
    hint = "; is --text-column right?" if stats.get("bad_records") else ""
    return (_drop_counts(stats) or "empty input") + hint


# -- run ------------------------------------------------------------------------------------
def run_encode(config: EncodeConfig, ctx: DistContext | None = None) -> EncodeResult:
    """Encode the corpus into ``config.out``; resumes an interrupted run of the same settings.

    Under torchrun every rank runs this: rank 0 reads the corpus and writes the manifest, and
    rank r encodes the shards i with ``i % world_size == r``.
    """
    ctx = ctx or init_distributed(timeout=LONG_WAIT)  # the others wait while rank 0 plans
    config.out.mkdir(parents=True, exist_ok=True)
    # The group's rank 0 holds the lock: a second run (or group) on this directory is refused.
    lock = FileLock(str(config.out / LOCK_NAME))
    locked = True
    if ctx.is_main:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            locked = False
    if not ctx.all_ok(locked):
        raise UserError(f"{config.out} is locked by another `pipeline encode` run")
    try:
        return _run_locked(config, ctx)
    finally:
        if ctx.is_main:
            lock.release()


def _run_locked(config: EncodeConfig, ctx: DistContext, teacher: Teacher | None = None) -> EncodeResult:
    started = time.perf_counter()
    out, work = config.out, config.out / WORK_DIR
    teacher = teacher or Teacher(config.teacher, config.pooling, config.layer, config.max_length,
                                 ctx.device(config.device), backend=config.teacher_backend)
    # Rank 0 resolves the sources (`wiki` is a network probe) and every rank uses its answer.
    corpus, refusal = ctx.broadcast(_resolve_or_refusal(config) if ctx.is_main else None)
    if refusal is not None:
        raise UserError(refusal)
    spec = teacher.spec
    settings = {
        **spec.identity(),  # the vectors' space: a different teacher never resumes this directory
        "dtype": config.dtype,
        "format": config.format,
        "shard_size": config.shard_size,
        "corpus": _corpus_key(corpus),
    }
    if config.augment:  # only then, so that directories written before --augment existed resume
        settings["augment"] = config.augment
    settings_fp = fingerprint(settings)
    # Rank 0 decides what the directory holds and reads the corpus; the others load its plan.
    failure: UserError | None = None
    if ctx.is_main:
        try:
            _claim_directory(out, work, settings_fp, config.overwrite)
            build_plan(corpus, work, config.progress, config.augment, teacher.tokenizer.mask_token)
            _write_sidecars(out, teacher, contextual=not config.is_ood)
        except UserError as exc:
            failure = exc
    if not ctx.all_ok(failure is None):
        raise failure or UserError("rank 0 refused the run; see its message")
    plan, plan_info = build_plan(corpus, work, config.progress, config.augment,
                                 teacher.tokenizer.mask_token)  # rank 0: its cached plan
    shards = ShardedMap(out, plan.num_rows, config.shard_size, config.format, config.dtype)
    # each shard names its teacher and settings too (verify checks the fingerprint)
    shard_meta = {"settings_fingerprint": settings_fp, **spec.manifest_fields(),
                  "dtype": config.dtype, "num_shards": shards.num_shards}
    todo = shards.todo(ctx)
    my_rows = shards.rows_of(shards.mine(ctx))
    texts = plan.column("text")

    def prepare(lo: int, hi: int) -> PreparedShard:
        shard_text = texts.slice(lo, hi - lo).to_pylist()
        return PreparedShard(shard_text, teacher.tokenize(shard_text))

    def compute(index: int, prepared: PreparedShard) -> np.ndarray:
        vectors = teacher.encode_tokenized(prepared.token_ids, config.batch_size,
                                           config.max_tokens, on_batch=progress.update)
        _check_finite(vectors, config.dtype, shards.bounds(index)[0], shards.name(index))
        return vectors

    progress = _Progress(my_rows, my_rows - shards.rows_of(todo), config.progress and ctx.is_main)
    encoded = shards.run(ctx, prepare, compute, shard_meta)
    progress.bar.close()
    encode_seconds = time.perf_counter() - progress.started
    ctx.barrier()  # every rank's shards are in place
    ood = _encode_ood(config, teacher, ctx) if config.ood else {}
    if ctx.is_main:
        augment = _write_sources(config.out, plan, config.augment) if config.augment else {}
        _write_final_manifest(config, teacher, settings_fp, plan_info, shards, started, ood,
                              augment)
    ctx.barrier()
    return EncodeResult(read_manifest(out), encoded, progress.tokens, encode_seconds,
                        time.perf_counter() - started, ctx.rank)


def _encode_ood(config: EncodeConfig, teacher: Teacher, ctx: DistContext) -> dict:
    """The out-of-domain sentences, encoded like the corpus into OUT/ood (a complete shard
    directory of its own, resumable, written before the main manifest)."""
    corpus = CorpusConfig(sources=list(config.ood), text_column=config.ood_text_column,
                          min_words=config.corpus.min_words, max_words=config.corpus.max_words,
                          limit=config.ood_limit)
    ood_config = replace(config, out=config.out / OOD_DIR, corpus=corpus, ood=[],
                         shard_size=config.ood_limit, is_ood=True, augment=0)
    (config.out / OOD_DIR).mkdir(exist_ok=True)
    result = _run_locked(ood_config, ctx, teacher)
    m = result.manifest
    return {"dir": OOD_DIR, "num_rows": m.num_rows, "settings_fingerprint": m.settings_fingerprint,
            "sources": [s["source"] for s in m.corpus.get("sources", [])]}


def _write_sources(out: Path, plan: pa.Table, variants: int) -> dict:
    """The source row of every row (``--augment``), beside the shards; its manifest entry."""
    sources = plan.column("source_id").to_numpy().astype(np.int64)
    _save_npy(out / AUGMENT_FILE, sources)
    return {"variants": variants, "file": AUGMENT_FILE, "sha256": sha256_file(out / AUGMENT_FILE)}


def _write_final_manifest(config: EncodeConfig, teacher: Teacher, settings_fp: str,
                          plan_info: dict, shards: ShardedMap, started: float, ood: dict,
                          augment: dict) -> None:
    infos = shards.receipts()
    contextual = config.out / CONTEXTUAL_FILE
    spec = teacher.spec
    manifest = Manifest(
        **spec.manifest_fields(),
        dtype=config.dtype,
        format=config.format,
        corpus={**plan_info["corpus"], "stats": plan_info["stats"]},
        corpus_fingerprint=plan_info["corpus_fingerprint"],
        settings_fingerprint=settings_fp,
        shards=infos,
        num_rows=plan_info["num_rows"],
        num_tokens=sum(i.num_tokens for i in infos),
        num_bytes=sum(i.num_bytes for i in infos),
        command=config.command,
        vocab_size=int(teacher.tokenizer.vocab_size),
        embedding_dim=int(teacher.model.get_input_embeddings().weight.shape[1]),
        contextual_file=CONTEXTUAL_FILE if contextual.is_file() else "",
        contextual_sha256=sha256_file(contextual) if contextual.is_file() else "",
        ood=ood,
        augment=augment,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        encode_seconds=round(time.perf_counter() - started, 2),
        # information only: both backends make the same vectors, so it is not in the settings
        extra={"teacher_backend": teacher.backend},
    )
    write_manifest(config.out, manifest)


class _Progress:
    """A sentences bar that also shows tokens/s of this run."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = tqdm(total=total, initial=initial, unit=" sent", desc="encoding",
                        disable=not enabled, dynamic_ncols=True)
        self.tokens = 0
        self.started = time.perf_counter()

    def update(self, sentences: int, tokens: int) -> None:
        self.tokens += tokens
        self.bar.update(sentences)
        rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix(tok_s=f"{rate:.0f}", refresh=False)


def _check_finite(vectors: np.ndarray, dtype: str, first_id: int, name: str) -> None:
    """Refuse to store NaN/Inf vectors (from the teacher, or a float16 overflow): they would
    poison every student trained on the shard."""
    with np.errstate(over="ignore"):
        finite = np.isfinite(vectors.astype(dtype)).all(axis=1)
    if finite.all():
        return
    bad = np.flatnonzero(~finite)
    hint = ("; they overflow float16: pass --dtype float32" if np.isfinite(vectors).all()
            else "; check the teacher and --device")
    raise UserError(f"{name}: NaN or Inf teacher vectors for {len(bad)} of {len(finite)} "
                    f"sentences (first id {first_id + int(bad[0])}){hint}")


def _claim_directory(out: Path, work: Path, settings_fp: str, overwrite: bool) -> None:
    """Refuse to mix runs in one directory; ``overwrite`` clears what another run left."""
    run_path = work / RUN_NAME
    previous = json.loads(run_path.read_text())["settings_fingerprint"] if run_path.is_file() else None
    if previous is None and (out / MANIFEST_NAME).is_file():
        previous = read_manifest(out).settings_fingerprint
    foreign = previous is None and any(parse_shard_name(p.name) for p in out.iterdir())
    if (previous not in (None, settings_fp) or foreign) and not overwrite:
        raise UserError(
            f"{out} holds shards from a different teacher, corpus or settings; "
            "choose another --out or pass --overwrite to replace them"
        )
    if previous != settings_fp:
        _clear(out)
    work.mkdir(parents=True, exist_ok=True)
    # Half-written files of a killed run: never under a final name, and the lock says none is live.
    remove_leftovers(out)
    remove_leftovers(work)
    atomic_write_json(run_path, {"settings_fingerprint": settings_fp})


def _clear(out: Path) -> None:
    for path in out.iterdir():
        if parse_shard_name(path.name) or is_temporary(path.name) \
                or path.name in {MANIFEST_NAME, EMBEDDINGS_FILE, CONTEXTUAL_FILE, AUGMENT_FILE, WORK_DIR,
                                 TOKENIZER_DIR, OOD_DIR}:
            remove(path)


def _write_sidecars(out: Path, teacher: Teacher, contextual: bool = True) -> None:
    """Tokenizer files and the embedding matrices (input; contextual unless ``contextual`` is
    False): what stage two needs instead of the teacher. A rerun of encode on a directory written
    before the contextual matrix existed adds it."""
    tokenizer_dir = out / TOKENIZER_DIR
    if not (tokenizer_dir / "tokenizer.json").is_file():
        with atomic_output(tokenizer_dir, directory=True) as tmp:
            teacher.save_tokenizer(tmp)
    if not (out / EMBEDDINGS_FILE).is_file():
        _save_npy(out / EMBEDDINGS_FILE, teacher.input_embeddings())
    if contextual and not (out / CONTEXTUAL_FILE).is_file():
        _save_npy(out / CONTEXTUAL_FILE, teacher.contextual_embeddings())


def _save_npy(path: Path, matrix: np.ndarray) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:  # a handle: np.save adds no suffix
        np.save(handle, matrix)
