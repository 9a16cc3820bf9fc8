"""Quality against speed: each system's CPU sentences/s, and ``pareto.png``.

The speed is measured inside the run on one fixed set of sentences (the first ``SPEED_SENTENCES``
dev sentences of the first task, both sides of a pair), in batches of ``SPEED_BATCH`` on the CPU:
tokenization and the encoder's forward pass, without the head (it costs the same for every
system). A ``+kd`` system has its base system's encoder, so it shares its speed. The numbers are
only as steady as the CPU: another process's load slows every pass it overlaps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from core.batching import pad_batch
from core.io import atomic_output
from data.glue import TaskData
from evaluation.backbones import Backbone
from evaluation.report import PROBE_NAME, RESULTS_NAME
from evaluation.systems import Builder, SystemSpec

SPEED_SENTENCES = 512
SPEED_BATCH = 64
SPEED_REPEATS = 2
PARETO_FILE = "pareto.png"


def speed_sentences(data: TaskData) -> list[str]:
    dev = next(iter(data.dev.values()))
    texts = list(dev.text_a) + list(dev.text_b or [])
    return texts[:SPEED_SENTENCES]


@torch.inference_mode()
def seconds_per_pass(backbone: Backbone, texts: Sequence[str], batch_size: int = SPEED_BATCH) -> float:
    """One timed pass over ``texts``: tokenize and encode, batch by batch, on the CPU."""
    backbone.eval().to("cpu")
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        ids, lengths = pad_batch(backbone.tokenize(texts[start : start + batch_size]), backbone.pad_id)
        backbone(ids, lengths)  # (B, D)
    return time.perf_counter() - started


def measure_speeds(specs: Sequence[SystemSpec], data: TaskData, builder: Builder,
                   log: Callable[[str], None], repeats: int = SPEED_REPEATS) -> dict[str, float]:
    """Sentences/s of every system's encoder on the CPU, by system label.

    The systems take turns: an untimed pass each (one-off costs such as kernel set-up for each
    batch shape, which the first system would otherwise pay for all), then ``repeats`` rounds of
    one timed pass each; a system's speed is its best pass, because a shared CPU only ever makes
    a pass slower, and taking turns spreads the other load over all systems alike.
    """
    texts = speed_sentences(data)
    encoders: dict[tuple, Backbone] = {}
    for spec in specs:
        key = (spec.kind, spec.path)
        if key not in encoders:
            encoders[key] = builder.model(spec, data.task, seed=0).backbone
    best = dict.fromkeys(encoders, np.inf)
    for round_ in range(repeats + 1):
        for key, backbone in encoders.items():
            seconds = seconds_per_pass(backbone, texts)
            if round_:  # round 0 is the warm-up
                best[key] = min(best[key], seconds)
    speeds: dict[str, float] = {}
    for spec in specs:
        speeds[spec.label] = round(len(texts) / max(best[(spec.kind, spec.path)], 1e-9), 1)
        if not spec.kd:
            log(f"speed {spec.label}: {speeds[spec.label]:,.0f} sentences/s "
                f"(CPU, batch {SPEED_BATCH}, {torch.get_num_threads()} threads)")
    return speeds


def plot_pareto(out: Path) -> Path | None:
    """``OUT/pareto.png``: GLUE average (fine-tuned, and the probe's when OUT holds one) against
    CPU sentences/s on a log scale, from OUT's results.json and probe.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []
    for name, label, marker in ((RESULTS_NAME, "fine-tuned", "o"), (PROBE_NAME, "frozen probe", "s")):
        path = out / f"{name}.json"
        if not path.is_file():
            continue
        results = json.loads(path.read_text())
        speeds = results.get("speed_sentences_per_s") or {}
        points = [(system, speeds[system], result["average"]["mean"])
                  for system, result in results.get("systems", {}).items()
                  if result.get("average") and system in speeds]
        if points:
            series.append((f"{label} ({', '.join(results.get('tasks', []))})", marker, points))
    if not series:
        return None
    fig, axis = plt.subplots(figsize=(8, 5))
    for label, marker, points in series:
        xs, ys = [p[1] for p in points], [p[2] for p in points]
        axis.scatter(xs, ys, marker=marker, label=label)
        for system, x, y in points:
            axis.annotate(short_name(system), (x, y), textcoords="offset points", xytext=(4, 4),
                          fontsize=8)
    axis.set_xscale("log")
    axis.set(xlabel="CPU sentences/s, batch 64 (log scale)", ylabel="GLUE dev average × 100",
             title="Quality against speed")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    fig.tight_layout()
    path = out / PARETO_FILE
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def short_name(system: str) -> str:
    """``student:/long/path/students/small+kd`` -> ``student:small+kd`` for a plot label."""
    kind, _, rest = system.partition(":")
    if not rest:
        return system
    kd = rest.endswith("+kd")
    return f"{kind}:{Path(rest.removesuffix('+kd')).name}{'+kd' if kd else ''}"
