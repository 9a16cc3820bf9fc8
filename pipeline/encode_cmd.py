"""`pipeline encode` and `pipeline shards-info`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from cache_tools.format import DTYPES, FORMATS
from cache_tools.manifest import ShardInfo, pass_cost, read_manifest
from core.device import PRECISIONS
from core.teacher import POOLINGS
from core.teacher_onnx import BACKENDS
from data.corpus import CorpusConfig
from encoding import EncodeConfig, run_encode
from pipeline.options import default, device_option, progress_option


@click.command()
@click.option("--corpus", "corpus", multiple=True, default=default(CorpusConfig, "sources"),
              show_default=True,
              help="`wiki` (the bundled Wikipedia sample dump, on every machine), `wiki-hub` "
                   "(English Wikipedia streamed from the hub; needs --limit), or paths: a "
                   "*pages-articles*.xml.bz2 dump, text, .jsonl, .parquet, .tsv/.csv files or "
                   "directories. Repeatable.")
@click.option("--exclude", "exclude", multiple=True, type=click.Path(),
              help="Files whose sentences are never encoded (evaluation sets: every text field of "
                   "every row, normalised like corpus sentences), or shard directories (every "
                   "sentence they hold: the same corpus encoded with one excluded continues its "
                   "sentence list, --limit counting the sentences added); "
                   "counted as `excluded`. Repeatable.")
@click.option("--mix-sources", is_flag=True,
              help="Interleave the --corpus sources in proportion to their size, so that every "
                   "prefix of the shards samples all of them.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Shard directory.")
@click.option("--teacher", default=None, help="HF model id or local directory "
              "[default: the bundled all-MiniLM-L6-v2].")
@click.option("--pooling", type=click.Choice(POOLINGS), default=None,
              help="Used when the teacher has no sentence-transformers pooling config "
                   "[default: mean].")
@click.option("--layer", type=int, default=default(EncodeConfig, "layer"), show_default=True,
              help="Hidden layer to pool (-1 = last, 0 = embeddings).")
@click.option("--max-length", type=int, default=None,
              help="Max tokens per sentence [default: the teacher's max_seq_length or 512].")
@click.option("--text-column", default=None, help="Column of .tsv/.csv (name or 0-based index), "
              ".jsonl and .parquet (default `text`).")
@click.option("--min-words", type=int, default=default(CorpusConfig, "min_words"), show_default=True,
              help="Drop shorter sentences.")
@click.option("--max-words", type=int, default=default(CorpusConfig, "max_words"), show_default=True,
              help="Drop longer sentences.")
@click.option("--limit", type=int, default=None, help="Keep at most N sentences.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=default(EncodeConfig, "format"),
              show_default=True)
@click.option("--shard-size", type=int, default=default(EncodeConfig, "shard_size"), show_default=True,
              help="Sentences per shard.")
@click.option("--dtype", type=click.Choice(DTYPES), default=default(EncodeConfig, "dtype"),
              show_default=True, help="Stored vector precision.")
@click.option("--batch-size", type=int, default=default(EncodeConfig, "batch_size"), show_default=True,
              help="Max sentences per teacher batch.")
@click.option("--max-tokens", type=int, default=None,
              help="Token budget per batch (batch size x padded length) [default: 512 on CPU, "
                   "16384 on GPU].")
@device_option(EncodeConfig)
@click.option("--teacher-backend", type=click.Choice(BACKENDS),
              default=default(EncodeConfig, "teacher_backend"), show_default=True,
              help="What runs the teacher: onnx (an fp32 ONNX graph on onnxruntime, CPU only: the same "
                   "vectors, faster; exported once per teacher into $SRA_CACHE, default "
                   "~/.cache/sra-distill), torch, or auto: onnx on CPU, torch on CUDA.")
@click.option("--teacher-precision", type=click.Choice(PRECISIONS),
              default=default(EncodeConfig, "teacher_precision"), show_default=True,
              help="The teacher's arithmetic. auto: fp32 on CPU, bf16 (fp16 where unsupported) on CUDA. "
                   "bf16 on a CPU with bf16 instructions (AVX512-BF16, AMX) runs on torch, about 1.35x "
                   "the fp32 ONNX pass; its vectors are not fp32's (the manifest records their min "
                   "cosine to fp32 on the corpus's first 1,000 sentences), so they are a space of "
                   "their own: train only with shards of the same precision.")
@click.option("--overwrite", is_flag=True, help="Replace shards written with other settings.")
@click.option("--ood-corpus", "ood", multiple=True,
              help="Out-of-domain sentences (e.g. GLUE dev files), read like --corpus and encoded into "
                   "OUT/ood; never trained on: train-student reports the cosine to the teacher there. "
                   "Repeatable.")
@click.option("--ood-text-column", default=None, help="--text-column for the --ood-corpus files.")
@click.option("--ood-limit", type=int, default=default(EncodeConfig, "ood_limit"), show_default=True,
              help="Keep at most N out-of-domain sentences.")
@click.option("--augment", type=int, default=default(EncodeConfig, "augment"), show_default=True,
              help="Also encode N variants of every sentence (words masked or dropped, n-grams; "
                   "Tang et al. 2019); held-out splits keep a sentence and its variants together.")
@progress_option(EncodeConfig)
@click.option("--quiet", is_flag=True, help="No progress bar (the same as --no-progress).")
def encode(corpus, exclude, mix_sources, out, teacher, pooling, layer, max_length, text_column,
           min_words, max_words, limit, fmt, shard_size, dtype, batch_size, max_tokens, device,
           teacher_backend, teacher_precision, overwrite, ood,
           ood_text_column, ood_limit, augment, progress, quiet):
    """Encode a corpus with the teacher into sharded sentence vectors (resumable)."""
    config = EncodeConfig(
        out=out,
        corpus=CorpusConfig(sources=list(corpus), text_column=text_column, min_words=min_words,
                            max_words=max_words, limit=limit, exclude=list(exclude),
                            mix_sources=mix_sources),
        teacher=teacher, pooling=pooling, layer=layer, max_length=max_length, format=fmt,
        shard_size=shard_size, dtype=dtype, batch_size=batch_size, max_tokens=max_tokens,
        device=device, teacher_backend=teacher_backend, teacher_precision=teacher_precision,
        overwrite=overwrite, progress=progress and not quiet,
        ood=list(ood), ood_text_column=ood_text_column, ood_limit=ood_limit, augment=augment,
        command=shlex.join(["pipeline", *sys.argv[1:]]),
    )
    result = run_encode(config)
    if result.rank == 0:
        click.echo(f"done: {result.summary()} -> {out}")


@click.command("shards-info")
@click.argument("directory", type=click.Path(path_type=Path))
def shards_info(directory: Path) -> None:
    """Print the manifest summary of a shard directory."""
    m = read_manifest(directory)
    stats = m.corpus.stats  # the reader's counters; none in a kd-logit cache
    lines = [
        f"directory   {directory}",
        f"teacher     {m.teacher} (weights sha256 {m.teacher_fingerprint[:12]})",
        f"pooling     {m.pooling}, layer {m.layer}, normalize {m.normalize}, max_length "
        f"{m.max_length}",
        f"backend     {m.extra.teacher_backend or 'torch (written before backends existed)'}, "
        f"{m.precision}{_precision_check(m.extra.precision_check)}",
        f"vectors     {m.num_rows} x {m.dim} {m.dtype}, {m.num_tokens} tokens",
        f"shards      {len(m.shards)} x {m.format}, {m.num_bytes / 1e6:.1f} MB",
        f"corpus      {', '.join(s.source for s in m.corpus.sources)}",
        f"kept        {stats.get('sentences_kept', m.num_rows)} of {stats.get('sentences_seen', '?')}"
        f" sentences (short {stats.get('too_short', 0)}, long {stats.get('too_long', 0)}, "
        f"duplicate {stats.get('duplicates', 0)}, excluded {stats.get('excluded', 0)}, "
        f"markup lines {stats.get('markup_lines', 0)}, "
        f"bad UTF-8 lines {stats.get('invalid_utf8_lines', 0)})",
        f"init        input embeddings, contextual "
        f"{'yes' if m.contextual_file else 'no (rerun the encode command to add it)'}",
        f"augment     {m.augment.variants if m.augment else 0} variants a sentence",
        f"ood         {m.ood.num_rows if m.ood else 0} out-of-domain sentences"
        + (f" from {', '.join(m.ood.sources)}" if m.ood else ""),
        f"created     {m.created} in {m.encode_seconds:.1f}s",
        _teacher_pass_cost(m.shards),
        f"command     {m.command}",
    ]
    click.echo("\n".join(lines))


def _precision_check(check: dict | None) -> str:
    """``extra.precision_check`` as shards-info prints it after the precision."""
    if not check:
        return ""
    return (f" (against fp32 on {check['sentences']} sentences: min cosine "
            f"{check['min_cosine']:.6f}, mean {check['mean_cosine']:.6f})")


def _teacher_pass_cost(shards: list[ShardInfo]) -> str:
    """The teacher pass's cost from the shards' receipts (set-up, the plan and the token table,
    is not in it)."""
    cost = pass_cost(shards)
    if not cost.timed:
        return "cost        not recorded (shards written before their timings were)"
    return (f"cost        teacher pass {cost.cpu_seconds / 3600:.2f} CPU-h "
            f"({cost.rows / max(cost.cpu_seconds, 1e-9):.1f} sentences per CPU second), "
            f"{cost.seconds / 3600:.2f} h summed over ranks; "
            f"{cost.timed} of {len(shards)} shards timed")
