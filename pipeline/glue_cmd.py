"""`pipeline glue-eval`: parse options, build an EvalConfig, call run_glue_eval."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from core.errors import UserError
from data.augment import AUTO_MAX_VARIANTS, AUTO_TRANSFER_ROWS
from evaluation.backbones import TEACHER_PAIRS
from evaluation.config import EvalConfig
from evaluation.run import run_glue_eval
from evaluation.systems import BASELINES
from pipeline.options import default, device_option, precision_option, rates_text


def _default(name: str):
    return default(EvalConfig, name)


def _split_commas(values: tuple[str, ...]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


@click.command("glue-eval")
@click.option("--system", "systems", multiple=True,
              help="student:DIR, student:DIR+kd, scratch[:DIR], kd[:DIR], embeddings:DIR, model2vec "
                   "or teacher. Repeatable. [default: every student under --students-dir, then "
                   f"{', '.join(BASELINES)}]")
@click.option("--students-dir", type=click.Path(path_type=Path), default=_default("students_dir"),
              show_default=True,
              help="Where the default systems' students are found (train-student's output).")
@click.option("--tasks", multiple=True, help="GLUE tasks, comma list or repeated "
              "[default: every task in --glue-dir; all nine from the hub].")
@click.option("--glue-dir", type=click.Path(path_type=Path), default=None,
              help="GLUE data in the original TSV layout (CoLA/train.tsv, ...) "
                   "[default: nyu-mll/glue from the Hugging Face hub].")
@click.option("--hub", is_flag=True, help="Read nyu-mll/glue from the Hugging Face hub (the default "
              "without --glue-dir; needs `datasets` and the network).")
@click.option("--out", type=click.Path(path_type=Path), default=_default("out"), show_default=True,
              help="Output directory.")
@click.option("--teacher", default=None, help="HF model id or local directory of the teacher "
              "[default: the bundled all-MiniLM-L6-v2].")
@click.option("--teacher-pairs", type=click.Choice(TEACHER_PAIRS), default=_default("teacher_pairs"),
              show_default=True,
              help="How the teacher (its row, and the +kd teacher it fine-tunes) reads a sentence "
                   "pair: joint, one sequence ([CLS] a [SEP] b [SEP], a cross-encoder, as BERT is "
                   "fine-tuned); siamese, each side apart with the students' head on [u; v; |u-v|; u*v].")
@click.option("--kd-teacher", type=click.Path(path_type=Path), default=None,
              help="Fine-tuned teachers for +kd (DIR/<TASK>/, as glue-eval writes them under "
                   "OUT/finetuned-teacher) [default: fine-tune the teacher].")
@click.option("--kd-alpha", type=float, default=_default("kd_alpha"), show_default=True,
              help="Weight of the hard-label loss in +kd runs (the rest: MSE to teacher logits).")
@click.option("--augment", type=str, default=_default("augment"), show_default=True,
              help="Variants of every training row in the +kd systems' transfer set (Tang et al. "
                   "2019: masking, POS-guided word replacement, n-gram sampling), labelled by the "
                   "teacher's logits alone. 0: the training rows only; auto: a transfer set of "
                   f"about {AUTO_TRANSFER_ROWS // 1000}k rows ({AUTO_MAX_VARIANTS} variants a row "
                   "at most). With variants, --epochs counts "
                   "passes over the training rows: the run makes as many steps, and at least one "
                   "pass over the transfer set.")
@click.option("--kd-cache", type=click.Path(path_type=Path), default=None,
              help="Where the teacher's logits on the transfer set are cached, one entry per "
                   "teacher, task and transfer set: share it across runs [default: OUT/kd-cache].")
@click.option("--seeds", type=int, default=_default("seeds"), show_default=True,
              help="Runs per system and task (seeds 0..N-1).")
@click.option("--teacher-seeds", type=int, default=None,
              help="Runs of the teacher row (its fine-tuning costs most) [default: --seeds].")
@click.option("--grid-seeds", type=int, default=None,
              help="Seeds that search the learning-rate grid; the later seeds train at the rate with "
                   "the best mean dev score over them (3 seeds x 3 rates: 5 runs with 1 instead of 9) "
                   "[default: every seed searches].")
@click.option("--epochs", type=int, default=_default("epochs"), show_default=True,
              help="Maximum epochs per run.")
@click.option("--patience", type=int, default=_default("patience"), show_default=True,
              help="Stop after N epochs without dev gain.")
@click.option("--batch-size", type=int, default=_default("batch_size"), show_default=True,
              help="Training batch size.")
@click.option("--lr-grid", "--lr", "lr_grid", default=rates_text(_default("lr_grid")), show_default=True,
              help="Learning rates tried for every system but the teacher (the whole model); the "
                   "dev-best is kept per system, task and seed. One rate: no search.")
@click.option("--teacher-lr-grid", "--teacher-lr", "teacher_lr_grid",
              default=rates_text(_default("teacher_lr_grid")), show_default=True,
              help="Learning rates tried for the teacher's transformer (dev-best kept).")
@click.option("--teacher-head-lr", type=float, default=_default("teacher_head_lr"),
              show_default=True, help="Learning rate of the teacher's head.")
@click.option("--head-hidden", type=int, default=_default("head_hidden"), show_default=True,
              help="Hidden units of the MLP head.")
@click.option("--dropout", type=float, default=_default("dropout"), show_default=True,
              help="Dropout in the head.")
@click.option("--max-train-samples", type=int, default=None,
              help="Train every system on a fixed random subset of this size (quick runs) "
                   "[default: the whole training set].")
@click.option("--teacher-max-train-samples", type=int, default=None,
              help="Cap the teacher row alone (it costs most), e.g. so the students train on "
                   "everything [default: --max-train-samples].")
@click.option("--probe", is_flag=True,
              help="Frozen probes instead of fine-tuning: each system's vectors + logistic "
                   "regression (minutes); writes OUT/probe.md and probe.json.")
@click.option("--predict-test", is_flag=True,
              help="Write GLUE-server submission files to OUT/submissions/<system>/seed<k>/.")
@click.option("--zero-shot", is_flag=True,
              help="Only the STS-B zero-shot check (cosine Spearman), no fine-tuning.")
@click.option("--resume", is_flag=True,
              help="Keep every finished fine-tuning run recorded under OUT/records/ whose system "
                   "weights, settings and data are unchanged, and train only the rest (rerun the "
                   "same command after a stop).")
@precision_option(EvalConfig)
@device_option(EvalConfig)
def glue_eval(systems, students_dir, tasks, glue_dir, hub, out, teacher, teacher_pairs, kd_teacher, kd_alpha,
              augment, kd_cache, seeds, teacher_seeds, grid_seeds, epochs, patience, batch_size,
              lr_grid, teacher_lr_grid, teacher_head_lr, head_hidden, dropout, max_train_samples,
              teacher_max_train_samples, probe, predict_test, zero_shot, resume, precision, device):
    """Fine-tune and score students, baselines and the teacher on GLUE (dev sets).

    Bare, it scores every student under students/ against scratch, model2vec and the teacher,
    on GLUE from the hub, each system at its dev-best learning rate of --lr-grid.
    """
    if hub and glue_dir is not None:
        raise UserError("give either --glue-dir DIR or --hub, not both")
    config = EvalConfig(
        out=out, systems=list(systems), students_dir=students_dir, tasks=_split_commas(tasks),
        glue_dir=glue_dir, teacher=teacher, teacher_pairs=teacher_pairs, kd_teacher=kd_teacher,
        kd_alpha=kd_alpha,
        augment=augment, kd_cache=kd_cache, seeds=seeds, teacher_seeds=teacher_seeds,
        grid_seeds=grid_seeds, epochs=epochs,
        patience=patience, batch_size=batch_size, lr_grid=lr_grid, teacher_lr_grid=teacher_lr_grid,
        teacher_head_lr=teacher_head_lr, head_hidden=head_hidden, dropout=dropout,
        max_train_samples=max_train_samples, teacher_max_train_samples=teacher_max_train_samples,
        probe=probe, predict_test=predict_test, zero_shot=zero_shot, resume=resume, device=device,
        precision=precision, command=shlex.join(["pipeline", *sys.argv[1:]]),
    )
    result = run_glue_eval(config)
    if result.rank == 0:
        click.echo(f"done: {result.summary_line()}")
