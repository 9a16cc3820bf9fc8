"""`pipeline export`: a trained student -> an ONNX directory that runs without torch."""

from __future__ import annotations

import click

from pipeline.options import default
from student.export import QUANTIZE, ExportConfig


@click.command("export")
@click.option("--student", required=True,
              help="A trained student directory (config.json, model.safetensors, tokenizer.json).")
@click.option("--out", default=default(ExportConfig, "out"),
              help="Output directory [default: the student directory's path + .onnx].")
@click.option("--quantize", default=default(ExportConfig, "quantize"),
              help=f"{' or '.join(QUANTIZE)}: none keeps fp32 (the torch student's vectors); int8 is "
                   "dynamic quantization (smaller, vectors slightly off; its cosine is printed).")
@click.option("--overwrite", is_flag=True, default=default(ExportConfig, "overwrite"),
              help="Replace an existing OUT.")
def export(student, out, quantize, overwrite) -> None:
    """Export a student to ONNX: model.onnx, tokenizer.json, onnx_student.json."""
    from student.export import run_export

    result = run_export(ExportConfig(student=student, out=out, quantize=quantize, overwrite=overwrite))
    click.echo(result.summary())
