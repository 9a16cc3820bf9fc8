"""Teacher encoding throughput: `pipeline encode`'s encoder, on each backend, against
SentenceTransformer.encode.

Same real sentences (3,000 by default), same teacher, same batch size, CPU, one process, one run;
SentenceTransformer.encode (fp32), our Teacher on torch and on onnx (fp32 both) and, with
``--bf16``, our Teacher on torch in bf16 (`encode --teacher-precision bf16`: other vectors, a space
of its own) are interleaved over repetitions so that machine noise hits them alike. Prints, for
each, sentences per second and per CPU second of this process (best of the repetitions; the
second is what other jobs on a busy machine leave alone), the ratios to
SentenceTransformer.encode, useful GFLOP per CPU second (a matmul measured in this run for scale)
and the min and mean cosine of our vectors to its fp32
ones; ``--json PATH`` writes the same figures.

    python benchmarks/encode_throughput.py [--teacher DIR] [--sentences 3000] [--batch-size 32]
        [--max-tokens N] [--threads 1] [--repeats 3] [--bf16] [--json PATH]
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

from core.io import atomic_write_json  # noqa: E402
from core.teacher import Teacher, default_teacher  # noqa: E402
from data.corpus import CorpusConfig, CorpusReader  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "corpus" / "wikitext-2-raw" / "wiki.valid.raw"
ST = "SentenceTransformer"
OURS = {"torch": ("torch", "fp32"), "onnx": ("onnx", "fp32"), "bf16": ("torch", "bf16")}  # backend, precision
LABELS = {"st": "SentenceTransformer.encode", "torch": "Teacher, backend torch",
          "onnx": "Teacher, backend onnx", "bf16": "Teacher, torch bf16"}


def matmul_flops(hidden: int, intermediate: int, seconds: float = 2.0) -> float:
    """FLOP per CPU second of a torch fp32 matmul shaped like the teacher's feed-forward layer."""
    a, b = torch.randn(2048, hidden), torch.randn(hidden, intermediate)
    torch.mm(a, b)
    n, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        torch.mm(a, b)
        n += 1
    return n * 2 * 2048 * hidden * intermediate / (time.process_time() - start)


def teacher_flops(model, token_lengths: list[int]) -> float:
    """Forward FLOPs over real (unpadded) tokens: 2 x non-embedding weights + attention scores."""
    config = model.config
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - embedding
    attention = sum(4 * length * length * config.hidden_size for length in token_lengths)
    return 2 * dense * sum(token_lengths) + attention * config.num_hidden_layers


def cosines(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return (ours * reference).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))


def summarise(count: int, flops: float, wall: dict, cpu: dict, vectors: dict) -> dict:
    """Per encoder (keys ``st_*``, ``torch_*``, ``onnx_*``): sentences per second and per CPU
    second, their ratios to SentenceTransformer.encode, useful GFLOP per CPU second, and for ours
    the min and mean cosine to its fp32 vectors."""
    figures = {}
    for name in wall:
        key = "st" if name == ST else name
        row = {"sent_s": count / wall[name], "vs_st": wall[ST] / wall[name],
               "cpu_sent_s": count / cpu[name], "cpu_vs_st": cpu[ST] / cpu[name],
               "cpu_gflops": flops / cpu[name] / 1e9}
        if name != ST:
            cos = cosines(vectors[name], vectors[ST])
            row |= {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
        figures |= {f"{key}_{field}": value for field, value in row.items()}
    return figures


def print_table(figures: dict) -> None:
    shape = f"2048x{figures['hidden']}x{figures['intermediate']}"
    print(f"{'best of ' + str(figures['repeats']):28s} {'sent/s':>8s} {'x ST':>6s} {'sent/CPU s':>11s} "
          f"{'x ST':>6s} {'GFLOP/CPU s':>12s}  cosine to ST: min, mean")
    for key, label in LABELS.items():
        if key + "_sent_s" not in figures:
            continue
        cosine = (f"{figures[key + '_min_cosine']:.7f}, {figures[key + '_mean_cosine']:.7f}"
                  if key != "st" else "")
        print(f"{label:28s} {figures[key + '_sent_s']:8.1f} {figures[key + '_vs_st']:6.2f} "
              f"{figures[key + '_cpu_sent_s']:11.1f} {figures[key + '_cpu_vs_st']:6.2f} "
              f"{figures[key + '_cpu_gflops']:12.1f}  {cosine}")
    print(f"{'matmul ' + shape + ', torch':28s} {figures['matmul_cpu_gflops']:46.1f}  (fp32, same thread)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=None,
                        help="a sentence-transformers model directory [default: the bundled MiniLM]")
    parser.add_argument("--sentences", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32, help="for all three encoders")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="our token budget per batch [default: Teacher.encode's, 512 on CPU]")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and onnxruntime threads [default: torch's, all cores]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpus", default=str(CORPUS))
    parser.add_argument("--bf16", action="store_true",
                        help="also our Teacher in bf16 (fast on CPUs with bf16 instructions)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def measure(encoders: dict, texts: list[str], repeats: int) -> tuple[dict, dict, dict]:
    """Best wall seconds, best CPU seconds and the vectors of each encoder, warmed up once, then
    interleaved. CPU seconds (this process's) are what a busy machine's other jobs leave alone."""
    for encode in encoders.values():
        encode(texts[:64])  # warm-up: the onnx backend loads (or exports) its graph here
    wall, cpu = dict.fromkeys(encoders, float("inf")), dict.fromkeys(encoders, float("inf"))
    vectors = {}
    for _ in range(repeats):
        for name, encode in encoders.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            vectors[name] = encode(texts)
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    return wall, cpu, vectors


def main() -> None:
    args = parse_args()
    if not Path(args.corpus).exists():
        sys.exit(f"skip: corpus {args.corpus} not found (needs ../shared/data)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)  # the onnx backend takes torch's thread count too
    texts = list(CorpusReader(CorpusConfig(sources=[args.corpus], limit=args.sentences)))
    model = args.teacher or default_teacher()
    label = Path(args.teacher).name if args.teacher else "all-MiniLM-L6-v2 (bundled)"
    teachers = {name: Teacher(model, device="cpu", backend=backend, precision=precision)
                for name, (backend, precision) in OURS.items() if args.bf16 or precision == "fp32"}
    st_model = SentenceTransformer(model, device="cpu")
    budget = {} if args.max_tokens is None else {"max_tokens": args.max_tokens}
    encoders = {ST: lambda t: st_model.encode(t, batch_size=args.batch_size)}
    encoders |= {b: (lambda t, teacher=teacher: teacher.encode(t, batch_size=args.batch_size, **budget))
                 for b, teacher in teachers.items()}
    lengths = [len(ids) for ids in teachers["torch"].tokenize(texts)]
    config = teachers["torch"].model.config
    print(f"{label}: {len(texts)} sentences, {sum(lengths)} tokens "
          f"(mean {np.mean(lengths):.1f}), batch size "
          f"{args.batch_size}, our max tokens {args.max_tokens or 'default'}, threads "
          f"{torch.get_num_threads()} (torch default here {default_threads}), CPU")

    wall, cpu, vectors = measure(encoders, texts, args.repeats)
    figures = {"teacher": label, "hidden": config.hidden_size,
               "intermediate": config.intermediate_size, "sentences": len(texts),
               "tokens": sum(lengths), "batch_size": args.batch_size,
               "max_tokens": args.max_tokens, "threads": torch.get_num_threads(),
               "default_threads": default_threads, "repeats": args.repeats,
               **summarise(len(texts), teacher_flops(teachers["torch"].model, lengths), wall, cpu, vectors),
               "matmul_cpu_gflops": matmul_flops(config.hidden_size, config.intermediate_size) / 1e9}
    print_table(figures)
    if args.json:
        atomic_write_json(args.json, figures)


if __name__ == "__main__":
    main()
