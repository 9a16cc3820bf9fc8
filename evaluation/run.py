"""Stage three: fine-tune and score every system on every task, then write the results.

For each task: read it, take the training subset, run the STS-B zero-shot check, compute the
teacher's logits once if a ``+kd`` system needs them, then fine-tune each system with each seed.
Every run writes its epochs to ``logs/<system>/<task>/seed<k>.jsonl``; after each task its runs
go to ``runs.jsonl``.

Under torchrun the teacher's logits are computed shard by shard across the ranks, and the task's
(system, seed) runs are dealt out round-robin; rank 0 gathers the records and writes the results.
Every run is seeded on its own, so the scores do not depend on the number of ranks.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from data.glue import GlueSplit, TaskData, load_task
from evaluation.config import EvalConfig
from evaluation.finetune import encode_split, finetune, predict
from evaluation.kd import TEACHER_SEED, seed0_teacher, teacher_logits
from evaluation.report import (
    append_jsonl,
    run_log_path,
    summarize,
    write_results,
    write_submission,
)
from evaluation.systems import SystemSpec, build_model, resolve_systems
from evaluation.zero_shot import stsb_zero_shot
from pipeline.device import resolve_device
from pipeline.distributed import LONG_WAIT, DistContext, init_distributed
from pipeline.errors import UserError

SUBSET_SEED = 0  # one fixed training subset for every system and seed


@dataclass
class EvalResult:
    out: Path
    summary: dict
    zero_shot: dict[str, float]
    seconds: float
    rank: int = 0

    def summary_line(self) -> str:
        return f"{len(self.summary)} system(s) in {self.seconds:.0f}s; see {self.out / 'results.md'}"


def run_glue_eval(config: EvalConfig, ctx: DistContext | None = None) -> EvalResult:
    """Run the whole evaluation described by ``config``."""
    started = time.perf_counter()
    # the others wait while rank 0 fine-tunes a teacher, or for a rank's long last run
    ctx = ctx or init_distributed(timeout=LONG_WAIT)
    specs = resolve_systems(config.systems)
    if config.zero_shot and "STS-B" not in config.tasks:
        raise UserError("--zero-shot scores STS-B, which is not among the tasks "
                        "(add --tasks STS-B; it needs STS-B/ in --glue-dir)")
    device = resolve_device(ctx.device(config.device))
    config.out.mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        (config.out / "runs.jsonl").unlink(missing_ok=True)  # this run's records only
    ctx.barrier()
    runs: list[dict] = []
    zero_shot: dict[str, float] = {}
    for name in ["STS-B"] if config.zero_shot else config.tasks:
        data = load_task(name, config.glue_dir, with_test=config.predict_test and not config.zero_shot)
        train = training_subset(data.train, config.max_train_samples)
        skipped = f", {data.train.skipped} malformed rows skipped" if data.train.skipped else ""
        _log(f"{name}: {len(train)} training rows{skipped}, dev sizes "
             f"{[len(d) for d in data.dev.values()]} ({data.source})")
        if name == "STS-B" and ctx.is_main:
            zero_shot = stsb_zero_shot(specs, data.dev[""], config, _log)
        if not config.zero_shot:
            runs += run_task(specs, data, train, config, device, ctx)
    summary = summarize(runs, [s.label for s in specs], config.tasks) if runs else {}
    settings = {k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(config).items()}
    if ctx.is_main:
        write_results(config.out, summary, config.tasks, zero_shot, settings)
    return EvalResult(config.out, summary, zero_shot, time.perf_counter() - started, ctx.rank)


def run_task(specs: list[SystemSpec], data: TaskData, train: GlueSplit, config: EvalConfig,
             device: torch.device, ctx: DistContext) -> list[dict]:
    """Every system with every seed on one task; the teacher's logits first if +kd needs them.

    Rank r runs the jobs ``r, r + W, ...``; every rank returns all records, in job order.
    """
    targets = (teacher_logits(config, data, train, device, _log, ctx)
               if any(spec.kd for spec in specs) else None)
    jobs = [(spec, seed) for spec in specs
            for seed in range(config.teacher_seeds if spec.kind == "teacher" else config.seeds)]
    mine = {position: run_one(spec, data, train, targets if spec.kd else None, seed, config, device)
            for position, (spec, seed) in enumerate(jobs)
            if position % ctx.world_size == ctx.rank}
    gathered = {position: record for part in ctx.gather(mine) for position, record in part.items()}
    records = [gathered[position] for position in range(len(jobs))]
    if ctx.is_main:
        for record in records:
            append_jsonl(config.out / "runs.jsonl", record)
    return records


def training_subset(train: GlueSplit, limit: int | None) -> GlueSplit:
    """The first ``limit`` rows of one fixed shuffle (the whole split when ``limit`` is None)."""
    if limit is None or limit >= len(train):
        return train
    rows = np.random.default_rng(SUBSET_SEED).permutation(len(train))[:limit]
    return train.subset(np.sort(rows))


def run_one(spec: SystemSpec, data: TaskData, train: GlueSplit, targets: np.ndarray | None,
            seed: int, config: EvalConfig, device: torch.device) -> dict:
    """Fine-tune one system on one task with one seed; score dev, predict test if asked."""
    task = data.task
    started = time.perf_counter()
    if spec.kind == "teacher" and seed == TEACHER_SEED:
        model, result = seed0_teacher(config, data, train, device, _log)
    else:
        model = build_model(spec, task, config, seed)
        encoded_train = encode_split(model.backbone, train)
        encoded_train.targets = targets
        dev = {suffix: encode_split(model.backbone, split) for suffix, split in data.dev.items()}
        log_path = run_log_path(config.out, spec.slug, task.name, seed)
        log_path.unlink(missing_ok=True)
        result = finetune(
            model, task, encoded_train, dev, config.train_settings(spec.kind == "teacher", seed),
            device, log=lambda record: append_jsonl(log_path, record),
        )
    if config.predict_test:
        folder = config.out / "submissions" / spec.slug / f"seed{seed}"
        for stem, split in data.test.items():
            outputs = predict(model, encode_split(model.backbone, split), config.batch_size, device)
            write_submission(folder, task, stem, split, outputs)
    record = {
        "system": spec.label,
        "task": task.name,
        "seed": seed,
        "best_epoch": result.best_epoch,
        "metrics": result.dev_metrics,
        "score": result.score,
        "train_rows": len(train),
        # the epochs' time, also when the seed-0 teacher was reused from an earlier run
        "train_seconds": round(sum(epoch["seconds"] for epoch in result.history), 2),
        "seconds": round(time.perf_counter() - started, 2),
    }
    _log(f"{task.name} {spec.label} seed {seed}: dev score {result.score:.2f} "
         f"(epoch {result.best_epoch}, {record['seconds']:.0f}s)")
    return record


def _log(message: str) -> None:
    click.echo(message, err=True)
