"""Device choice and mixed precision, shared by the teacher, the student and evaluation."""

from __future__ import annotations

import contextlib
import sys

import torch

from core.errors import UserError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` / ``"auto"``: CUDA when available, else CPU; an unavailable device is a UserError."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"bad --device {device!r} ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device} asked for, but CUDA is not available here")
    return device


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """The arithmetic a model runs in on ``device``: ``"auto"`` is fp32 on the CPU, where it is
    exact, and bf16 (fp16 where bf16 is unsupported) on CUDA; ``"bf16"`` on the CPU is autocast
    on oneDNN, fast where the CPU has bf16 instructions (AVX512-BF16, AMX). A UserError for a
    precision the device cannot run."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    cuda = device.type == "cuda"
    if precision == "auto":
        return ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if precision == "fp16" and not cuda:
        raise UserError("precision fp16 runs on CUDA only; on the CPU use bf16")
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UserError(f"this GPU ({device}) has no bf16; use fp16")
    if precision == "bf16" and not cuda and not cpu_has_bf16():
        print("warning: this CPU has no bf16 instructions: bf16 runs slower than fp32 here",
              file=sys.stderr)
    return precision


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (oneDNN's own test; without it bf16 is
    emulated, slower than fp32)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private test: absent from some builds
        return False


def precision_context(precision: str, device: torch.device):
    """Autocast to ``precision`` (a resolved one: fp32, bf16 or fp16) on ``device``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_HALF[precision])


def autocast_context(device: torch.device, precision: str | None = None):
    """Training and inference at ``precision`` (a resolved one), or with None at the device's
    "auto" precision: bf16 (or fp16) autocast on CUDA; nothing on CPU, where fp32 is exact."""
    return precision_context(precision or resolve_precision("auto", device), device)


def precision_override(precision: str, device: torch.device) -> str | None:
    """``precision`` resolved on ``device``, or None where it is the device's "auto" one: a run
    at its device's own precision keeps the identity it had before precisions could be chosen."""
    resolved = resolve_precision(precision, device)
    return None if resolved == resolve_precision("auto", device) else resolved
