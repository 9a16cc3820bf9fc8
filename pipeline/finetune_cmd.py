"""`pipeline finetune` and `pipeline predict`: parse options, build the config, call ``run_*``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from data.augment import AUTO_MAX_VARIANTS, AUTO_TRANSFER_ROWS
from evaluation.backbones import TEACHER_PAIRS
from evaluation.user_run import FinetuneConfig, PredictConfig, run_finetune, run_predict
from pipeline.options import default, device_option, precision_option, rates_text

F = FinetuneConfig
P = PredictConfig


@click.command("finetune")
@click.option("--train", type=click.Path(path_type=Path), required=True,
              help="Labelled training data: .csv, .tsv, .jsonl or .parquet.")
@click.option("--dev", type=click.Path(path_type=Path), default=None,
              help="Labelled dev data for early stopping and selection [default: a seeded split "
                   "of --train].")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The classifier directory to write (replaced atomically).")
@click.option("--student", type=click.Path(path_type=Path), default=None,
              help="A student directory: short for --system student:DIR (+kd with --kd-teacher).")
@click.option("--system", "systems", multiple=True,
              help="As in glue-eval: student:DIR[+kd], scratch[:DIR], kd[:DIR], embeddings:DIR, "
                   "model2vec, teacher. Repeatable; the first system is the one saved.")
@click.option("--text-column", default=default(F, "text_column"), help="The text column.")
@click.option("--text-pair-column", default=None,
              help="The second text of a sentence pair (siamese, as in glue-eval).")
@click.option("--label-column", default=default(F, "label_column"), help="The label column.")
@click.option("--regression", is_flag=True,
              help="Numeric labels are scores to regress [default: only float labels are].")
@click.option("--dev-fraction", type=float, default=default(F, "dev_fraction"),
              help="Share of --train held out as dev when --dev is not given.")
@click.option("--seeds", type=int, default=default(F, "seeds"), help="Runs per system (seeds 0..N-1).")
@click.option("--epochs", type=int, default=default(F, "epochs"), help="Maximum epochs per run.")
@click.option("--patience", type=int, default=default(F, "patience"),
              help="Stop after N epochs without dev gain.")
@click.option("--batch-size", type=int, default=default(F, "batch_size"), help="Training batch size.")
@click.option("--lr-grid", default=rates_text(default(F, "lr_grid")),
              help="Learning rates tried (comma list), the dev-best kept: students and heads.")
@click.option("--teacher-lr-grid", default=rates_text(default(F, "teacher_lr_grid")),
              help="The teacher's transformer rates tried (comma list).")
@click.option("--teacher-head-lr", type=float, default=default(F, "teacher_head_lr"),
              help="The teacher's head rate.")
@click.option("--head-hidden", type=int, default=default(F, "head_hidden"),
              help="Hidden units of the MLP head.")
@click.option("--dropout", type=float, default=default(F, "dropout"), help="Dropout in the head.")
@click.option("--teacher", default=None, help="HF model id or local directory of the base teacher "
              "[default: the bundled all-MiniLM-L6-v2].")
@click.option("--teacher-pairs", type=click.Choice(TEACHER_PAIRS), default=default(F, "teacher_pairs"),
              show_default=True,
              help="How the teacher (its row, and the +kd teacher it fine-tunes) reads a sentence "
                   "pair: joint, one sequence ([CLS] a [SEP] b [SEP], a cross-encoder, as BERT is "
                   "fine-tuned); siamese, each side apart with the students' head on [u; v; |u-v|; u*v].")
@click.option("--kd-teacher", default=None,
              help="Task-specific distillation (Tang et al. 2019) from a classifier directory "
                   "written by `pipeline finetune`, or `auto`: fine-tune --teacher on this data first "
                   "(cached in --cache-dir).")
@click.option("--kd-alpha", type=float, default=default(F, "kd_alpha"),
              help="Weight of the hard-label loss in KD runs (the rest: MSE to teacher logits).")
@click.option("--augment", type=str, default=default(F, "augment"), show_default=True,
              help="Variants of each training row (Tang et al. 2019: masking, POS-guided word "
                   "replacement, n-gram sampling) labelled by the KD teacher's logits alone; "
                   f"auto: a transfer set of about {AUTO_TRANSFER_ROWS // 1000}k rows "
                   f"({AUTO_MAX_VARIANTS} variants a row at most). "
                   "--epochs then counts passes over the training rows (at least one pass over "
                   "the transfer set).")
@click.option("--max-train-samples", type=int, default=None,
              help="Train on a fixed random subset of this size (quick runs).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Fine-tuned KD teacher and model2vec cache [default: OUT.cache].")
@click.option("--kd-cache", type=click.Path(path_type=Path), default=None,
              help="Where the KD teacher's logits are cached (glue-eval's format; share it "
                   "across runs) [default: CACHE_DIR/kd-cache].")
@precision_option(F)
@device_option(F)
def finetune(**options):
    """Fine-tune a student (and compare systems) on your own labelled data; save a classifier."""
    options["systems"] = list(options["systems"])
    config = FinetuneConfig(**options, command=shlex.join(["pipeline", *sys.argv[1:]]))
    outcome = run_finetune(config)
    click.echo(f"done: {outcome.task.name} ({outcome.saved['system']}, dev score "
               f"{outcome.saved['score']:.2f}) in {outcome.seconds:.0f}s; see {outcome.out / 'results.md'}")


@click.command("predict")
@click.option("--model", type=click.Path(path_type=Path), required=True,
              help="A classifier directory written by `pipeline finetune`.")
@click.option("--input", "input_", type=click.Path(path_type=Path), required=True,
              help="Rows to predict: .csv, .tsv, .jsonl or .parquet.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Predictions (.csv, .tsv, .jsonl or .parquet): the input columns, `prediction` "
                   "and `prob_<label>` per class, in input order.")
@click.option("--text-column", default=None, help="[default: the classifier's text column]")
@click.option("--text-pair-column", default=None, help="[default: the classifier's pair column]")
@click.option("--batch-size", type=int, default=default(P, "batch_size"), help="Prediction batch size.")
@device_option(P)
def predict(model, input_, out, text_column, text_pair_column, batch_size, device):
    """Label every row of a file with a classifier from `pipeline finetune`."""
    config = PredictConfig(model, input_, out, text_column, text_pair_column, batch_size, device)
    rows = run_predict(config)
    click.echo(f"done: {rows} rows predicted; see {config.out}")
