"""`pipeline glue-eval`: parse options, build an EvalConfig, call run_glue_eval."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from evaluation.config import EvalConfig
from evaluation.run import run_glue_eval
from pipeline.errors import UserError


def _split_commas(values: tuple[str, ...]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


@click.command("glue-eval")
@click.option("--system", "systems", multiple=True, required=True,
              help="student:DIR, student:DIR+kd, scratch[:DIR], kd[:DIR] or teacher. Repeatable.")
@click.option("--tasks", multiple=True, help="GLUE tasks, comma list or repeated "
              "[default: every task in --glue-dir; all nine with --hub].")
@click.option("--glue-dir", type=click.Path(path_type=Path), default=None,
              help="GLUE data in the original TSV layout (CoLA/train.tsv, ...).")
@click.option("--hub", is_flag=True, help="Read nyu-mll/glue from the Hugging Face hub instead "
              "(needs `datasets` and the network).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("glue_results"),
              help="Output directory.")
@click.option("--teacher", default=None, help="HF model id or local directory of the teacher "
              "[default: the bundled all-MiniLM-L6-v2].")
@click.option("--kd-teacher", type=click.Path(path_type=Path), default=None,
              help="Fine-tuned teachers for +kd (DIR/<TASK>/, as glue-eval writes them under "
                   "OUT/finetuned-teacher) [default: fine-tune the teacher].")
@click.option("--kd-alpha", type=float, default=0.5,
              help="Weight of the hard-label loss in +kd runs (the rest: MSE to teacher logits).")
@click.option("--kd-shard-rows", type=int, default=4096, show_default=True,
              help="Rows per shard of the teacher-logit cache (what one torchrun rank computes).")
@click.option("--seeds", type=int, default=1, help="Runs per system and task (seeds 0..N-1).")
@click.option("--teacher-seeds", type=int, default=None,
              help="Runs of the teacher row (its fine-tuning costs most) [default: --seeds].")
@click.option("--epochs", type=int, default=4, help="Maximum epochs per run.")
@click.option("--patience", type=int, default=2, help="Stop after N epochs without dev gain.")
@click.option("--batch-size", type=int, default=32, help="Training batch size.")
@click.option("--lr", type=float, default=1e-3, help="Learning rate of students and heads.")
@click.option("--teacher-lr", type=float, default=3e-5, help="Learning rate of the teacher's encoder.")
@click.option("--head-hidden", type=int, default=256, help="Hidden units of the MLP head.")
@click.option("--dropout", type=float, default=0.1, help="Dropout in the head.")
@click.option("--max-train-samples", type=int, default=None,
              help="Train on a fixed random subset of this size (quick runs).")
@click.option("--predict-test", is_flag=True,
              help="Write GLUE-server submission files to OUT/submissions/<system>/seed<k>/.")
@click.option("--zero-shot", is_flag=True,
              help="Only the STS-B zero-shot check (cosine Spearman), no fine-tuning.")
@click.option("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
def glue_eval(systems, tasks, glue_dir, hub, out, teacher, kd_teacher, kd_alpha, kd_shard_rows,
              seeds, teacher_seeds, epochs, patience, batch_size, lr, teacher_lr, head_hidden,
              dropout, max_train_samples, predict_test, zero_shot, device):
    """Fine-tune and score students, baselines and the teacher on GLUE (dev sets)."""
    if hub == (glue_dir is not None):
        raise UserError("give exactly one of --glue-dir DIR or --hub")
    config = EvalConfig(
        out=out, systems=list(systems), tasks=_split_commas(tasks), glue_dir=glue_dir,
        teacher=teacher, kd_teacher=kd_teacher, kd_alpha=kd_alpha, kd_shard_rows=kd_shard_rows, seeds=seeds,
        teacher_seeds=teacher_seeds, epochs=epochs,
        patience=patience, batch_size=batch_size, lr=lr, teacher_lr=teacher_lr,
        head_hidden=head_hidden, dropout=dropout, max_train_samples=max_train_samples,
        predict_test=predict_test, zero_shot=zero_shot, device=device,
        command=shlex.join(["pipeline", *sys.argv[1:]]),
    )
    result = run_glue_eval(config)
    if result.rank == 0:
        click.echo(f"done: {result.summary_line()}")
