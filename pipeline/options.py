"""What every command shares: defaults read from the stage's dataclass, and the ``--device`` and
``--progress/--no-progress`` options, spelled the same way everywhere."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from core.device import PRECISIONS

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda, cuda:1 ..."


def default(config_class: type, name: str) -> Any:
    """The default of field ``name`` of a config dataclass: the one source of a click default."""
    field = config_class.__dataclass_fields__[name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    if field.default is dataclasses.MISSING:
        raise KeyError(f"{config_class.__name__}.{name} has no default")
    return field.default


def device_option(config_class: type):
    """``--device``, its default from the config (``auto``)."""
    return click.option("--device", default=default(config_class, "device"), show_default=True,
                        help=DEVICE_HELP)


FINETUNE_PRECISION_HELP = (
    "Arithmetic of the fine-tuning steps. auto: fp32 on CPU, bf16 (fp16 where unsupported) on "
    "CUDA; bf16 on a CPU with bf16 instructions (AVX512-BF16, AMX) trains a transformer teacher "
    "about 1.6-1.8x faster, a BiLSTM about 1.4x. Dev scores and teacher logits are computed at "
    "the device's own precision. A run at another precision than its device's own is a run of its "
    "own (--resume never takes one for the other on the same kind of device; it replaces the other "
    "in OUT: use another --out to keep both).")


def precision_option(config_class: type, help: str = FINETUNE_PRECISION_HELP):
    """``--precision`` (core.device.PRECISIONS), its default from the config (``auto``)."""
    return click.option("--precision", type=click.Choice(PRECISIONS),
                        default=default(config_class, "precision"), show_default=True, help=help)


def progress_option(config_class: type):
    """``--progress/--no-progress``, its default from the config (on)."""
    return click.option("--progress/--no-progress", default=default(config_class, "progress"),
                        show_default=True, help="Show a progress bar (stderr).")


def rates_text(rates) -> str:
    """A list of learning rates as the comma list an option takes: [1e-3, 3e-4] -> "0.001,0.0003"."""
    return ",".join(f"{rate:g}" for rate in rates)
