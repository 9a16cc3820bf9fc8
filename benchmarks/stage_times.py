"""Stage times from RUN/stage_seconds.tsv, as study_common.sh's ``timed`` writes them (name, wall,
user, system, threads; tab-separated), shared by the benchmark summaries."""

from __future__ import annotations

from pathlib import Path

STAGES_FILE = "stage_seconds.tsv"


def stage_seconds(run: Path, cpu: bool = False) -> dict[str, float]:
    """Stage name -> seconds summed over its recorded parts: a step stopped and resumed has a line
    per finished part (a part killed before it finished has none). Wall seconds, or user + system
    with ``cpu``; a part whose seconds were not measured ("NA", or an old wall-only line) is left out."""
    seconds: dict[str, float] = {}
    path = run / STAGES_FILE
    for line in path.read_text().splitlines() if path.is_file() else []:
        fields = line.split("\t")
        values = fields[2:4] if cpu else fields[1:2]  # user and system, or wall
        if len(values) < (2 if cpu else 1) or "NA" in values:
            continue
        seconds[fields[0]] = seconds.get(fields[0], 0.0) + sum(float(v) for v in values)
    return seconds
