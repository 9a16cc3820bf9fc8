"""Encode throughput with 1 process against 2 torchrun processes, same sentences, one run.

Both are launched the same way (a subprocess of the CLI) so start-up costs are alike; prints the
wall-clock rate of each whole command and the encode-loop rate that rank 0 reports.

    python benchmarks/scaling.py [--sentences 2000] [--teacher DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus" / "wikitext-2-raw" / "wiki.valid.raw"


def launch(processes: int, threads: int, args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, rank 0 encode-loop sent/s, done line) of one `pipeline encode` run."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    launcher = [sys.executable, "-m", "pipeline"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(processes), "-m", "pipeline"]
    start = time.perf_counter()
    proc = subprocess.run([*launcher, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    done = next(line for line in proc.stdout.splitlines() if line.startswith("done:"))
    rate = float(re.search(r"at ([0-9.]+) sent/s", done).group(1))
    return wall, rate, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--teacher", default=None, help="default: the bundled MiniLM")
    parser.add_argument("--corpus", default=str(CORPUS))
    args = parser.parse_args()
    if not Path(args.corpus).exists():
        sys.exit(f"skip: corpus {args.corpus} not found (needs ../shared/data)")
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        common = ["encode", "--corpus", args.corpus, "--limit", str(args.sentences), "--quiet",
                  "--shard-size", str(max(1, args.sentences // 8))]
        if args.teacher:
            common += ["--teacher", args.teacher]
        rows = []
        for processes in (1, 2):
            threads = max(1, cores // processes)
            out = Path(tmp) / f"p{processes}"
            wall, rate, _ = launch(processes, threads, [*common, "--out", str(out)])
            rows.append((processes, threads, wall, rate))
    print(f"{args.sentences} sentences, {cores} CPU cores, fp32")
    print(f"{'processes':>9} {'threads':>7} {'wall s':>7} {'wall sent/s':>11} {'rank-0 loop sent/s':>18}")
    for processes, threads, wall, rate in rows:
        print(f"{processes:>9} {threads:>7} {wall:7.1f} {args.sentences / wall:11.1f} {rate:18.1f}")
    print(f"speed-up of 2 processes (wall): {rows[0][2] / rows[1][2]:.2f}x")


if __name__ == "__main__":
    main()
