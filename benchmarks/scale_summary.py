"""Collect the scaling study (benchmarks/scale_study.sh) into benchmarks/results/scale/.

Reads RUN/students/<NAME>-<SIZE>/training_summary.json (held-out and out-of-domain cosine),
RUN/probe/<NAME>-<SIZE>/<TASK>/probe.json (frozen probes), RUN/stage_seconds.tsv (wall, user and
system seconds of every step) and RUN/shards/manifest.json; writes summary.json (the figures of the
recipe named by --series by size, the default one unless told), scale.md (every student: sizes
and recipes) and scaling.png.

A point's CPU hours are its training's user+system time, its probes', and its share of the encode
(the encode's CPU time times the rows it trained on over the rows encoded). The corpus may have
grown past RUN/shards (`scale_study.sh extend N DIR`: RUN/shards-*, taken in name order after it);
a directory's encode time is the sum of its shards' timed receipts (a pass resumed over several
sessions included; shards written before timings existed count at the timed ones' rate per row),
else its step in stage_seconds.tsv (`encode`, `encode-DIR`).

    python benchmarks/scale_summary.py --run RUN [--out benchmarks/results/scale] [--series NAME]
        [--encode-json benchmarks/results/scale/encode_throughput.json] [--glue ROW=PATTERN ...]
        [--partial-cpu NAME-SIZE=STEPS ...]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from glue_rows import TASKS, glue_rows, glue_table  # noqa: E402
from stage_times import STAGES_FILE, stage_seconds  # noqa: E402

from cache_tools.format import MANIFEST_NAME  # noqa: E402
from cache_tools.manifest import pass_cost, read_manifest  # noqa: E402
from student.directory import SUMMARY_NAME  # noqa: E402

EXTRAPOLATED = "train_cpu_extrapolated_from_steps"  # marks a point whose training CPU is partly inferred


def probe_scores(directory: Path) -> dict[str, float]:
    """Task -> frozen-probe score of the one system probed in DIRECTORY/<TASK>/probe.json."""
    scores = {}
    for path in sorted(directory.glob("*/probe.json")):
        for result in json.loads(path.read_text())["systems"].values():
            for task, cell in result["tasks"].items():
                scores[task] = cell["score"]["mean"]
    return scores


def encode_costs(run: Path, stages: dict[str, float]) -> list[tuple[int, float]]:
    """(rows, encode CPU seconds) of each complete shard directory of the corpus, in order:
    RUN/shards, then the directories it was extended by (RUN/shards-*)."""
    costs = []
    for directory in [run / "shards", *sorted(run.glob("shards-*"))]:
        if not (directory / MANIFEST_NAME).is_file():
            continue
        manifest = read_manifest(directory)
        timed = pass_cost(manifest.shards)
        step = "encode" if directory.name == "shards" else f"encode-{directory.name}"
        cpu = stages.get(step, 0.0)
        if timed.timed:  # per row of the timed shards (some may predate the timings): every shard
            cpu = timed.cpu_seconds * manifest.num_rows / timed.rows
        costs.append((manifest.num_rows, cpu))
    return costs


def encode_share_of(costs: list[tuple[int, float]], rows: int) -> float:
    """The encode CPU of the first ``rows`` rows: whole directories, then a part of the next."""
    share = 0.0
    for num_rows, cpu in costs:
        share += cpu * min(rows, num_rows) / num_rows
        rows -= min(rows, num_rows)
    return share


def students(run: Path, partial: dict[str, int] | None = None) -> list[dict]:
    """Every finished student of the run: name, size, agreement, probes, CPU hours. ``partial``:
    LABEL -> the steps its recorded training time covers, for a run whose first part was killed
    before its time was written; its training CPU is extrapolated to every step, and marked so."""
    partial = partial or {}
    stages = stage_seconds(run, cpu=True)
    corpus = encode_costs(run, stages)
    rows = []
    for path in sorted((run / "students").glob(f"*/{SUMMARY_NAME}")):
        match = re.fullmatch(r"(.+)-(\d+)", path.parent.name)
        if not match:
            continue
        name, size = match.group(1), int(match.group(2))
        summary = json.loads(path.read_text())
        probes = probe_scores(run / "probe" / path.parent.name)
        train_cpu = stages.get(f"train-{name}-{size}", 0.0)
        covered = partial.get(path.parent.name)
        if covered:
            train_cpu *= summary["steps"] / covered
        probe_cpu = sum(v for k, v in stages.items() if k.startswith(f"probe-{name}-{size}-"))
        encode_share = encode_share_of(corpus, summary["train_rows"])
        rows.append({
            "name": name, "size": size, "train_rows": summary["train_rows"],
            "steps": summary["steps"],
            "heldout_cosine": summary["final"]["val_cosine"],
            "ood_cosine": summary["final"].get("ood_cosine"),
            "probes": probes,
            "probe_avg": (sum(probes[t] for t in TASKS) / len(TASKS)
                          if all(t in probes for t in TASKS) else None),
            "train_cpu_hours": train_cpu / 3600,
            "cpu_hours": (encode_share + train_cpu + probe_cpu) / 3600,
            "peak_rss_mb": summary.get("peak_rss_mb"),
            **({EXTRAPOLATED: covered} if covered else {}),
        })
    return sorted(rows, key=lambda r: (r["name"] != "default", r["name"], r["size"]))


def write_table(rows: list[dict], path: Path) -> None:
    lines = ["| recipe | sentences | steps | held-out cosine | OOD cosine | "
             + " | ".join(TASKS) + " | probe avg | CPU h |",
             "|---" * (len(TASKS) + 7) + "|"]
    for r in rows:
        probes = [f"{r['probes'][t]:.1f}" if t in r["probes"] else "–" for t in TASKS]
        avg = "–" if r["probe_avg"] is None else f"{r['probe_avg']:.1f}"
        cpu = f"{r['cpu_hours']:.2f}" + ("*" if EXTRAPOLATED in r else "")
        lines.append(f"| {r['name']} | {r['train_rows']:,} | {r['steps']:,} | {r['heldout_cosine']:.3f} | "
                     f"{r['ood_cosine']:.3f} | " + " | ".join(probes) + f" | {avg} | {cpu} |")
    notes = [f"\\* {r['name']} {r['train_rows']:,}: training CPU extrapolated from its last "
             f"{r[EXTRAPOLATED]:,} steps, the only part whose time was recorded"
             for r in rows if EXTRAPOLATED in r]
    path.write_text("\n".join(lines + ([""] + notes if notes else [])) + "\n")


def summary_of(rows: list[dict], series: str, glue: dict, encode: dict) -> dict:
    """summary.json: the figures of the ``series`` recipe by size (the study's curve), the fine-tuned
    rows, the encode's speed and fidelity, and every student of the run."""
    points = [r for r in rows if r["name"] == series]
    return {
        "series": series,
        "sizes": [r["train_rows"] for r in points],
        "heldout_cosine": [r["heldout_cosine"] for r in points],
        "ood_cosine": [r["ood_cosine"] for r in points],
        "probe_avg": [r["probe_avg"] for r in points],
        "cpu_hours": [r["cpu_hours"] for r in points],
        "glue": glue,
        "encode_vs_st": encode.get("onnx_vs_st"),
        "encode_min_cosine": encode.get("onnx_min_cosine"),
        # `encode --teacher-precision bf16`, when measured: faster, other vectors (not the study's)
        "encode_bf16_vs_st": encode.get("bf16_vs_st"),
        "encode_bf16_min_cosine": encode.get("bf16_min_cosine"),
        "students": rows,
    }


def plot(series: list[dict], others: list[dict], path: Path) -> None:
    """The series recipe's curve by size; every other recipe as a dashed curve of its own points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["train_rows"] for r in series]
    name = series[0]["name"]
    fig, (agree, probe) = plt.subplots(1, 2, figsize=(10, 4))
    agree.plot(sizes, [r["heldout_cosine"] for r in series], "o-", label=f"{name}, held out (Wikipedia)")
    agree.plot(sizes, [r["ood_cosine"] for r in series], "s-", label=f"{name}, out of domain (GLUE dev)")
    agree.axhline(0.90, ls=":", c="C0", lw=1)
    agree.axhline(0.85, ls=":", c="C1", lw=1)
    agree.set(xscale="log", xlabel="training sentences (one pass)", ylabel="cosine to the teacher",
              title="Agreement with the teacher")
    points = [(r["train_rows"], r["probe_avg"]) for r in series if r["probe_avg"] is not None]
    if points:
        probe.plot(*zip(*points), "o-", c="C2", label=name)
    recipes: dict[str, list[dict]] = {}  # other recipes: one curve (colour, legend entry) each
    for r in sorted(others, key=lambda r: r["train_rows"]):
        recipes.setdefault(r["name"], []).append(r)
    for i, (name, rows) in enumerate(recipes.items()):
        style = dict(marker="*", ms=11, ls="--", c=f"C{i + 3}")
        x = [r["train_rows"] for r in rows]
        agree.plot(x, [r["heldout_cosine"] for r in rows], label=f"{name}, held out", **style)
        agree.plot(x, [r["ood_cosine"] for r in rows], label=f"{name}, out of domain",
                   **{**style, "marker": "P", "ms": 9})
        probed = [(r["train_rows"], r["probe_avg"]) for r in rows if r["probe_avg"] is not None]
        if probed:
            probe.plot(*zip(*probed), label=name, **style)
    agree.legend(fontsize=8)
    values = [v for _, v in points] + [r["probe_avg"] for r in others if r["probe_avg"] is not None]
    if values:  # a span of at least 6 points, so that seed noise does not look like a trend
        middle = (max(values) + min(values)) / 2
        half = max(3.0, (max(values) - min(values)) / 2 + 0.5)
        probe.set_ylim(middle - half, middle + half)
    probe.set(xscale="log", xlabel="training sentences (one pass)",
              ylabel="probe average (CoLA, SST-2, MRPC, RTE)", title="Frozen probes")
    probe.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def keep_raw(run: Path, out: Path) -> None:
    """The small raw files behind every figure: each student's training_summary.json and
    metrics.jsonl, each probe.json (the weights and shards stay in RUN)."""
    for r in students(run):
        label = f"{r['name']}-{r['size']}"
        target = out / "students" / label
        target.mkdir(parents=True, exist_ok=True)
        for name in (SUMMARY_NAME, "metrics.jsonl"):
            shutil.copy(run / "students" / label / name, target / name)
        for probe in sorted((run / "probe" / label).glob("*/probe.json")):
            (target / "probe").mkdir(exist_ok=True)
            shutil.copy(probe, target / "probe" / f"{probe.parent.name}.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale")
    parser.add_argument("--encode-json", type=Path, default=None,
                        help="benchmarks/encode_throughput.py --json output (speed and fidelity)")
    parser.add_argument("--partial-cpu", action="append", default=[], metavar="NAME-SIZE=STEPS",
                        help="a student whose recorded training time covers only its last STEPS "
                             "steps (the first part killed unrecorded): extrapolated, and marked")
    parser.add_argument("--series", default="default",
                        help="the recipe whose points are summary.json's curve and the chart's "
                             "solid one (e.g. trained-emb, the recipe at scale)")
    parser.add_argument("--glue", action="append", default=[], metavar="ROW=PATTERN",
                        help="a fine-tuned row: ROW=DIR with {task} in DIR (repeatable), e.g. "
                             "student=RUN/glue/{task}/wiki600k")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    partial = {label: int(steps) for label, _, steps in (p.partition("=") for p in args.partial_cpu)}
    rows = students(args.run, partial)
    series = [r for r in rows if r["name"] == args.series]
    encode = json.loads(args.encode_json.read_text()) if args.encode_json else {}
    summary = summary_of(rows, args.series, glue_rows(args.glue), encode)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_table(rows, args.out / "scale.md")
    if summary["glue"]:
        with (args.out / "scale.md").open("a") as table:
            table.write("\nFine-tuned (dev, x100, mean ± std over 3 seeds):\n\n"
                        + "\n".join(glue_table(summary["glue"])) + "\n")
    if series:
        plot(series, [r for r in rows if r["name"] != args.series], args.out / "scaling.png")
    for name in (STAGES_FILE, "commits.txt"):
        if (args.run / name).is_file():
            shutil.copy(args.run / name, args.out / name)
    keep_raw(args.run, args.out)
    print((args.out / "scale.md").read_text())


if __name__ == "__main__":
    main()
