"""Stage three: fine-tune and score every system on every task, then write the results.

For each task: read it, take the training subsets (the teacher's may be smaller), run the STS-B
zero-shot check, compute the teacher's logits once if a ``+kd`` system needs them, then fine-tune
each system with each seed over its learning-rate grid, keeping the dev-best rate
(:func:`evaluation.finetune.finetune_grid`). Every run writes its epochs (all grid points) to
``logs/<system>/<task>/seed<k>.jsonl`` and, once done, its record to
``records/<system>/<task>/seed<k>.json`` (which ``--resume`` keeps while the run's inputs are
unchanged); after each task its runs go to ``runs.jsonl``. With
``--probe`` the systems are not fine-tuned but probed (:mod:`evaluation.probe`). Last, every
system's CPU speed is measured and ``pareto.png`` drawn.

Under torchrun the teacher's logits are computed shard by shard across the ranks, and the task's
(system, seed) runs are dealt out round-robin; rank 0 gathers the records and writes the results.
Every run is seeded on its own, so the scores do not depend on the number of ranks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from core.device import resolve_device
from core.distributed import LONG_WAIT, DistContext, init_distributed
from core.errors import UserError
from core.io import atomic_write_json, fingerprint
from core.teacher import teacher_spec
from data.glue import GlueSplit, TaskData, load_task
from evaluation.config import EvalConfig
from evaluation.finetune import FinetuneResult, FreshModels, encode_split, finetune_grid, predict
from evaluation.heads import TaskModel
from evaluation.kd import TEACHER_SEED, seed0_teacher, split_fingerprint, teacher_logits
from evaluation.report import (
    PROBE_NAME,
    RESULTS_NAME,
    append_jsonl,
    run_log_path,
    run_record_path,
    summarize,
    write_results,
    write_submission,
)
from evaluation.speed import measure_speeds, plot_pareto, speed_sentences
from evaluation.systems import SystemSpec, build_model, resolve_systems
from evaluation.zero_shot import stsb_zero_shot

SUBSET_SEED = 0  # one fixed training subset for every system and seed


@dataclass
class EvalResult:
    out: Path
    summary: dict
    zero_shot: dict[str, float]
    seconds: float
    rank: int = 0
    name: str = "results"  # results.md, or probe.md

    def summary_line(self) -> str:
        return f"{len(self.summary)} system(s) in {self.seconds:.0f}s; see {self.out / self.name}.md"


def run_glue_eval(config: EvalConfig, ctx: DistContext | None = None) -> EvalResult:
    """Run the whole evaluation described by ``config``."""
    started = time.perf_counter()
    # the others wait while rank 0 fine-tunes a teacher, or for a rank's long last run
    ctx = ctx or init_distributed(timeout=LONG_WAIT)
    specs = resolve_systems(config.systems)
    if config.zero_shot and "STS-B" not in config.tasks:
        raise UserError("--zero-shot scores STS-B, which is not among the tasks "
                        "(add --tasks STS-B; it needs STS-B/ in --glue-dir)")
    tasks = ["STS-B"] if config.zero_shot else config.tasks
    with_test = config.predict_test and not config.zero_shot and not config.probe
    # read before anything is written: GLUE from an unreachable hub fails here, OUT untouched
    first = load_task(tasks[0], config.glue_dir, with_test=with_test)
    device = resolve_device(ctx.device(config.device))
    config.out.mkdir(parents=True, exist_ok=True)
    if ctx.is_main and not config.probe:
        (config.out / "runs.jsonl").unlink(missing_ok=True)  # this run's records only
    if ctx.is_main and not config.zero_shot and any(spec.kind == "model2vec" for spec in specs):
        from evaluation.static import prepare_model2vec

        prepare_model2vec(config, _log)
    ctx.barrier()
    runs: list[dict] = []
    zero_shot: dict[str, float] = {}
    rows: dict[str, dict] = {}
    for name in tasks:
        data = first if name == tasks[0] else load_task(name, config.glue_dir, with_test=with_test)
        train = training_subset(data.train, config.max_train_samples)
        teacher_train = training_subset(data.train, config.teacher_cap)
        rows[name] = {"available": len(data.train), "systems": len(train), "teacher": len(teacher_train)}
        skipped = f", {data.train.skipped} malformed rows skipped" if data.train.skipped else ""
        teacher_rows = (f" ({len(teacher_train)} for the teacher)"
                        if len(teacher_train) != len(train) else "")
        _log(f"{name}: {len(train)} training rows{teacher_rows}{skipped}, dev sizes "
             f"{[len(d) for d in data.dev.values()]} ({data.source})")
        if name == "STS-B" and ctx.is_main:
            zero_shot = stsb_zero_shot(specs, data.dev[""], config, _log)
        if config.zero_shot:
            continue
        if config.probe:
            if ctx.is_main:  # minutes on one process: nothing to deal out
                from evaluation.probe import probe_task

                runs += probe_task(specs, data, train, teacher_train, config, device, _log)
        else:
            runs += run_task(specs, data, train, config, device, ctx, teacher_train)
    scored = [s.label for s in specs if not (config.probe and s.kd)]
    summary = summarize(runs, scored, tasks) if runs else {}
    settings = {k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(config).items()}
    settings["speed_sentences"] = len(speed_sentences(first))
    if config.probe:
        from evaluation.probe import C_GRID

        settings["probe_c_grid"] = list(C_GRID)
    if ctx.is_main:
        speeds = measure_speeds(specs, first, config, _log) if runs else {}
        write_results(config.out, summary, config.tasks, zero_shot, settings, rows=rows,
                      speeds=speeds, name=PROBE_NAME if config.probe else RESULTS_NAME)
        if speeds:
            plot_pareto(config.out)
    return EvalResult(config.out, summary, zero_shot, time.perf_counter() - started, ctx.rank,
                      PROBE_NAME if config.probe else RESULTS_NAME)


def run_task(specs: list[SystemSpec], data: TaskData, train: GlueSplit, config: EvalConfig,
             device: torch.device, ctx: DistContext, teacher_train: GlueSplit | None = None,
             ) -> list[dict]:
    """Every system with every seed on one task; the teacher's logits first if +kd needs them.
    The teacher row trains on ``teacher_train`` (default: ``train``), the others on ``train``.

    Rank r runs the jobs ``r, r + W, ...``; every rank returns all records, in job order.
    """
    teacher_train = train if teacher_train is None else teacher_train
    targets = (teacher_logits(config, data, train, device, _log, ctx, teacher_train)
               if any(spec.kd for spec in specs) else None)
    jobs = [(spec, seed) for spec in specs
            for seed in range(config.teacher_seeds if spec.kind == "teacher" else config.seeds)]
    # the seeds that search the rate grid first; then the others, at the rate those chose
    searching = [job for job in jobs if config.searches_grid(job[1])]
    records = run_jobs(searching, data, train, teacher_train, targets, config, device, ctx)
    chosen = {spec.label: best_rate([r for r in records if r["system"] == spec.label])
              for spec in specs}
    later = [job for job in jobs if not config.searches_grid(job[1])]
    records += run_jobs(later, data, train, teacher_train, targets, config, device, ctx, chosen)
    order = {(spec.label, seed): position for position, (spec, seed) in enumerate(jobs)}
    records.sort(key=lambda record: order[(record["system"], record["seed"])])
    if ctx.is_main:
        for record in records:
            append_jsonl(config.out / "runs.jsonl", record)
    return records


def run_jobs(jobs: list[tuple[SystemSpec, int]], data: TaskData, train: GlueSplit,
             teacher_train: GlueSplit, targets: np.ndarray | None, config: EvalConfig,
             device: torch.device, ctx: DistContext, rates: dict[str, tuple] | None = None,
             ) -> list[dict]:
    """Every (system, seed) job's record, in job order; rank r runs the jobs r, r + W, ....
    ``rates`` (system label -> (lr, encoder_lr)) fixes a system's rate instead of its grid."""
    mine = {position: run_one(spec, data, teacher_train if spec.kind == "teacher" else train,
                              targets if spec.kd else None, seed, config, device,
                              (rates or {}).get(spec.label))
            for position, (spec, seed) in enumerate(jobs)
            if position % ctx.world_size == ctx.rank}
    gathered = {position: record for part in ctx.gather(mine) for position, record in part.items()}
    return [gathered[position] for position in range(len(jobs))]


def best_rate(records: list[dict]) -> tuple[float, float | None] | None:
    """The grid point (lr, encoder_lr) with the best mean dev score over the runs that searched
    the grid (a tie goes to the earlier point); None without such runs."""
    scores: dict[tuple, list[float]] = {}
    for record in records:
        for point in record["lr_grid"]:
            scores.setdefault((point["lr"], point["encoder_lr"]), []).append(point["score"])
    if not scores:
        return None
    return max(scores, key=lambda point: float(np.mean(scores[point])))


def training_subset(train: GlueSplit, limit: int | None) -> GlueSplit:
    """The first ``limit`` rows of one fixed shuffle (the whole split when ``limit`` is None)."""
    if limit is None or limit >= len(train):
        return train
    rows = np.random.default_rng(SUBSET_SEED).permutation(len(train))[:limit]
    return train.subset(np.sort(rows))


def run_one(spec: SystemSpec, data: TaskData, train: GlueSplit, targets: np.ndarray | None,
            seed: int, config: EvalConfig, device: torch.device,
            rate: tuple[float, float | None] | None = None) -> dict:
    """Fine-tune one system on one task with one seed over its learning-rate grid (the dev-best
    rate kept), or at ``rate`` (lr, encoder_lr) when given; score dev, predict test if asked."""
    task = data.task
    key = fingerprint(run_source(spec, data, train, targets, seed, config, rate))
    record_path = run_record_path(config.out, spec.slug, task.name, seed)
    kept = kept_record(record_path, key) if config.resume else None
    if kept is not None:
        _log(f"{task.name} {spec.label} seed {seed}: dev score {kept['score']:.2f} "
             f"(kept from {record_path})")
        return kept
    started = time.perf_counter()
    model, result, rates = fit_system(spec, data, train, targets, seed, config, device,
                                      run_log_path(config.out, spec.slug, task.name, seed), rate)
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
        **rates,  # lr, encoder_lr and every grid point's dev score
        # every grid point's epochs, also when the seed-0 teacher was reused from an earlier run
        "train_seconds": round(sum(point["seconds"] for point in rates["lr_grid"]), 2),
        "seconds": round(time.perf_counter() - started, 2),
    }
    encoder = "" if rates["encoder_lr"] is None else f", encoder lr {rates['encoder_lr']:g}"
    _log(f"{task.name} {spec.label} seed {seed}: dev score {result.score:.2f} "
         f"(lr {rates['lr']:g}{encoder}, epoch {result.best_epoch}, {record['seconds']:.0f}s)")
    # last, after its submissions: a record on disk means the whole run is done
    atomic_write_json(record_path, {"fingerprint": key, "record": record})
    return record


def run_source(spec: SystemSpec, data: TaskData, train: GlueSplit, targets: np.ndarray | None,
               seed: int, config: EvalConfig, rate: tuple[float, float | None] | None) -> dict:
    """What determines one run's record: the system's weights, the settings, the rates tried,
    the data and (for +kd) the teacher's logits. Not the number of seeds or systems asked for."""
    teacher = spec.kind == "teacher"
    settings = {k: v for k, v in vars(config.train_settings(teacher, seed)).items()
                if k not in ("lr", "encoder_lr") and (spec.kd or k != "kd_alpha")}
    return {
        "system": spec.label,
        "weights": weights_stamp(spec, config),
        "settings": settings,
        "rates": list(rate) if rate is not None else config.grid(teacher),
        "head_hidden": config.head_hidden,
        "dropout": config.dropout,
        "predict_test": config.predict_test,
        "train": split_fingerprint(train),
        "dev": {suffix: split_fingerprint(split) for suffix, split in data.dev.items()},
        "targets": None if targets is None else hashlib.sha256(targets.tobytes()).hexdigest(),
    }


def weights_stamp(spec: SystemSpec, config: EvalConfig) -> object:
    """The teacher's fingerprint for the systems built from it; a student directory's files
    (name, size, modification time) for the others: retraining a student changes them."""
    if spec.kind in ("teacher", "model2vec"):
        return teacher_spec(config.teacher).teacher_fingerprint
    if spec.path is None:  # scratch with the default architecture
        return None
    files = (spec.path / name for name in ("config.json", "model.safetensors"))
    return [(file.name, stat.st_size, stat.st_mtime_ns) for file in files if file.is_file()
            for stat in (file.stat(),)]


def kept_record(path: Path, key: str) -> dict | None:
    """The record a finished run left at ``path`` if it was made from the same inputs."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # absent or unreadable: the run is done again
    if not isinstance(saved, dict) or saved.get("fingerprint") != key:
        return None
    return saved.get("record")


def fit_system(spec: SystemSpec, data: TaskData, train: GlueSplit, targets: np.ndarray | None,
               seed: int, config: EvalConfig, device: torch.device, log_path: Path | None = None,
               rate: tuple[float, float | None] | None = None,
               ) -> tuple[TaskModel, FinetuneResult, dict]:
    """One system, one task, one seed over its learning-rate grid, the dev-best rate kept: the
    model (with its best epoch's weights), its result and its rates (``GridResult.rates``). The
    seed-0 teacher is ``seed0_teacher``'s (cached, shared with ``+kd``). glue-eval's run_one and
    ``pipeline finetune`` (a user's data) both train through here. ``log_path`` gets the epochs;
    ``rate`` = (lr, encoder_lr) trains at that one point instead of the grid (--grid-seeds)."""
    if spec.kind == "teacher" and seed == TEACHER_SEED:
        return seed0_teacher(config, data, train, device, _log)
    teacher = spec.kind == "teacher"
    task = data.task
    build = FreshModels(lambda: build_model(spec, task, config, seed))
    encoded_train = encode_split(build.first.backbone, train)
    encoded_train.targets = targets
    dev = {suffix: encode_split(build.first.backbone, split) for suffix, split in data.dev.items()}
    if log_path is not None:
        log_path.unlink(missing_ok=True)

    def log(record: dict) -> None:
        if log_path is not None:
            append_jsonl(log_path, record)

    lr_grid, encoder_grid = config.grid(teacher)
    if rate is not None:
        lr_grid, encoder_grid = [rate[0]], None if rate[1] is None else [rate[1]]
    grid = finetune_grid(build, task, encoded_train, dev, config.train_settings(teacher, seed),
                         lr_grid, device, encoder_grid, log=log)
    return grid.model, grid.result, grid.rates()


def _log(message: str) -> None:
    click.echo(message, err=True)
