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

The ``+kd`` systems' transfer set (the training rows, with ``--augment N`` N variants of each)
and the teacher's logits on it come from the kd-logit cache (``--kd-cache``, :mod:`evaluation.kd`),
filled once for every system, seed and run that shares it. Under torchrun rank 0 fills it while
the others wait, and the task's (system, seed) runs are dealt out round-robin; rank 0 gathers the
records and writes the results.
Every run is seeded on its own, so the scores do not depend on the number of ranks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from core.device import resolve_device
from core.distributed import LONG_WAIT, DistContext, init_distributed
from core.errors import UserError
from core.io import atomic_write_json, fingerprint
from core.progress import log as _log
from core.teacher import teacher_spec
from data.augment import AUTO, TransferSettings, transfer_settings
from data.glue import TASKS, GlueSplit, TaskData, available_tasks, check_task_files, load_task
from data.pos import get_tagger
from evaluation.config import EvalConfig
from evaluation.engine import RunRecord, TrainingData, best_rate, fit, training_subset
from evaluation.finetune import GridCheckpoint, encode_split, predict
from evaluation.finetuned_teacher import pairs_identity, split_fingerprint
from evaluation.kd import LogitJob, given_kd_teacher, seed0_kd_teacher, transfer_data
from evaluation.report import (
    PROBE_NAME,
    RESULTS_NAME,
    append_jsonl,
    run_log_path,
    run_partial_path,
    run_record_path,
    summarize,
    write_results,
    write_submission,
)
from evaluation.speed import measure_speeds, plot_pareto, speed_sentences
from evaluation.systems import (
    BASELINES,
    SystemSpec,
    discover_students,
    parse_system,
    resolve_systems,
)
from evaluation.zero_shot import stsb_zero_shot


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


@dataclass
class Inputs:
    """What a run reads from the disk before it starts: its systems and its tasks."""

    specs: list[SystemSpec]
    tasks: list[str]  # the tasks asked for or found, GLUE order
    zero_shot: bool = False

    @property
    def evaluated(self) -> list[str]:
        """The tasks that are run: only STS-B under --zero-shot."""
        return ["STS-B"] if self.zero_shot else self.tasks


def resolve_inputs(config: EvalConfig) -> Inputs:
    """The systems (bare: the students found under --students-dir and the baselines) and the
    tasks (none named: every task found in --glue-dir), checked before anything is trained."""
    if config.glue_dir is not None and not config.glue_dir.is_dir():
        raise UserError(f"--glue-dir {config.glue_dir}: no such directory")
    if config.kd_teacher is not None and not config.kd_teacher.is_dir():
        raise UserError(f"--kd-teacher {config.kd_teacher}: no such directory")
    specs = ([parse_system(text) for text in config.systems] if config.systems
             else [*discover_students(config.students_dir), *map(parse_system, BASELINES)])
    tasks = resolve_tasks(config)
    specs = resolve_systems(specs)
    kd = any(spec.kd for spec in specs)
    if config.augment not in (0, AUTO) and not kd:  # auto, the default, sizes a set only if there is one
        raise UserError("--augment makes the transfer set of +kd systems, and none is given "
                        "(add e.g. --system kd)")
    if config.augment and kd:
        get_tagger(TransferSettings.tagger)  # a missing tagger fails now, not after fine-tuning
    if config.zero_shot and "STS-B" not in tasks:
        raise UserError("--zero-shot scores STS-B, which is not among the tasks "
                        "(add --tasks STS-B; it needs STS-B/ in --glue-dir)")
    return Inputs(specs, tasks, config.zero_shot)


def resolve_tasks(config: EvalConfig) -> list[str]:
    """The tasks named, or every task with its files in --glue-dir (all nine from the hub); a
    task with missing files fails now, not after hours of training on the tasks before it."""
    names = list(config.tasks)
    if not names:
        names = list(TASKS) if config.glue_dir is None else available_tasks(config.glue_dir)
        if not names:
            raise UserError(
                f"--glue-dir {config.glue_dir}: no GLUE task folder with train.tsv and dev "
                "files (expected e.g. CoLA/train.tsv, CoLA/dev.tsv)"
            )
    if config.glue_dir is not None:
        for name in names:
            check_task_files(config.glue_dir, TASKS[name], config.predict_test and not config.zero_shot)
    return [name for name in TASKS if name in names]  # GLUE order, no duplicates


def run_glue_eval(config: EvalConfig, ctx: DistContext | None = None) -> EvalResult:
    """Run the whole evaluation described by ``config``."""
    started = time.perf_counter()
    # the others wait while rank 0 fine-tunes a teacher, or for a rank's long last run
    ctx = ctx or init_distributed(timeout=LONG_WAIT)
    inputs = resolve_inputs(config)
    with_test = config.predict_test and not config.zero_shot and not config.probe
    # read before anything is written: GLUE from an unreachable hub fails here, OUT untouched
    tasks = inputs.evaluated
    first = load_task(tasks[0], config.glue_dir, with_test=with_test)
    device = resolve_device(ctx.device(config.device))
    config.recipe = config.recipe.at_precision(config.precision, device)
    _prepare_out(config, inputs, ctx)
    runs: list[dict] = []
    zero_shot: dict[str, float] = {}
    rows: dict[str, dict] = {}
    for name in tasks:
        data = first if name == tasks[0] else load_task(name, config.glue_dir, with_test=with_test)
        train, teacher_train = _training_subsets(data, config, rows)
        if name == "STS-B" and ctx.is_main:
            zero_shot = stsb_zero_shot(inputs.specs, data.dev[""], config.teacher, config.device, _log)
        if not config.zero_shot:
            runs += _evaluate_task(inputs.specs, data, train, teacher_train, config, device, ctx)
    name = PROBE_NAME if config.probe else RESULTS_NAME
    scored = [s.label for s in inputs.specs if not (config.probe and s.kd)]
    summary = summarize(runs, scored, tasks) if runs else {}
    if ctx.is_main:
        speeds = measure_speeds(inputs.specs, first, config.builder, _log) if runs else {}
        write_results(config.out, summary, inputs.tasks, zero_shot, _settings(config, inputs, first),
                      rows=rows, speeds=speeds, name=name)
        if speeds:
            plot_pareto(config.out)
    return EvalResult(config.out, summary, zero_shot, time.perf_counter() - started, ctx.rank, name)


def _prepare_out(config: EvalConfig, inputs: Inputs, ctx: DistContext) -> None:
    config.out.mkdir(parents=True, exist_ok=True)
    if ctx.is_main and not config.probe:
        (config.out / "runs.jsonl").unlink(missing_ok=True)  # this run's records only
    if ctx.is_main and not config.zero_shot and any(spec.kind == "model2vec" for spec in inputs.specs):
        from evaluation.static import prepare_model2vec

        prepare_model2vec(config.teacher, config.out, _log)
    ctx.barrier()


def _training_subsets(data: TaskData, config: EvalConfig,
                      rows: dict[str, dict]) -> tuple[GlueSplit, GlueSplit]:
    """The rows every system and the teacher train on (counted in ``rows``)."""
    name = data.task.name
    train = training_subset(data.train, config.max_train_samples)
    teacher_train = training_subset(data.train, config.teacher_cap)
    rows[name] = {"available": len(data.train), "systems": len(train), "teacher": len(teacher_train)}
    skipped = f", {data.train.skipped} malformed rows skipped" if data.train.skipped else ""
    teacher_rows = f" ({len(teacher_train)} for the teacher)" if len(teacher_train) != len(train) else ""
    _log(f"{name}: {len(train)} training rows{teacher_rows}{skipped}, dev sizes "
         f"{[len(d) for d in data.dev.values()]} ({data.source})")
    return train, teacher_train


def _evaluate_task(specs: list[SystemSpec], data: TaskData, train: GlueSplit,
                   teacher_train: GlueSplit, config: EvalConfig, device: torch.device,
                   ctx: DistContext) -> list[dict]:
    """One task's probes or fine-tuning runs."""
    if not config.probe:
        return run_task(specs, data, train, config, device, ctx, teacher_train)
    if not ctx.is_main:  # minutes on one process: nothing to deal out
        return []
    from evaluation.probe import probe_task

    return probe_task(specs, data, train, teacher_train, config.builder, config.recipe.batch_size,
                      device, _log)


def _settings(config: EvalConfig, inputs: Inputs, first: TaskData) -> dict:
    """The run's settings as results.json records them (the systems and tasks as resolved)."""
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}
    settings["systems"] = list(config.systems) or [spec.label for spec in inputs.specs]
    settings["tasks"] = list(inputs.tasks)
    settings["speed_sentences"] = len(speed_sentences(first))
    if config.probe:
        from evaluation.probe import C_GRID

        settings["probe_c_grid"] = list(C_GRID)
    return settings


def run_task(specs: list[SystemSpec], data: TaskData, train: GlueSplit, config: EvalConfig,
             device: torch.device, ctx: DistContext, teacher_train: GlueSplit | None = None,
             ) -> list[dict]:
    """Every system with every seed on one task; the teacher's logits first if +kd needs them.
    The teacher row trains on ``teacher_train`` (default: ``train``), the others on ``train``.

    Rank r runs the jobs ``r, r + W, ...``; every rank returns all records, in job order.
    """
    teacher_train = train if teacher_train is None else teacher_train
    taught = (kd_training_data(config, data, train, teacher_train, device, ctx)
              if any(spec.kd for spec in specs) else None)
    sources = {False: TrainingData(data, train), True: taught,
               "teacher": TrainingData(data, teacher_train)}
    jobs = [(spec, seed) for spec in specs
            for seed in range(config.teacher_seeds if spec.kind == "teacher" else config.seeds)]
    # the seeds that search the rate grid first; then the others, at the rate those chose
    searching = [job for job in jobs if config.recipe.grid.searches(job[1])]
    records = run_jobs(searching, sources, config, device, ctx)
    chosen = {spec.label: best_rate([r for r in records if r["system"] == spec.label])
              for spec in specs}
    later = [job for job in jobs if not config.recipe.grid.searches(job[1])]
    records += run_jobs(later, sources, config, device, ctx, chosen)
    order = {(spec.label, seed): position for position, (spec, seed) in enumerate(jobs)}
    records.sort(key=lambda record: order[(record["system"], record["seed"])])
    if ctx.is_main:
        for record in records:
            append_jsonl(config.out / "runs.jsonl", record)
    return records


def kd_training_data(config: EvalConfig, data: TaskData, train: GlueSplit,
                     teacher_train: GlueSplit, device: torch.device,
                     ctx: DistContext | None = None,
                     log: Callable[[str], None] = _log) -> TrainingData:
    """The +kd systems' rows and teacher logits: ``--kd-teacher``'s fine-tuned teacher, or the
    seed-0 teacher fine-tuned on ``teacher_train`` (only if the cache lacks its logits)."""
    teacher = (seed0_kd_teacher(config.builder, config.recipe, data, teacher_train, device, log)
               if config.kd_teacher is None else
               given_kd_teacher(config.kd_teacher, data, config.dropout))
    job = LogitJob(config.kd_cache, transfer_settings(config.augment, len(train)),
                   config.batch_size, device, config.command)
    return transfer_data(teacher, data, train, job, log, ctx)


def run_jobs(jobs: list[tuple[SystemSpec, int]], sources: dict, config: EvalConfig,
             device: torch.device, ctx: DistContext, rates: dict[str, tuple] | None = None,
             ) -> list[dict]:
    """Every (system, seed) job's record, in job order; rank r runs the jobs r, r + W, ....
    ``sources`` holds the TrainingData of the teacher (key "teacher"), of +kd systems (True)
    and of the others (False); ``rates`` (label -> (lr, encoder_lr)) fixes a system's rate."""
    mine = {position: run_one(spec, sources["teacher" if spec.kind == "teacher" else spec.kd],
                              seed, config, device, (rates or {}).get(spec.label))
            for position, (spec, seed) in enumerate(jobs)
            if position % ctx.world_size == ctx.rank}
    gathered = {position: record for part in ctx.gather(mine) for position, record in part.items()}
    return [gathered[position] for position in range(len(jobs))]


def run_one(spec: SystemSpec, rows: TrainingData, seed: int, config: EvalConfig,
            device: torch.device, rate: tuple[float, float | None] | None = None) -> dict:
    """Fine-tune one system on one task with one seed over its learning-rate grid (the dev-best
    rate kept), or at ``rate`` (lr, encoder_lr) when given; score dev, predict test if asked."""
    task = rows.data.task
    key = fingerprint(run_source(spec, rows, seed, config, rate))
    record_path = run_record_path(config.out, spec.slug, task.name, seed)
    kept = kept_record(record_path, key) if config.resume else None
    if kept is not None:
        _log(f"{task.name} {spec.label} seed {seed}: dev score {kept['score']:.2f} "
             f"(kept from {record_path})")
        return kept
    # The finished grid points of a run stopped part way: kept for --resume, else started afresh.
    checkpoint = GridCheckpoint(run_partial_path(config.out, spec.slug, task.name, seed), key)
    if not config.resume:
        checkpoint.clear()
    started = time.perf_counter()
    fitted = fit(spec, rows, seed, config.recipe, config.builder, device,
                 run_log_path(config.out, spec.slug, task.name, seed), rate, checkpoint)
    if config.predict_test:
        folder = config.out / "submissions" / spec.slug / f"seed{seed}"
        for stem, split in rows.data.test.items():
            outputs = predict(fitted.model, encode_split(fitted.model.backbone, split),
                              config.batch_size, device)
            write_submission(folder, task, stem, split, outputs)
    record = RunRecord.of(
        spec, seed, fitted, task=task.name, train_rows=len(rows.train),
        precision=config.recipe.precision,
        # every grid point's epochs, also when the seed-0 teacher was reused from an earlier run
        train_seconds=round(sum(point["seconds"] for point in fitted.rates["lr_grid"]), 2),
        seconds=round(time.perf_counter() - started, 2)).to_dict()
    encoder = "" if record["encoder_lr"] is None else f", encoder lr {record['encoder_lr']:g}"
    _log(f"{task.name} {spec.label} seed {seed}: dev score {record['score']:.2f} "
         f"(lr {record['lr']:g}{encoder}, epoch {record['best_epoch']}, {record['seconds']:.0f}s)")
    # last, after its submissions: a record on disk means the whole run is done
    atomic_write_json(record_path, {"fingerprint": key, "record": record})
    checkpoint.clear()
    return record


def run_source(spec: SystemSpec, rows: TrainingData, seed: int, config: EvalConfig,
               rate: tuple[float, float | None] | None) -> dict:
    """What determines one run's record: the system's weights, the settings, the rates tried,
    the data and (for +kd) the teacher's logits. Not the number of seeds or systems asked for."""
    teacher = spec.kind == "teacher"
    settings = config.recipe.settings(teacher, seed).identity(
        "lr", "encoder_lr", *(() if spec.kd else ("kd_alpha",)))
    targets = rows.targets
    return {
        "system": spec.label,
        "weights": weights_fingerprint(spec, config.teacher),
        "settings": settings,
        "rates": list(rate) if rate is not None else config.recipe.grid.points(teacher),
        "head_hidden": config.head_hidden,
        "dropout": config.dropout,
        "predict_test": config.predict_test,
        "train": split_fingerprint(rows.train),
        "dev": {suffix: split_fingerprint(split) for suffix, split in rows.data.dev.items()},
        "targets": None if targets is None else hashlib.sha256(targets.tobytes()).hexdigest(),
        # the variants' rules and seed (their text is in "train"); absent without variants, so
        # the runs without a transfer set keep the fingerprints they had
        **({"transfer": rows.transfer.identity()} if rows.transfer is not None else {}),
        **(pairs_identity(config.builder.teacher_pairs, rows.data.task) if teacher else {}),
    }


def weights_fingerprint(spec: SystemSpec, teacher: str | None) -> str | None:
    """The teacher's fingerprint for the systems built from it; a student directory's content
    fingerprint (its config and weights) for the others: retraining a student changes it."""
    if spec.kind in ("teacher", "model2vec"):
        return teacher_spec(teacher).teacher_fingerprint
    return None if spec.student is None else spec.student.fingerprint()


def kept_record(path: Path, key: str) -> dict | None:
    """The record a finished run left at ``path`` if it was made from the same inputs."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # absent or unreadable: the run is done again
    if not isinstance(saved, dict) or saved.get("fingerprint") != key:
        return None
    return saved.get("record")
