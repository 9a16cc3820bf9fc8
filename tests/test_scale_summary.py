"""benchmarks/scale_summary.py: a point's share of the encode when the corpus grew past its first
shard directory, timed by the shards' receipts or by the study's stage record."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from cache_tools.manifest import CorpusRecord, Manifest, ShardInfo
from cache_tools.manifest import write_manifest as write_manifest_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location("scale_summary", ROOT / "benchmarks" / "scale_summary.py")
scale_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scale_summary)


def write_manifest(directory: Path, shards: list[tuple[int, float | None]]) -> None:
    """A manifest with shards of (rows, cpu_seconds or None: written before timings existed)."""
    directory.mkdir(parents=True)
    infos, first = [], 0
    for index, (rows, cpu) in enumerate(shards):
        infos.append(ShardInfo(name=f"train-{index:05d}", index=index, num_rows=rows, first_id=first,
                               num_bytes=0, sha256="", seconds=None if cpu is None else cpu,
                               cpu_seconds=cpu))
        first += rows
    write_manifest_file(directory, Manifest(
        teacher="t", teacher_fingerprint="", tokenizer_fingerprint="", pooling="mean", layer=-1,
        normalize=True, dim=4, dtype="float16", max_length=8, format="arrow",
        corpus=CorpusRecord(), corpus_fingerprint="", settings_fingerprint="", shards=infos,
        num_rows=first, num_tokens=0, num_bytes=0, command=""))


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


def test_the_summary_curve_is_the_named_recipe():
    def point(name, size, cosine):
        return {"name": name, "size": size, "train_rows": size, "heldout_cosine": cosine,
                "ood_cosine": cosine - 0.05, "probe_avg": 50.0, "cpu_hours": size / 1e6}

    rows = [point("default", 1000, 0.8), point("trained-emb", 1000, 0.85),
            point("trained-emb", 3000, 0.9)]
    summary = scale_summary.summary_of(rows, "trained-emb", {}, {"onnx_vs_st": 1.6})
    assert summary["series"] == "trained-emb"
    assert summary["sizes"] == [1000, 3000] and summary["heldout_cosine"] == [0.85, 0.9]
    assert summary["students"] == rows and summary["encode_vs_st"] == 1.6
    assert scale_summary.summary_of(rows, "default", {}, {})["sizes"] == [1000]
