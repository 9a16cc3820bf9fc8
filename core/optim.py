"""One optimisation step for every training loop: the learning-rate schedules and the AMP step.

train-student (the SRA stage) and fine-tuning (glue-eval, ``pipeline finetune``) both step
through :class:`OptimStep`; they differ only in their schedule. A schedule is a plain function
of the step, as nanoGPT's ``get_lr``: nothing to save or restore, so a resumed run continues
from its step number alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

# (step, peak) -> the learning rate at ``step`` of a parameter group whose peak rate is ``peak``
Schedule = Callable[[int, float], float]


def warmup_cosine_lr(step: int, total: int, lr: float, min_lr: float, warmup: int) -> float:
    """train-student's schedule: linear warm-up to ``lr`` over ``warmup`` steps, then cosine
    decay from ``lr`` to ``min_lr`` at ``total`` (and ``min_lr`` after it)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def warmup_linear_lr(step: int, total: int, lr: float, warmup: int) -> float:
    """Fine-tuning's schedule (BERT's): linear warm-up to ``lr`` over ``warmup`` steps, then
    linear decay to zero at ``total`` (and zero after it)."""
    # ``lr * fraction`` in this order: bit for bit the rates of the LambdaLR it replaced
    if step < warmup:
        return lr * ((step + 1) / warmup)
    return lr * max(0.0, (total - step) / max(1, total - warmup))


def needs_loss_scaling(device: torch.device) -> bool:
    """fp16 autocast (CUDA without bf16) loses small gradients to underflow unless the loss is
    scaled; bf16 has fp32's exponent range and CPU runs in fp32, so neither needs it."""
    return device.type == "cuda" and not torch.cuda.is_bf16_supported()


class OptimStep:
    """One training step after the forward pass: set each parameter group's rate for the step,
    zero_grad, (scaled) backward, unscale, clip the gradient norm, optimizer step, scaler update.

    Each group's rate when this is built is its peak (the teacher's encoder and head differ), and
    every step gives a group ``schedule(step, peak)``. Build it before loading an optimizer state,
    which holds the last rates used, not the peaks. ``scaler`` is the GradScaler to checkpoint.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule, device: torch.device,
                 parameters: Iterable[torch.Tensor], grad_clip: float, loss_scaling: bool | None = None):
        self.optimizer = optimizer
        self.schedule = schedule
        self.peaks = [group["lr"] for group in optimizer.param_groups]
        # clipping takes the norm over these, in this order (the model's: the sum's rounding)
        self.parameters = list(parameters)
        self.grad_clip = grad_clip  # 0: no clipping
        # None: what the device's "auto" precision needs; a caller that chose one says
        scaling = needs_loss_scaling(device) if loss_scaling is None else loss_scaling
        self.scaler = torch.amp.GradScaler("cuda", enabled=scaling)

    def rates(self, step: int) -> list[float]:
        """Every group's learning rate at ``step`` (0-based: the step about to be taken)."""
        return [self.schedule(step, peak) for peak in self.peaks]

    def __call__(self, loss: torch.Tensor, step: int) -> None:
        """Take optimisation step ``step`` on ``loss`` (a scalar with its graph)."""
        for group, rate in zip(self.optimizer.param_groups, self.rates(step), strict=True):
            group["lr"] = rate
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # a no-op scale unless fp16
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
        self.scaler.step(self.optimizer)  # skipped when fp16 gradients overflowed
        self.scaler.update()
