"""benchmarks/scale_summary.py: a point's share of the encode when the corpus grew past its first
shard directory, timed by the shards' receipts or by the study's stage record."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location("scale_summary", ROOT / "benchmarks" / "scale_summary.py")
scale_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scale_summary)


def write_manifest(directory: Path, shards: list[tuple[int, float | None]]) -> None:
    """A manifest with shards of (rows, cpu_seconds or None: written before timings existed)."""
    directory.mkdir(parents=True)
    entries = [{"num_rows": rows, **({"cpu_seconds": cpu} if cpu is not None else {})}
               for rows, cpu in shards]
    (directory / "manifest.json").write_text(json.dumps({
        "num_rows": sum(rows for rows, _ in shards), "shards": entries}))


def test_a_grown_corpus_costs_each_directory_at_its_own_rate(tmp_path):
    write_manifest(tmp_path / "shards", [(600, None), (400, None)])  # timed by its stage only
    write_manifest(tmp_path / "shards-b", [(1000, None), (1000, 40.0), (1000, 50.0)])
    write_manifest(tmp_path / "shards-c", [(500, 5.0)])
    (tmp_path / "shards-d").mkdir()  # an unfinished extension (no manifest): not part of it yet
    costs = scale_summary.encode_costs(tmp_path, {"encode": 100.0, "encode-shards-b": 999.0})
    # shards-b: its untimed shard at the timed ones' rate (90 s for 2,000 rows); its stage line
    # (a killed part, say) is not used when receipts are timed
    assert costs == [(1000, 100.0), (3000, 135.0), (500, 5.0)]
    share = scale_summary.encode_share_of
    assert share(costs, 500) == pytest.approx(50.0)
    assert share(costs, 1000) == pytest.approx(100.0)
    assert share(costs, 2500) == pytest.approx(100.0 + 135.0 / 2)
    assert share(costs, 4500) == pytest.approx(240.0)
