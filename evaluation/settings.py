"""The small typed values a fine-tuning run is made of: how a model's head is built
(``HeadSettings``), which learning rates are tried (``RateGrid``) and how every run trains
(``Recipe``). glue-eval and finetune each build them once from their own options; the engine
(:mod:`evaluation.engine`) and the systems (:mod:`evaluation.systems`) take them where they are
used. No I/O here."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.device import precision_override
from core.errors import UserError
from evaluation.finetune import TrainSettings

if TYPE_CHECKING:
    import torch

# Learning rates tried per system and task, the dev-best kept (BERT's paper: a small grid).
LR_GRID = (1e-3, 3e-4, 1e-4)  # heads, and the whole model for the BiLSTM and static systems
TEACHER_LR_GRID = (1e-4, 3e-5)  # the teacher's transformer (its head: teacher_head_lr)
TEACHER_HEAD_LR = 1e-3


def parse_rates(text: str | Sequence[float], option: str) -> list[float]:
    """``"1e-3,3e-4"`` -> [0.001, 0.0003]; a UserError for a non-number, <= 0 or an empty list."""
    items = [t.strip() for t in text.split(",") if t.strip()] if isinstance(text, str) else list(text)
    rates = []
    for item in items:
        try:
            rate = float(item)
        except ValueError:
            raise UserError(f"{option} {text!r}: {item!r} is not a number") from None
        if not (math.isfinite(rate) and rate > 0):
            raise UserError(f"{option} {text!r}: every rate must be a positive number, got {item!r}")
        rates.append(rate)
    if not rates:
        raise UserError(f"{option}: give at least one learning rate")
    return list(dict.fromkeys(rates))  # no point trained twice


@dataclass(frozen=True)
class HeadSettings:
    """The MLP head every system gets (evaluation.heads.TaskHead)."""

    hidden: int = 256
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise UserError("--head-hidden must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class RateGrid:
    """The learning rates a run tries, the dev-best kept. The teacher's grid is over its
    transformer's rate with its head at ``teacher_head_lr``; every other system trains as a
    whole at each of ``rates`` (a lower rate for a student's encoder than for its head scored
    lower on SST-2 where we measured it; README, glue-eval protocol). ``search_seeds``: the
    seeds that search the grid; the later ones train at the rate those chose (None: all)."""

    rates: tuple[float, ...] = LR_GRID
    teacher_rates: tuple[float, ...] = TEACHER_LR_GRID
    teacher_head_lr: float = TEACHER_HEAD_LR
    search_seeds: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.teacher_head_lr) and self.teacher_head_lr > 0):
            raise UserError("--teacher-head-lr must be positive")
        if self.search_seeds is not None and self.search_seeds < 1:
            raise UserError("--grid-seeds must be positive")

    @classmethod
    def parse(cls, rates: str | Sequence[float], teacher_rates: str | Sequence[float],
              teacher_head_lr: float, search_seeds: int | None = None) -> RateGrid:
        """From the options as given (comma lists or numbers): the one place rates are parsed."""
        return cls(tuple(parse_rates(rates, "--lr-grid")),
                   tuple(parse_rates(teacher_rates, "--teacher-lr-grid")),
                   teacher_head_lr, search_seeds)

    def points(self, teacher: bool) -> tuple[list[float], list[float] | None]:
        """``finetune_grid``'s (rates, encoder_rates)."""
        if teacher:
            return [self.teacher_head_lr], list(self.teacher_rates)
        return list(self.rates), None

    def searches(self, seed: int) -> bool:
        """Whether run ``seed`` tries every point of the grid (else it reuses the chosen rate)."""
        return self.search_seeds is None or seed < self.search_seeds


@dataclass(frozen=True)
class Recipe:
    """How every run trains: the optimisation settings of each run and its rate grid."""

    epochs: int = TrainSettings.epochs
    batch_size: int = TrainSettings.batch_size
    patience: int = TrainSettings.patience
    kd_alpha: float = TrainSettings.kd_alpha
    grid: RateGrid = field(default_factory=RateGrid)
    # the training steps' precision where it is not the device's own (set once the device is
    # known: at_precision)
    precision: str | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be positive")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise UserError(f"--kd-alpha must be in [0, 1], got {self.kd_alpha}")

    def at_precision(self, precision: str, device: torch.device) -> Recipe:
        """This recipe with its training steps at ``precision`` (an option's value) resolved on
        ``device``: set once the device is known; a UserError for one the device cannot run."""
        return dataclasses.replace(self, precision=precision_override(precision, device))

    def settings(self, teacher: bool, seed: int) -> TrainSettings:
        """One run's settings before the grid sets its rates (the teacher's head rate is fixed)."""
        return TrainSettings(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.grid.teacher_head_lr if teacher else self.grid.rates[0],
            encoder_lr=self.grid.teacher_rates[0] if teacher else None,
            patience=self.patience,
            kd_alpha=self.kd_alpha,
            seed=seed,
            precision=self.precision,
        )
