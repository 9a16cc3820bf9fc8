"""Do two versions of the code write the same outputs? A refactor's check.

``run OUT`` runs a small encode, train-student, glue-eval (fine-tuned and probes: student,
scratch, embeddings, model2vec, the teacher, +kd), finetune (with --kd-teacher auto and
--augment) and predict with the code of the checkout this script sits in, writing under OUT.
``compare A B`` compares two such directories file by file: weights, shards, matrices and
predictions byte for byte; JSON and JSONL records after dropping what is expected to differ
(wall times, speeds, dates, the output paths themselves). Prints every difference; exit 1 if any.

    git worktree add /tmp/before BASE && python /tmp/before/benchmarks/same_outputs.py run /tmp/a
    python benchmarks/same_outputs.py run /tmp/b
    python benchmarks/same_outputs.py compare /tmp/a /tmp/b

One thread throughout, so that every run is deterministic on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
# keys whose values are expected to differ between two runs of the same code
VOLATILE = re.compile(r"seconds|time|created|speed|rss|date|command|elapsed|sentences_per_s|wall"
                      r"|cpu_|started|finished|host|pid|data_wait|_per_s"
                      # a glue-eval run record's key: a hash of its inputs, the system's label
                      # (which holds the output path) among them
                      r"|^fingerprint$")
BYTES = {".safetensors", ".arrow", ".npy", ".csv", ".tsv", ".parquet", ".json_bytes"}
SKIP = {".md", ".png", ".log", ".lock", ".onnx", ".pt"}


def steps(out: Path) -> list[list[str]]:
    glue, clf = DATA / "glue", out / "clf"
    student = f"student:{out / 'student'}"
    common = ["--glue-dir", str(glue), "--tasks", "RTE", "--max-train-samples", "64"]
    return [
        ["encode", "--corpus", "wiki", "--limit", "300", "--out", str(out / "shards"), "--quiet",
         "--exclude", str(glue / "RTE" / "dev.tsv"),
         "--ood-corpus", str(glue / "RTE" / "dev.tsv"), "--ood-text-column", "sentence1"],
        ["train-student", "--shards", str(out / "shards"), "--out", str(out / "student"),
         "--max-steps", "30", "--eval-every", "10", "--no-progress"],
        ["glue-eval", *common, "--out", str(out / "glue"), "--epochs", "1", "--seeds", "2",
         "--grid-seeds", "1", "--lr-grid", "1e-3,3e-4", "--teacher-lr-grid", "1e-4",
         "--teacher-max-train-samples", "32", "--teacher-seeds", "1",
         "--system", student, "--system", f"{student}+kd", "--system", "scratch",
         "--system", f"embeddings:{out / 'student'}", "--system", "model2vec", "--system", "teacher"],
        ["glue-eval", "--probe", *common, "--out", str(out / "probe"),
         "--system", student, "--system", "model2vec"],
        ["finetune", "--train", str(out / "user-train.tsv"), "--out", str(clf),
         "--student", str(out / "student"), "--kd-teacher", "auto", "--augment", "1",
         "--epochs", "1", "--lr-grid", "1e-3", "--teacher-lr-grid", "1e-4",
         "--text-column", "sentence", "--system", "scratch"],
        ["predict", "--model", str(clf), "--input", str(out / "user-test.tsv"),
         "--out", str(out / "predictions.csv")],
    ]


def run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = (DATA / "glue" / "SST-2" / "train.tsv").read_text().splitlines()
    (out / "user-train.tsv").write_text("\n".join(lines[:161]) + "\n")
    (out / "user-test.tsv").write_text("\n".join([lines[0], *lines[1000:1040]]) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "SRA_CACHE": str(out / "sra-cache")}
    for args in steps(out):
        print("+ pipeline", " ".join(args), flush=True)
        subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env, check=True)


def scrub(value, roots: list[str]):
    """``value`` without volatile keys, with the output directory's path replaced by OUT."""
    if isinstance(value, dict):
        return {scrub(k, roots): scrub(v, roots) for k, v in value.items() if not VOLATILE.search(k)}
    if isinstance(value, list):
        return [scrub(v, roots) for v in value]
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root, "OUT")
        return value
    return value


def records(path: Path, roots: list[str]):
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [scrub(json.loads(line), roots) for line in text.splitlines() if line.strip()]
    return scrub(json.loads(text), roots)


def files(root: Path) -> dict[str, Path]:
    """Every compared file by its name under ``root``, the root's own path (as a system's
    file-system slug spells it) replaced by OUT."""
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(root.resolve()))
    return {str(p.relative_to(root)).replace(slug, "OUT"): p for p in sorted(root.rglob("*"))
            if p.is_file() and "sra-cache" not in p.parts and p.suffix not in SKIP}


def first_difference(a, b, where: str = "") -> str:
    """Where two parsed JSON values first differ, as a key path."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{where}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return first_difference(x, y, f"{where}[{i}]")
    return f"{where}: {str(a)[:80]} != {str(b)[:80]}"


def compare(a: Path, b: Path) -> int:
    roots = [str(a.resolve()), str(a), str(b.resolve()), str(b)]
    left, right = files(a), files(b)
    differences = [f"only in {a}: {n}" for n in sorted(left.keys() - right.keys())]
    differences += [f"only in {b}: {n}" for n in sorted(right.keys() - left.keys())]
    same = 0
    for name in sorted(left.keys() & right.keys()):
        p, q = left[name], right[name]
        detail = ""
        if p.suffix in (".json", ".jsonl"):
            left_value, right_value = records(p, roots), records(q, roots)
            equal = left_value == right_value
            detail = "" if equal else " " + first_difference(left_value, right_value)
        else:
            equal = p.read_bytes() == q.read_bytes()
        if equal:
            same += 1
        else:
            differences.append(f"differs: {name}{detail}")
    print("\n".join(differences) or "no differences")
    print(f"{same} files identical, {len(differences)} differences")
    return 1 if differences else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run").add_argument("out", type=Path)
    both = sub.add_parser("compare")
    both.add_argument("a", type=Path)
    both.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        run(args.out)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
