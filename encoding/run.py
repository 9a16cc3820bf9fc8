"""A stage-one run from start to finish: lock and claim the directory, plan, encode the shards,
encode the out-of-domain set, write the manifest (last)."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from datetime import UTC, datetime

from cache_tools.format import CONTEXTUAL_FILE, OOD_DIR, WORK_DIR
from cache_tools.manifest import (
    AugmentRecord,
    CorpusRecord,
    ExtraRecord,
    Manifest,
    OodRecord,
    read_manifest,
    write_manifest,
)
from cache_tools.sharded_map import ShardedMap
from core.distributed import LONG_WAIT, DistContext, init_distributed
from core.errors import UserError
from core.io import fingerprint, sha256_file
from core.teacher import MIN_COSINE, Teacher, TeacherSpec
from data.corpus import CorpusConfig
from encoding.config import EncodeConfig, EncodeResult
from encoding.directory import claim_directory, directory_lock
from encoding.plan import build_plan, corpus_key, resolved_corpus
from encoding.shards import encode_shards
from encoding.sidecars import write_sidecars, write_sources

# A teacher below fp32 is compared with its fp32 self on this many of the corpus's first sentences
# (the manifest's extra.precision_check): about 20 CPU seconds for the MiniLM, 3 minutes for mpnet.
FIDELITY_SENTENCES = 1000


def run_encode(config: EncodeConfig, ctx: DistContext | None = None) -> EncodeResult:
    """Encode the corpus into ``config.out``; resumes an interrupted run of the same settings.

    Under torchrun every rank runs this: rank 0 reads the corpus and writes the manifest, and
    rank r encodes the shards i with ``i % world_size == r``.
    """
    ctx = ctx or init_distributed(timeout=LONG_WAIT)  # the others wait while rank 0 plans
    config.out.mkdir(parents=True, exist_ok=True)
    with directory_lock(config.out, ctx):
        return _run_locked(config, ctx)


def _run_locked(config: EncodeConfig, ctx: DistContext,
                teacher: Teacher | None = None) -> EncodeResult:
    started = time.perf_counter()
    teacher = teacher or Teacher(config.teacher, config.pooling, config.layer, config.max_length,
                                 ctx.device(config.device), backend=config.teacher_backend,
                                 precision=config.teacher_precision)
    if config.augment and not teacher.tokenizer.mask_token:  # what masked words become
        raise UserError(f"--augment needs a teacher with a mask token; {teacher.name!r} has none")
    corpus = _agreed_corpus(config, ctx)
    settings_fp = fingerprint(_settings(config, teacher.spec, corpus))
    # Rank 0 decides what the directory holds and reads the corpus; the others load its plan.
    ctx.main_first(lambda: _prepare_directory(config, teacher, corpus, settings_fp))
    plan, plan_info = build_plan(corpus, config.out / WORK_DIR, config.progress, config.augment,
                                 teacher.tokenizer.mask_token)  # rank 0: its cached plan
    shards = ShardedMap(config.out, plan.num_rows, config.shard_size, config.format, config.dtype)
    # each shard names its teacher and settings too (verify checks the fingerprint)
    metadata = {"settings_fingerprint": settings_fp, **teacher.spec.manifest_fields(),
                "dtype": config.dtype, "num_shards": shards.num_shards}
    encoded = encode_shards(config, ctx, teacher, plan.column("text"), shards, metadata)
    ctx.barrier()  # every rank's shards are in place
    ood = _encode_ood(config, teacher, ctx) if config.ood else None
    if ctx.is_main:
        augment = write_sources(config.out, plan, config.augment) if config.augment else None
        check = (_precision_check(teacher, plan.column("text"))
                 if teacher.precision != "fp32" and not config.is_ood else None)
        _write_final_manifest(config, teacher, settings_fp, plan_info, shards, started, ood,
                              augment, check)
    ctx.barrier()
    return EncodeResult(read_manifest(config.out), encoded.rows, encoded.tokens, encoded.seconds,
                        time.perf_counter() - started, ctx.rank)


def _agreed_corpus(config: EncodeConfig, ctx: DistContext) -> CorpusConfig:
    """The corpus, once rank 0 has checked that its sources resolve (`wiki-hub` is a network
    probe); every rank uses its answer."""
    return ctx.broadcast(ctx.main_first(lambda: resolved_corpus(config.corpus)))


def _settings(config: EncodeConfig, spec: TeacherSpec, corpus: CorpusConfig) -> dict:
    """What the settings fingerprint is made of: a directory resumes only a run of the same."""
    settings = {
        **spec.identity(),  # the vectors' space: a different teacher never resumes this directory
        "dtype": config.dtype,
        "format": config.format,
        "shard_size": config.shard_size,
        "corpus": corpus_key(corpus),
    }
    if config.augment:  # only then, so that directories written before --augment existed resume
        settings["augment"] = config.augment
    return settings


def _prepare_directory(config: EncodeConfig, teacher: Teacher, corpus: CorpusConfig,
                       settings_fp: str) -> None:
    """Rank 0's part before the shards: claim the directory, read the corpus into the plan, write
    the sidecars."""
    work = config.out / WORK_DIR
    claim_directory(config.out, work, settings_fp, config.overwrite)
    build_plan(corpus, work, config.progress, config.augment, teacher.tokenizer.mask_token)
    write_sidecars(config.out, teacher, not config.is_ood, config.max_tokens, config.progress)


def _encode_ood(config: EncodeConfig, teacher: Teacher, ctx: DistContext) -> OodRecord:
    """The out-of-domain sentences, encoded like the corpus into OUT/ood (a complete shard
    directory of its own, resumable, written before the main manifest)."""
    corpus = CorpusConfig(sources=list(config.ood), text_column=config.ood_text_column,
                          min_words=config.corpus.min_words, max_words=config.corpus.max_words,
                          limit=config.ood_limit)
    ood_config = replace(config, out=config.out / OOD_DIR, corpus=corpus, ood=[],
                         shard_size=config.ood_limit, is_ood=True, augment=0)
    (config.out / OOD_DIR).mkdir(exist_ok=True)
    m = _run_locked(ood_config, ctx, teacher).manifest
    return OodRecord(dir=OOD_DIR, num_rows=m.num_rows, settings_fingerprint=m.settings_fingerprint,
                     sources=[s.source for s in m.corpus.sources])


def _precision_check(teacher: Teacher, texts) -> dict:
    """The teacher's vectors against its fp32 self on the corpus's first sentences, with a
    warning when they fall below the cosine the ONNX backend is held to."""
    check = teacher.precision_fidelity(texts.slice(0, FIDELITY_SENTENCES).to_pylist())
    if check["min_cosine"] < MIN_COSINE:
        print(f"warning: the {teacher.precision} teacher's vectors differ from fp32's: min cosine "
              f"{check['min_cosine']:.6f} over {check['sentences']} sentences", file=sys.stderr)
    return check


def _write_final_manifest(config: EncodeConfig, teacher: Teacher, settings_fp: str,
                          plan_info: dict, shards: ShardedMap, started: float,
                          ood: OodRecord | None, augment: AugmentRecord | None,
                          precision_check: dict | None) -> None:
    infos = shards.receipts()
    contextual = config.out / CONTEXTUAL_FILE
    manifest = Manifest(
        **teacher.spec.manifest_fields(),
        dtype=config.dtype,
        format=config.format,
        corpus=CorpusRecord.from_dict({**plan_info["corpus"], "stats": plan_info["stats"]}),
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
        extra=ExtraRecord(teacher_backend=teacher.backend, precision_check=precision_check),
    )
    write_manifest(config.out, manifest)
