"""Peak memory of `train-student` against corpus size, up to and past the full Wikipedia sources.

One shard directory is given K times over (K directories of symbolic links to its files, trained on
together as `--shards A --shards B ...`), so a 1.05M-row encode stands for a corpus of K x 1.05M
rows without encoding one. The rows repeat, but the trainer's memory depends only on how many rows
and shards there are and on their lengths: the held-out split, the source ids, the token counts and
each epoch's batch plan are arrays over all rows; decoded shards are held at most four at a time.
Each size runs the same short training (`--max-steps`, one held-out evaluation at the end) in a
fresh process; the figure is the peak RSS that `train-student` writes in `training_summary.json`
(`ru_maxrss`: every page the process touched, shard files it memory-mapped included).

    python benchmarks/train_memory.py --shards runs/scale/shards [--copies 1,3,6] [--steps 300]
        [--json out.json] -- [extra train-student options, e.g. --train-embeddings]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def linked_copy(source: Path, target: Path) -> Path:
    """``target`` holding a symbolic link to every entry of shard directory ``source``."""
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name.startswith("."):  # .work / .lock of the encode run: not part of the data
            continue
        (target / entry.name).symlink_to(entry.resolve())
    return target


def train_once(shards: list[Path], out: Path, steps: int, extra: list[str]) -> dict:
    """One short `train-student` run in a fresh one-thread process; its summary and wall time."""
    args = [sys.executable, "-m", "pipeline", "train-student", "--out", str(out), "--no-progress",
            "--max-steps", str(steps), "--eval-every", str(steps), "--checkpoint-every", str(steps)]
    for path in shards:
        args += ["--shards", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    subprocess.run([*args, *extra], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "training_summary.json").read_text())
    return {"rows": summary["train_rows"], "peak_rss_mb": summary["peak_rss_mb"],
            "wall_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, required=True, help="a shard directory (encode's)")
    parser.add_argument("--copies", default="1,3,6", help="corpus sizes, in copies of --shards")
    parser.add_argument("--steps", type=int, default=300, help="training steps of each run")
    parser.add_argument("--json", type=Path, default=None, help="write the table here as JSON")
    parser.add_argument("extra", nargs="*", help="further train-student options (after --)")
    args = parser.parse_args()
    copies = [int(k) for k in args.copies.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="train-memory-") as tmp:
        source = args.shards.resolve()
        links = [linked_copy(source, Path(tmp) / f"copy-{i}") for i in range(max(copies))]
        for k in copies:
            result = train_once(links[:k], Path(tmp) / f"student-{k}", args.steps, args.extra)
            rows.append({"copies": k, **result})
            print(f"{k} x {source.name}: {result['rows']:>10,} training rows  "
                  f"peak RSS {result['peak_rss_mb']:>8,.1f} MB  ({result['wall_s']} s)", flush=True)
    first, last = rows[0], rows[-1]
    if last["rows"] > first["rows"]:
        per_row = (last["peak_rss_mb"] - first["peak_rss_mb"]) * 2**20 / (last["rows"] - first["rows"])
        print(f"change: {per_row:+.0f} bytes of peak RSS per training row "
              f"({first['rows']:,} -> {last['rows']:,} rows)")
    if args.json:
        args.json.write_text(json.dumps({"steps": args.steps, "extra": args.extra, "runs": rows},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
