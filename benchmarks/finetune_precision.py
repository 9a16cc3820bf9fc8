"""Fine-tuning at fp32 and bf16 on the CPU, side by side: `glue-eval` / `finetune --precision`.

One system (the teacher, a student directory, scratch ...) fine-tuned on ROWS training rows of a
real GLUE task (glue-eval's --max-train-samples subset), once per precision from the same seed
(the same initial weights and the same batches), repetitions interleaved so that machine noise
hits both alike. Each pass is `evaluation.finetune.finetune` itself, one epoch, scored on the
first DEV dev rows (at the device's own precision, as glue-eval scores). Prints training rows
per CPU second of this process (best of the repetitions), their ratio, and each pass's training
loss and dev score.

    python benchmarks/finetune_precision.py --glue-dir DIR --task MRPC --system teacher \
        [--rows 512] [--dev 128] [--repeats 2] [--teacher-pairs joint] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.io import atomic_write_json  # noqa: E402
from data.glue import load_task  # noqa: E402
from evaluation.backbones import JOINT  # noqa: E402
from evaluation.engine import training_subset  # noqa: E402
from evaluation.finetune import encode_split, finetune  # noqa: E402
from evaluation.settings import HeadSettings, Recipe  # noqa: E402
from evaluation.systems import Builder, parse_system  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue-dir", type=Path, required=True)
    parser.add_argument("--task", default="MRPC")
    parser.add_argument("--system", default="teacher", help="as glue-eval's --system")
    parser.add_argument("--teacher", default=None, help="base teacher [default: the bundled MiniLM]")
    parser.add_argument("--teacher-pairs", default=JOINT)
    parser.add_argument("--rows", type=int, default=512, help="training rows (one epoch)")
    parser.add_argument("--dev", type=int, default=128, help="dev rows scored")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    data = load_task(args.task, args.glue_dir)
    spec = parse_system(args.system)
    builder = Builder(args.teacher, Path("/tmp/finetune_precision"), HeadSettings(), args.teacher_pairs)
    teacher = spec.kind == "teacher"
    settings = dataclasses.replace(Recipe(epochs=1).settings(teacher, seed=0), patience=1)
    tokenizer = builder.model(spec, data.task, 0).backbone
    # glue-eval's own --max-train-samples rows; the dev split's first rows
    train = encode_split(tokenizer, training_subset(data.train, args.rows))
    dev = {"": encode_split(tokenizer, data.dev[""].subset(np.arange(min(args.dev, len(data.dev[""])))))}
    best = dict.fromkeys(PRECISIONS, float("inf"))
    passes: dict[str, dict] = {}
    for _ in range(args.repeats):
        for precision in PRECISIONS:
            model = builder.model(spec, data.task, 0)  # the same initial weights every pass
            run = dataclasses.replace(settings, precision=None if precision == "fp32" else precision)
            start = time.process_time()
            result = finetune(model, data.task, train, dev, run, cpu)
            best[precision] = min(best[precision], time.process_time() - start)
            passes[precision] = {"train_loss": result.history[0]["train_loss"], "dev_score": result.score}
    figures = {"task": args.task, "system": args.system, "rows": args.rows, "dev_rows": args.dev,
               "repeats": args.repeats, "threads": args.threads, "lr": settings.lr,
               "encoder_lr": settings.encoder_lr,
               **{f"{p}_rows_per_cpu_s": args.rows / best[p] for p in PRECISIONS},
               **{f"{p}_{k}": v for p in PRECISIONS for k, v in passes[p].items()},
               "bf16_vs_fp32": best["fp32"] / best["bf16"]}
    print(f"{args.system} on {args.task}: {args.rows} training rows (one epoch, lr {settings.lr:g}"
          f"{'' if settings.encoder_lr is None else f', encoder {settings.encoder_lr:g}'}), "
          f"{args.dev} dev rows, best of {args.repeats}, {args.threads} thread(s)")
    for p in PRECISIONS:
        print(f"{p}: {figures[f'{p}_rows_per_cpu_s']:.1f} rows per CPU second (training and dev "
              f"scoring), train loss {figures[f'{p}_train_loss']:.5f}, dev score "
              f"{figures[f'{p}_dev_score']:.2f}")
    print(f"bf16 / fp32: {figures['bf16_vs_fp32']:.2f}x")
    if args.json:
        atomic_write_json(args.json, figures)


if __name__ == "__main__":
    main()
