"""Device choice and mixed precision, shared by the teacher, the student and evaluation."""

from __future__ import annotations

import contextlib

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


def autocast_context(device: torch.device):
    """bf16 (or fp16) autocast on CUDA; nothing on CPU, where fp32 is both exact and fastest."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)
