"""Teacher encoding throughput: `pipeline encode`'s encoder against SentenceTransformer.encode.

Same 2,000 real sentences, same teacher, same batch size, fp32, CPU, one process, one run; the
two are interleaved over repetitions so that machine noise hits both alike. Prints sentences/s,
the ratio, the vector difference, and the achieved FLOP/s against a matmul measured in this run.

    python benchmarks/encode_throughput.py [--sentences 2000] [--batch-size 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.teacher import Teacher, default_teacher  # noqa: E402
from data.corpus import CorpusConfig, CorpusReader  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "corpus" / "wikitext-2-raw" / "wiki.valid.raw"


def matmul_flops(seconds: float = 2.0) -> float:
    """FLOP/s of a fp32 matmul shaped like the teacher's feed-forward layer."""
    a, b = torch.randn(2048, 384), torch.randn(384, 1536)
    torch.mm(a, b)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        n += 1
    return n * 2 * 2048 * 384 * 1536 / (time.perf_counter() - start)


def teacher_flops(model, token_lengths: list[int]) -> float:
    """Forward FLOPs over real (unpadded) tokens: 2 x non-embedding weights + attention scores."""
    config = model.config
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - embedding
    attention = sum(4 * length * length * config.hidden_size for length in token_lengths)
    return 2 * dense * sum(token_lengths) + attention * config.num_hidden_layers


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpus", default=str(CORPUS))
    args = parser.parse_args()
    if not Path(args.corpus).exists():
        sys.exit(f"skip: corpus {args.corpus} not found (needs ../shared/data)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    texts = list(CorpusReader(CorpusConfig(sources=[args.corpus], limit=args.sentences)))
    teacher = Teacher(default_teacher(), device="cpu")
    st_model = SentenceTransformer(default_teacher(), device="cpu")
    lengths = [len(ids) for ids in teacher.tokenize(texts)]
    print(f"{len(texts)} sentences, {sum(lengths)} tokens (mean {np.mean(lengths):.1f}), "
          f"batch size {args.batch_size}, torch threads {torch.get_num_threads()}, fp32 CPU")

    # Warm-up both paths once, then interleave.
    teacher.encode(texts[:64], batch_size=args.batch_size)
    st_model.encode(texts[:64], batch_size=args.batch_size)
    ours_times, st_times = [], []
    for _ in range(args.repeats):
        ours, seconds = timed(lambda: teacher.encode(texts, batch_size=args.batch_size))
        ours_times.append(seconds)
        theirs, seconds = timed(lambda: st_model.encode(texts, batch_size=args.batch_size))
        st_times.append(seconds)
    ours_rate, st_rate = len(texts) / min(ours_times), len(texts) / min(st_times)

    cosine = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    flops = teacher_flops(teacher.model, lengths)
    peak = matmul_flops()
    print(f"pipeline encoder        {ours_rate:8.1f} sent/s  (best of {args.repeats})")
    print(f"SentenceTransformer     {st_rate:8.1f} sent/s  (best of {args.repeats})")
    print(f"ratio                   {ours_rate / st_rate:8.2f} x   (target >= 1.5)")
    print(f"max |difference|        {np.abs(ours - theirs).max():8.2e}   min cosine {cosine.min():.6f}"
          f"   (target > 0.9999)")
    achieved = flops / min(ours_times)
    print(f"achieved                {achieved / 1e9:8.1f} GFLOP/s useful (unpadded tokens)")
    print(f"matmul (2048x384x1536)  {peak / 1e9:8.1f} GFLOP/s  -> {achieved / peak:.0%} of matmul")


if __name__ == "__main__":
    main()
