"""`train-student`: fit a BiLSTM to cached teacher vectors (SRA), resumable and reproducible."""

from __future__ import annotations

import json
import math
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from core.device import autocast_context, precision_context, resolve_device, resolve_precision
from core.distributed import DistContext, init_distributed
from core.errors import UserError
from core.io import atomic_output, atomic_write_bytes, atomic_write_json, remove_leftovers
from core.optim import OptimStep, warmup_cosine_lr
from core.progress import bar as progress_bar
from student.config import RESUMABLE_CHANGES, StudentConfig, TrainConfig
from student.data import Batch, ShardCorpus, Split, batches_per_epoch, epoch_plan, heldout_split
from student.directory import SUMMARY_NAME, StudentDirectory
from student.evaluate import agreement
from student.losses import SRALoss
from student.model import StudentEncoder
from student.sentence import SentenceStudent
from student.tokenization import TOKENIZER_FILES, pad_token_id

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "metrics.png"
BEST_DIR = "best"


@dataclass
class TrainResult:
    out: Path
    steps: int
    finished: bool
    metrics: dict[str, float]
    best_step: int | None = None

    def summary(self) -> str:
        state = "finished" if self.finished else "stopped (resume with --resume)"
        figures = ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items())
        return f"{self.out}: {state} at step {self.steps}" + (f"; {figures}" if figures else "")


def student_config(config: TrainConfig, corpus: ShardCorpus, embeddings: np.ndarray) -> StudentConfig:
    """The architecture: sizes from the options, vocabulary and output from the shards."""
    manifest = corpus.manifest
    max_length = config.max_length or manifest.max_length
    if max_length > manifest.max_length:
        raise UserError(
            f"--max-length {max_length} exceeds the teacher's max_length {manifest.max_length} "
            "used for the shards (the teacher never saw longer inputs)"
        )
    return StudentConfig(
        vocab_size=max(embeddings.shape[0], corpus.tokenizer.get_vocab_size()),
        output_dim=manifest.dim,
        embed_dim=config.embed_dim or embeddings.shape[1],
        hidden=config.hidden,
        layers=config.layers,
        pooling=config.pooling,
        dropout=config.dropout,
        pad_token_id=pad_token_id(corpus.tokenizer, corpus.tokenizer_dir),
        max_length=max_length,
        normalize=manifest.normalize,
    )


def _shards_identity(corpus: ShardCorpus) -> list[dict[str, Any]]:
    return [{"settings": d.manifest.settings_fingerprint, "rows": d.manifest.num_rows}
            for d in corpus.directories]


class Trainer:
    """One training run; state lives in attributes so that a checkpoint can capture all of it.

    Under torchrun each rank trains on its slice of every global batch (DistributedDataParallel
    averages the gradients); only rank 0 evaluates and writes checkpoints, metrics and students.
    """

    def __init__(self, config: TrainConfig, ctx: DistContext | None = None):
        self.config = config
        self.ctx = ctx or init_distributed()
        self.out = Path(config.out)
        self.corpus = ShardCorpus(config.shards, config.verify)
        # random still takes its sizes (vocabulary, width) from the input embeddings
        kind = "contextual" if config.init_embeddings == "contextual" else "input"
        embeddings = self.corpus.directories[0].load_embeddings(kind)  # (V, D_emb)
        self.student_config = student_config(config, self.corpus, embeddings)
        self.device = resolve_device(self.ctx.device(config.device))
        self.precision = resolve_precision(config.precision, self.device)  # of the training steps
        self.loss = SRALoss(config.loss, config.loss_weights)
        self.model = self._build_model(embeddings)
        self.forward_model = self.model  # the module that trains: DDP-wrapped under torchrun
        if self.ctx.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = self._build_optimizer()
        self.split = self._split()
        per_epoch = batches_per_epoch(len(self.split.train), config.batch_size)
        self.total_steps = config.max_steps or config.epochs * per_epoch
        self.warmup = (config.warmup_steps if config.warmup_steps is not None
                       else max(1, self.total_steps // 50))
        self.min_lr = config.min_lr if config.min_lr is not None else config.lr / 10
        # both groups peak at config.lr (built before a checkpoint replaces the rates)
        self.optim_step = OptimStep(
            self.optimizer,
            lambda step, peak: warmup_cosine_lr(step, self.total_steps, peak, self.min_lr,
                                                self.warmup),
            self.device, self.model.parameters(), config.grad_clip,
            loss_scaling=self.precision == "fp16",
        )
        self.validation = self._validation_batches()
        self.ood = self._ood_batches()
        self._start_state()

    def _build_model(self, embeddings: np.ndarray) -> StudentEncoder:
        """The seeded student on ``self.device``, its token table started from ``embeddings``."""
        config = self.config
        torch.manual_seed(config.seed)
        model = StudentEncoder(self.student_config)
        if config.init_embeddings != "random":
            model.init_embeddings(embeddings, seed=config.seed)
        if config.freeze_embeddings:
            model.embedding.weight.requires_grad_(False)
        return model.to(self.device)

    def _build_optimizer(self) -> torch.optim.AdamW:
        """AdamW over the parameters that train; the 1-d ones (biases) are not decayed."""
        config = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(
            [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
            lr=config.lr,
            fused=True,  # one kernel for all tensors: ~3x faster than the default on CPU too
        )

    def _split(self) -> Split:
        """The held-out split of every row; training keeps the first --train-rows if given."""
        config = self.config
        split = heldout_split(self.corpus.num_rows, config.heldout, config.val_size,
                              self.corpus.source_ids)
        if len(split.train) == 0:
            raise UserError("no training rows left after the held-out split; lower --heldout")
        if config.train_rows is not None:
            if config.train_rows > len(split.train):
                raise UserError(f"--train-rows {config.train_rows} exceeds the "
                                f"{len(split.train)} training rows of the shards")
            split.train = split.train[: config.train_rows]  # ascending: a prefix
        return split

    def _start_state(self) -> None:
        """Where a fresh run starts; a checkpoint replaces all of it."""
        self.step = 0
        self.epoch = 0
        self.position = 0  # batches of the current epoch already trained on
        self.best_cosine = -math.inf
        self.best_step: int | None = None
        self.last_metrics: dict[str, float] = {}
        self.window = _Window()  # the log record being accumulated (checkpointed with the rest)

    # -- data --------------------------------------------------------------------------------
    def _batch(self, rows: np.ndarray) -> Batch:
        return self.corpus.rows(rows, self.student_config.max_length, self.student_config.pad_token_id)

    def _validation_batches(self) -> list[Batch]:
        return self._batches_of(self.corpus, self.split.validation)

    def _batches_of(self, corpus: ShardCorpus, rows: np.ndarray) -> list[Batch]:
        rows = rows[np.argsort(corpus.lengths[rows], kind="stable")]
        size = self.config.batch_size
        max_length, pad_id = self.student_config.max_length, self.student_config.pad_token_id
        return [corpus.rows(rows[i : i + size], max_length, pad_id) for i in range(0, len(rows), size)]

    def _ood_batches(self) -> list[Batch]:
        """The out-of-domain sentences encoded beside the first shard directory (``encode
        --ood-corpus``): never trained on, so a student that only fits its corpus shows here."""
        ood = self.corpus.directories[0].ood_directory
        if ood is None or not self.ctx.is_main:
            return []
        corpus = ShardCorpus([ood.path], self.config.verify)
        return self._batches_of(corpus, np.arange(corpus.num_rows))

    # -- checkpoints -------------------------------------------------------------------------
    def _checkpoint_state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.optim_step.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "best_cosine": self.best_cosine,
            "best_step": self.best_step,
            "window": vars(self.window),
            "rng": rng,
            "model_args": self.student_config.to_dict(),
            "config": self.config.to_dict(),
            "shards": _shards_identity(self.corpus),
        }

    def save_checkpoint(self) -> None:
        if not self.ctx.is_main:
            return
        with atomic_output(self.out / CHECKPOINT_NAME) as tmp:  # never a half-written checkpoint
            torch.save(self._checkpoint_state(), tmp)

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        changed = sorted(
            key for key, value in state["config"].items()
            if key not in RESUMABLE_CHANGES and self.config.to_dict().get(key) != value
        )
        if state["shards"] != _shards_identity(self.corpus):
            changed.append("shards (contents)")
        if changed:
            raise UserError(
                f"{path}: the checkpoint was made with different settings ({', '.join(changed)}); "
                "rerun with the original options or use --overwrite to start over"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.optim_step.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.best_cosine, self.best_step = state["best_cosine"], state["best_step"]
        vars(self.window).update(state["window"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        # Records written after the checkpoint belong to the interrupted part; drop them.
        self.rewrite_metrics(lambda record: record["step"] <= self.step)

    # -- metrics -----------------------------------------------------------------------------
    def _record(self, record: dict[str, Any]) -> None:
        if not self.ctx.is_main:
            return
        with open(self.out / METRICS_NAME, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _records(self) -> list[dict[str, Any]]:
        path = self.out / METRICS_NAME
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def rewrite_metrics(self, keep) -> None:
        if not self.ctx.is_main:
            return
        records = [r for r in self._records() if keep(r)]
        # a resumed run drops the records past its checkpoint: all of the file, or none of it
        atomic_write_bytes(self.out / METRICS_NAME, "".join(json.dumps(r) + "\n" for r in records).encode())

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Agreement with the teacher on held-out (``val_*``) and out-of-domain (``ood_*``) rows."""
        if not self.ctx.is_main:
            return {}
        self.model.eval()
        metrics: dict[str, float] = {}
        for prefix, batches in (("val", self.validation), ("ood", self.ood)):
            outputs, targets = [], []
            for batch in batches:
                with autocast_context(self.device):
                    vectors = self.model(batch.input_ids.to(self.device), batch.lengths)
                outputs.append(vectors.float().cpu().numpy())
                targets.append(batch.targets.numpy())
            if outputs:
                metrics.update(agreement(np.concatenate(outputs), np.concatenate(targets), prefix))
        self.model.train()
        return metrics

    # -- training ----------------------------------------------------------------------------
    def local_rows(self, rows: np.ndarray) -> tuple[np.ndarray, float]:
        """This rank's slice of a global batch, and its loss weight.

        DDP averages gradients over ranks; weighting each rank's mean loss by
        ``n_rank * world / n_global`` makes that average the gradient of the global batch mean.
        A rank left without rows trains on one row with weight 0, so every rank joins the all-reduce.
        """
        if not self.ctx.enabled:
            return rows, 1.0
        mine = rows[self.ctx.rank :: self.ctx.world_size]
        if len(mine) == 0:
            return rows[:1], 0.0
        return mine, len(mine) * self.ctx.world_size / len(rows)

    def train_step(self, batch: Batch, weight: float = 1.0) -> dict[str, float]:
        """Optimisation step ``self.step`` on ``batch``; its losses (the global batch's means)."""
        with precision_context(self.precision, self.device):
            vectors = self.forward_model(batch.input_ids.to(self.device, non_blocking=True),
                                         batch.lengths)
        loss, parts = self.loss(vectors, batch.targets.to(self.device, non_blocking=True))
        if self.ctx.enabled:
            loss = loss * weight
            parts = {k: v.detach() * weight for k, v in parts.items()}
        self.optim_step(loss, self.step)
        logged = torch.stack([loss.detach(), *parts.values()]).float()
        if self.ctx.enabled:  # the global batch's mean losses, for the log
            torch.distributed.all_reduce(logged)
            logged /= self.ctx.world_size
        values = logged.tolist()
        return {"loss": values[0], **{f"loss_{k}": v for k, v in zip(parts, values[1:], strict=True)}}

    def run(self) -> TrainResult:
        config = self.config
        self.model.train()
        start_step = self.step
        bar = progress_bar(total=self.total_steps, initial=self.step, unit="step", desc=self.out.name,
                           enabled=config.progress and self.ctx.is_main)
        if self.step == 0:  # the starting point of the curves
            self._record({"kind": "eval", "step": 0, "epoch": 0, **self.evaluate()})
        try:
            while self.step < self.total_steps:
                plan = epoch_plan(self.split.train, self.corpus.lengths, self.corpus.shard_starts,
                                  config.batch_size, config.shuffle_buffer, config.seed, self.epoch)
                while self.position < len(plan) and self.step < self.total_steps:
                    started = time.perf_counter()
                    rows, weight = self.local_rows(plan[self.position])
                    batch = self._batch(rows)
                    loaded = time.perf_counter()
                    losses = self.train_step(batch, weight)
                    self.step += 1
                    self.position += 1
                    self.window.add(losses, len(plan[self.position - 1]), loaded - started,
                                    time.perf_counter() - started)
                    bar.update(1)
                    self._after_step(bar)
                    if config.stop_after and self.step - start_step >= config.stop_after \
                            and self.step < self.total_steps:
                        self.save_checkpoint()
                        self.plot()
                        return TrainResult(self.out, self.step, False, self.last_metrics)
                if self.position >= len(plan):
                    self.epoch += 1
                    self.position = 0
        finally:
            bar.close()
        return self.finish()

    def _after_step(self, bar) -> None:
        config = self.config
        if self.step % config.log_every == 0 or self.step == self.total_steps:
            lr = self.optimizer.param_groups[0]["lr"]  # the step just taken (every group's rate)
            record = {"kind": "train", "step": self.step, "epoch": self.epoch, "lr": lr,
                      **self.window.flush()}
            self._record(record)
            bar.set_postfix({k.removeprefix("loss_"): f"{v:.4g}" for k, v in record.items()
                             if k.startswith("loss") or k == "sent_per_s"})
        if self.step % config.eval_every == 0 or self.step == self.total_steps:
            self.last_metrics = self.evaluate()
            self._record({"kind": "eval", "step": self.step, "epoch": self.epoch,
                          **self.last_metrics})
            cosine = self.last_metrics.get("val_cosine", -math.inf)
            if cosine > self.best_cosine:
                self.best_cosine, self.best_step = cosine, self.step
                self.save_best()
        if self.step % config.checkpoint_every == 0 and self.step < self.total_steps:
            self.save_checkpoint()

    def save_best(self) -> None:
        """best/: the student of the best held-out cosine so far, replaced whole or not at all."""
        if not self.ctx.is_main:
            return
        with atomic_output(self.out / BEST_DIR, directory=True) as best:
            self.save_student(best)

    def save_student(self, directory: Path) -> None:
        if not self.ctx.is_main:
            return
        student = SentenceStudent(self.model, self.corpus.tokenizer, self.student_config)
        student.save(directory)
        # The other Hugging Face tokenizer files, so the directory also loads with AutoTokenizer.
        for name in TOKENIZER_FILES[1:]:
            source = self.corpus.tokenizer_dir / name
            if source.is_file():
                shutil.copyfile(source, directory / name)

    def finish(self) -> TrainResult:
        if not self.ctx.is_main:
            return TrainResult(self.out, self.step, True, {}, None)
        self.save_student(self.out)
        self.plot()
        summary = {
            "finished": True,
            "steps": self.step,
            "epochs_completed": self.epoch,
            "final": self.last_metrics,
            "best_step": self.best_step,
            "best_val_cosine": self.best_cosine if self.best_step is not None else None,
            "teacher": self.corpus.manifest.teacher,
            "teacher_fingerprint": self.corpus.manifest.teacher_fingerprint,
            "teacher_precision": self.corpus.manifest.precision,
            "train_rows": int(len(self.split.train)),
            "validation_rows": int(len(self.split.validation)),
            # this process's peak resident memory (Linux reports KiB): flat in corpus size?
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "student": self.student_config.to_dict(),
            "train": self.config.to_dict(),
        }
        atomic_write_json(self.out / SUMMARY_NAME, summary)
        # The student and summary are saved; optimizer state is no longer needed.
        (self.out / CHECKPOINT_NAME).unlink(missing_ok=True)
        return TrainResult(self.out, self.step, True, self.last_metrics, self.best_step)

    def plot(self) -> None:
        if not self.ctx.is_main:
            return
        from student.plot import plot_metrics

        plot_metrics(self._records(), self.out / PLOT_NAME, title=self.out.name)


class _Window:
    """Running sums between two log records: mean losses, sentences/s, data-wait share."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = self.sentences = 0
        self.data_seconds = self.total_seconds = 0.0

    def add(self, losses: dict[str, float], sentences: int, data_s: float, total_s: float) -> None:
        for key, value in losses.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps += 1
        self.sentences += sentences
        self.data_seconds += data_s
        self.total_seconds += total_s

    def flush(self) -> dict[str, float]:
        record = {key: value / max(self.steps, 1) for key, value in self.sums.items()}
        record["sent_per_s"] = self.sentences / max(self.total_seconds, 1e-9)
        record["data_wait"] = self.data_seconds / max(self.total_seconds, 1e-9)
        self.__init__()
        return record


def prepare_output(config: TrainConfig) -> None:
    """Create the output directory, without the temporaries of a killed run.

    Refuses to train over an earlier run unless --resume or --overwrite says what to do with it.
    """
    out = Path(config.out)
    checkpoint = out / CHECKPOINT_NAME
    earlier = checkpoint.is_file() or (out / SUMMARY_NAME).is_file()
    if earlier and config.overwrite:
        for name in (CHECKPOINT_NAME, METRICS_NAME, SUMMARY_NAME, PLOT_NAME):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / BEST_DIR, ignore_errors=True)
    elif earlier and not config.resume:
        raise UserError(
            f"{out} already holds a training run; pass --resume to continue it or --overwrite "
            "to start over"
        )
    out.mkdir(parents=True, exist_ok=True)
    # What a killed run was writing (a checkpoint, best/): never under a final name, so no loss.
    remove_leftovers(out)


def run_train_student(config: TrainConfig) -> TrainResult:
    """Train one student as ``config`` says (resuming from its checkpoint with --resume)."""
    out = Path(config.out)
    if config.resume and not config.overwrite and not (out / CHECKPOINT_NAME).is_file():
        summary = StudentDirectory(out).summary
        if summary is not None:  # the run finished: nothing is left to resume
            return TrainResult(out, summary.steps, True, summary.final, summary.best_step)
    trainer = Trainer(config)  # reads and checks the shards before anything is written
    # rank 0 alone touches the output; a refusal there stops every rank alike
    trainer.ctx.main_first(lambda: prepare_output(config))
    checkpoint = out / CHECKPOINT_NAME if config.resume and (out / CHECKPOINT_NAME).is_file() else None
    if checkpoint is not None:
        trainer.load_checkpoint(checkpoint)
    else:
        trainer.rewrite_metrics(lambda record: False)  # a fresh run starts a fresh log
    return trainer.run()
