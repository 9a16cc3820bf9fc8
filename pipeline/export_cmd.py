"""`pipeline export`: a trained student -> an ONNX directory that runs without torch."""

from __future__ import annotations

import dataclasses

import click

from student.export import QUANTIZE, ExportConfig

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ExportConfig)
             if f.default is not dataclasses.MISSING}


@click.command("export")
@click.option("--student", required=True,
              help="A trained student directory (config.json, model.safetensors, tokenizer.json).")
@click.option("--out", default=_DEFAULTS["out"],
              help="Output directory [default: the student directory's path + .onnx].")
@click.option("--quantize", default=_DEFAULTS["quantize"],
              help=f"{' or '.join(QUANTIZE)}: none keeps fp32 (the torch student's vectors); int8 is "
                   "dynamic quantization (smaller, vectors slightly off; its cosine is printed).")
@click.option("--overwrite", is_flag=True, default=_DEFAULTS["overwrite"], help="Replace an existing OUT.")
def export(student, out, quantize, overwrite) -> None:
    """Export a student to ONNX: model.onnx, tokenizer.json, onnx_student.json."""
    from student.export import run_export

    result = run_export(ExportConfig(student=student, out=out, quantize=quantize, overwrite=overwrite))
    click.echo(result.summary())
