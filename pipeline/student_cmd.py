"""`pipeline train-student` and `pipeline embed`: parse options, build a config, run it."""

from __future__ import annotations

import click
from click.core import ParameterSource

from pipeline.options import default, device_option, precision_option, progress_option
from student.config import INIT_EMBEDDINGS, POOLINGS, EmbedConfig, TrainConfig


def _default(name: str):
    return default(TrainConfig, name)


def _weights(ctx, param, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter("comma-separated numbers, e.g. 1,0.5") from None


@click.command("train-student")
@click.option("--shards", multiple=True, type=click.Path(file_okay=False),
              help="Shard directory from `pipeline encode` (repeat for several of one teacher).")
@click.option("--out", default=_default("out"),
              help="Output directory; with --variant, the parent of one directory per variant "
                   "[default there: students].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="Variants TOML file ([defaults], [variants.NAME]).")
@click.option("--variant", "variants", multiple=True,
              help="Variant(s) of --config to train (repeat, or 'all').")
@click.option("--embed-dim", type=int, default=None,
              help="Token embedding width [default: the teacher's, no projection].")
@click.option("--hidden", type=int, default=_default("hidden"), help="LSTM hidden size per direction.")
@click.option("--layers", type=int, default=_default("layers"), help="Bidirectional LSTM layers.")
@click.option("--pooling", type=click.Choice(POOLINGS), default=_default("pooling"),
              help="How token states become one vector.")
@click.option("--dropout", type=float, default=_default("dropout"), help="Dropout rate.")
@click.option("--max-length", type=int, default=None,
              help="Token limit incl. special tokens [default: the teacher's, from the manifest].")
@click.option("--init-embeddings", type=click.Choice(INIT_EMBEDDINGS),
              default=_default("init_embeddings"),
              help="Token embeddings to start from: each token through the teacher alone "
                   "(contextual), the teacher's input embeddings, or random (ablation).")
@click.option("--freeze-embeddings/--train-embeddings", default=_default("freeze_embeddings"),
              help="Keep the initial token embeddings fixed (a much cheaper step).")
@click.option("--loss", default=_default("loss"),
              help="SRA loss: mse, cosine, or parts joined with '+' (mse+cosine).")
@click.option("--loss-weights", callback=_weights, help="Weights of the loss parts, e.g. 1,1.")
@click.option("--epochs", type=int, default=_default("epochs"), help="Passes over the training rows.")
@click.option("--max-steps", type=int, default=None, help="Train this many steps instead of --epochs.")
@click.option("--batch-size", type=int, default=_default("batch_size"), help="Sentences per step.")
@click.option("--lr", type=float, default=_default("lr"), help="Peak learning rate (AdamW).")
@click.option("--min-lr", type=float, default=None, help="Final learning rate [default: lr/10].")
@click.option("--warmup-steps", type=int, default=None,
              help="Linear warmup steps before cosine decay [default: 2% of the steps].")
@click.option("--weight-decay", type=float, default=_default("weight_decay"),
              help="AdamW weight decay (matrices only).")
@click.option("--grad-clip", type=float, default=_default("grad_clip"),
              help="Gradient norm clip (0: off).")
@click.option("--seed", type=int, default=_default("seed"), help="Seed of weights and data order.")
@click.option("--heldout", type=float, default=_default("heldout"),
              help="Fraction of sentences held out (by hashed id).")
@click.option("--val-size", type=int, default=_default("val_size"),
              help="Held-out sentences scored at each evaluation.")
@click.option("--train-rows", type=int, default=None,
              help="Train on the first N training rows only (nested subsets share the held-out "
                   "sentences, which are drawn from all rows) [default: all].")
@click.option("--shuffle-buffer", type=int, default=_default("shuffle_buffer"),
              help="Rows mixed across shard boundaries by the shuffle buffer.")
@click.option("--eval-every", type=int, default=_default("eval_every"),
              help="Evaluate on held-out sentences every N steps.")
@click.option("--log-every", type=int, default=_default("log_every"),
              help="Write a metrics.jsonl record every N steps.")
@click.option("--checkpoint-every", type=int, default=_default("checkpoint_every"),
              help="Save a resumable checkpoint every N steps.")
@click.option("--stop-after", type=int, default=None,
              help="Stop (with a checkpoint) after N steps of this invocation.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt.")
@click.option("--overwrite", is_flag=True, help="Discard an earlier run in OUT.")
@click.option("--verify", type=click.Choice(["cheap", "full"]), default=_default("verify"),
              help="cheap: sizes at start, sha256 when a shard is first read; full: all up front.")
@precision_option(
    TrainConfig,
    help="Arithmetic of the training steps. auto: fp32 on CPU, bf16 (fp16 where unsupported) on "
         "CUDA; bf16 on a CPU with bf16 instructions (AVX512-BF16, AMX) makes a step about 1.5x "
         "faster, the weights and held-out scores staying fp32.")
@device_option(TrainConfig)
@progress_option(TrainConfig)
@click.pass_context
def train_student(ctx: click.Context, config_file, variants, **options) -> None:
    """Train BiLSTM student(s) on the teacher vectors cached in shard directories."""
    from student.train import run_train_student
    from student.variants import build_train_configs

    options["shards"] = list(options["shards"])
    explicit = {name for name in options
                if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                                      ParameterSource.ENVIRONMENT)}
    configs = build_train_configs(options, explicit, config_file, tuple(variants))
    for config in configs:
        result = run_train_student(config)
        click.echo(result.summary())


@click.command("embed")
@click.option("--student", required=True, type=click.Path(file_okay=False),
              help="A trained student directory.")
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="Sentences: .txt (one a line), .jsonl, .tsv or .csv.")
@click.option("--out", required=True, help="Output file: .npy (float32) or .arrow (id, text, vector).")
@click.option("--text-column", default=default(EmbedConfig, "text_column"), show_default=True,
              help="Column holding the text (.jsonl/.tsv/.csv).")
@click.option("--batch-size", type=int, default=default(EmbedConfig, "batch_size"), show_default=True,
              help="Sentences per forward pass.")
@device_option(EmbedConfig)
@progress_option(EmbedConfig)
def embed(student, input_path, out, text_column, batch_size, device, progress) -> None:
    """Encode sentences with a trained student, in input order."""
    from student.embed import run_embed

    path = run_embed(EmbedConfig(student=student, input=input_path, out=out,
                                 text_column=text_column, batch_size=batch_size, device=device,
                                 progress=progress))
    click.echo(f"wrote {path}")
