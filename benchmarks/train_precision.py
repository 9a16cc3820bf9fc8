"""Training steps at fp32 and bf16 on the CPU, side by side: `train-student --precision`.

Two trainers of the same student (same seed, same options) on the same real batches of a shard
directory, the first of an epoch's plan; their steps are timed in turns (repetitions interleaved,
so that machine noise hits both alike). Prints sentences per CPU second of this process (best of
the repetitions) for each, their ratio, and the loss of each after its last step: the two see the
same batches, so the losses say whether bf16 trains the same student.

    python benchmarks/train_precision.py --shards DIR [--shards DIR ...] [--steps 100]
        [--repeats 3] [--train-embeddings] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.io import atomic_write_json  # noqa: E402
from student.config import TrainConfig  # noqa: E402
from student.data import epoch_plan  # noqa: E402
from student.train import Trainer  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", action="append", required=True)
    parser.add_argument("--steps", type=int, default=100, help="steps a repetition, per precision")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-embeddings", action="store_true",
                        help="train the token table too (the recipe at scale)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {p: Trainer(TrainConfig(shards=args.shards, out=str(Path(tmp) / p), precision=p,
                                           freeze_embeddings=not args.train_embeddings,
                                           max_steps=args.steps * args.repeats, progress=False))
                    for p in PRECISIONS}
        first = trainers["fp32"]
        plan = epoch_plan(first.split.train, first.corpus.lengths, first.corpus.shard_starts,
                          first.config.batch_size, first.config.shuffle_buffer, first.config.seed, 0)
        batches = [first._batch(rows) for rows in plan[: args.steps * args.repeats]]
        sentences = sum(len(b.lengths) for b in batches) / args.repeats
        best, losses = dict.fromkeys(PRECISIONS, float("inf")), {}
        for repeat in range(args.repeats):
            part = batches[repeat * args.steps : (repeat + 1) * args.steps]
            for precision, trainer in trainers.items():
                start = time.process_time()
                for batch in part:
                    losses[precision] = trainer.train_step(batch)["loss"]
                    trainer.step += 1
                best[precision] = min(best[precision], time.process_time() - start)
    figures = {"steps": args.steps, "repeats": args.repeats, "threads": args.threads,
               "train_embeddings": args.train_embeddings, "shards": args.shards,
               **{f"{p}_sent_per_cpu_s": sentences / best[p] for p in PRECISIONS},
               **{f"{p}_last_loss": losses[p] for p in PRECISIONS},
               "bf16_vs_fp32": best["fp32"] / best["bf16"]}
    print(f"{args.steps} steps x {args.repeats}, batch {first.config.batch_size}, "
          f"{'trained' if args.train_embeddings else 'frozen'} table, {args.threads} thread(s)")
    for p in PRECISIONS:
        print(f"{p}: {figures[f'{p}_sent_per_cpu_s']:.1f} sentences per CPU second, "
              f"loss after the last step {figures[f'{p}_last_loss']:.6f}")
    print(f"bf16 / fp32: {figures['bf16_vs_fp32']:.2f}x")
    if args.json:
        atomic_write_json(args.json, figures)


if __name__ == "__main__":
    main()
