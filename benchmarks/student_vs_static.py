"""Is the student worth choosing over a static distillation of the same teacher? One run prints,
for the teacher, model2vec of the teacher (256-d PCA, SIF weights: model2vec's defaults) and each
given student, side by side:

- four frozen probes (`pipeline glue-eval --probe`: frozen vectors + logistic regression, pairs as
  [u; v; |u-v|; u*v]; SST-2 and CoLA on 4,000 training rows, MRPC and RTE in full; scores x100);
- the student's mean cosine to the teacher on held-out corpus sentences and on the out-of-domain
  sentences of its shards (`encode --ood-corpus`), as its `train-student` run measured them;
- CPU sentences/s at batch 64 (glue-eval's speed measure: the systems take turns, best pass).

    python benchmarks/student_vs_static.py --student students/default [--student DIR ...] \\
        [--glue-dir ../shared/data/glue] [--out /tmp/student_vs_static]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from student.directory import SUMMARY_NAME  # noqa: E402

GLUE = ROOT.parent / "shared" / "data" / "glue"
TASKS = ["SST-2", "CoLA", "MRPC", "RTE"]
TRAIN_ROWS = 4000  # caps SST-2 (67k) and CoLA (8.5k); MRPC (3.7k) and RTE (2.5k) stay whole


def agreement(student: Path) -> dict[str, float | None]:
    """The held-out and out-of-domain cosines of the student's final weights, from its run."""
    path = student / SUMMARY_NAME
    final = json.loads(path.read_text()).get("final", {}) if path.is_file() else {}
    return {"val": final.get("val_cosine"), "ood": final.get("ood_cosine")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", action="append", type=Path, required=True,
                        help="A trained student directory (repeatable).")
    parser.add_argument("--glue-dir", type=Path, default=GLUE)
    parser.add_argument("--out", type=Path, default=Path("/tmp/student_vs_static"))
    parser.add_argument("--teacher", default=None, help="[default: the bundled all-MiniLM-L6-v2]")
    parser.add_argument("--train-rows", type=int, default=TRAIN_ROWS)
    args = parser.parse_args()
    if not args.glue_dir.is_dir():
        sys.exit(f"skip: {args.glue_dir} not found (needs ../shared/data or --glue-dir)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from evaluation.config import EvalConfig
    from evaluation.run import run_glue_eval

    students = {f"student:{path}": path for path in args.student}
    config = EvalConfig(out=args.out, systems=["teacher", "model2vec", *students], tasks=TASKS,
                        glue_dir=args.glue_dir, teacher=args.teacher, probe=True, device="cpu",
                        max_train_samples=args.train_rows)
    result = run_glue_eval(config)
    speeds = json.loads((result.out / f"{result.name}.json").read_text())["speed_sentences_per_s"]
    teacher_speed = speeds["teacher"]
    header = (f"{'encoder':42} " + " ".join(f"{t:>7}" for t in TASKS)
              + f" {'avg':>6} {'cos held-out':>12} {'cos ood':>8} {'sent/s':>8} {'x teacher':>9}")
    print(f"\nfrozen probes (dev, x100; SST-2/CoLA {args.train_rows} training rows), cosine to the "
          "teacher, CPU speed at batch 64\n" + header)
    model2vec_scores = result.summary["model2vec"]["tasks"]
    for system, row in result.summary.items():
        scores = [row["tasks"][task]["score"]["mean"] for task in TASKS]
        cos = agreement(students[system]) if system in students else (
            {"val": 1.0, "ood": 1.0} if system == "teacher" else {"val": None, "ood": None})
        cells = " ".join(f"{s:7.1f}" for s in scores)
        cos_cells = " ".join(f"{c:{w}.3f}" if c is not None else f"{'-':>{w}}"
                             for c, w in ((cos["val"], 12), (cos["ood"], 8)))
        speed = speeds.get(system, float("nan"))
        print(f"{system:42} {cells} {sum(scores) / len(scores):6.1f} {cos_cells} {speed:8.0f} "
              f"{speed / teacher_speed:9.1f}")
        if system in students:
            wins = [task for task in TASKS
                    if row["tasks"][task]["score"]["mean"] >= model2vec_scores[task]["score"]["mean"]]
            print(f"  >= model2vec on {len(wins)} of {len(TASKS)} probes ({', '.join(wins) or 'none'})"
                  f"{': target met' if len(wins) == len(TASKS) else ': target MISSED'}")
    print(f"\n(probe tables and raw results: {result.out}/{result.name}.md, .json)")


if __name__ == "__main__":
    main()
