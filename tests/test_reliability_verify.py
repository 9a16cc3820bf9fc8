"""`pipeline verify`: every kind of damage to a shard directory is named, nothing is missed."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cache_tools.format import MANIFEST_NAME
from cache_tools.verify import verify_directory
from data.corpus import CorpusConfig
from encoding import EncodeConfig, run_encode
from tests.helpers import assert_one_line_error, copy_shards, edit_json, pipeline_main, rewrite_shard

SHARD1 = "train-00001-of-00004.arrow"


@pytest.fixture
def shards(tmp_path, tiny_shards):
    """A private copy of the tiny shard directory, free to damage."""
    return copy_shards(tiny_shards, tmp_path / "shards")


def _edit_manifest(directory, edit):
    edit_json(directory / MANIFEST_NAME, edit)


def _flip_byte(path, offset):
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x10
    path.write_bytes(bytes(blob))


def test_verify_ok_full_and_quick(shards, capsys, monkeypatch):
    code, out, _ = pipeline_main(capsys, monkeypatch, "verify", shards)
    assert code == 0 and out.startswith("OK: 4 shards, 200 rows") and "sha256" in out
    code, out, _ = pipeline_main(capsys, monkeypatch, "verify", "--quick", shards)
    assert code == 0 and "no hashing" in out


def _nan(ids, vectors):
    vectors[5, 3] = np.nan


def _nan_in_a_later_batch(ids, vectors):
    vectors[37, 0] = np.inf  # row 37 of 64: the third record batch of 16


def _duplicate_id(ids, vectors):
    ids[7] = ids[6]


@pytest.mark.parametrize("damage, quick, fragments", [
    (lambda d: (d / SHARD1).unlink(), True, [SHARD1, "listed in the manifest but missing"]),
    (lambda d: (d / SHARD1).write_bytes((d / SHARD1).read_bytes()[:-100]), True,
     [SHARD1, "manifest says", "(truncated?)"]),
    (lambda d: _flip_byte(d / SHARD1, (d / SHARD1).stat().st_size // 2), False,
     [SHARD1, "sha256 mismatch"]),
    (lambda d: rewrite_shard(d, 1, _nan), False, [SHARD1, "NaN or Inf vector (id 69)"]),
    (lambda d: rewrite_shard(d, 1, _nan_in_a_later_batch, rows_per_batch=16), False,
     [SHARD1, "NaN or Inf vector (id 101)"]),
    (lambda d: rewrite_shard(d, 1, _duplicate_id), False, [SHARD1, "ids are not unique"]),
    (lambda d: rewrite_shard(d, 1, dtype="float32"), True,
     [SHARD1, "column 'vector'", "float16"]),
    (lambda d: _edit_manifest(d, lambda m: m["shards"][1].update(num_rows=65)), True,
     [SHARD1, "64 rows, manifest says 65"]),
    (lambda d: _edit_manifest(d, lambda m: m.update(settings_fingerprint="x")), True,
     ["train-00000-of-00004.arrow", "different encode run"]),
    (lambda d: (d / "tokenizer" / "tokenizer.json").unlink(), True, ["tokenizer files missing"]),
    (lambda d: (d / "teacher_input_embeddings.npy").write_bytes(b"junk"), True,
     ["unreadable embedding matrix"]),
    (lambda d: (d / MANIFEST_NAME).unlink(), True, ["no manifest.json", "incomplete"]),
    (lambda d: (d / MANIFEST_NAME).write_text("{"), True, ["manifest.json: not valid JSON"]),
    (lambda d: _edit_manifest(d, lambda m: m["shards"][0].pop("sha256")), True,
     ["malformed shard entry"]),
    (lambda d: shutil.rmtree(d), True, ["no such shard directory"]),
], ids=["missing", "truncated", "bitflip", "nan", "nan-in-a-later-batch", "duplicate-id", "dtype",
        "row-count", "foreign-shard", "no-tokenizer", "bad-embeddings", "no-manifest", "bad-manifest",
        "manifest-entry", "no-directory"])
def test_verify_names_the_first_problem(shards, capsys, monkeypatch, damage, quick, fragments):
    damage(shards)
    code, out, err = pipeline_main(capsys, monkeypatch, "verify", shards)
    assert_one_line_error(code, err, *fragments)
    if quick:  # the cheap check (train-student's) catches it too
        code, _, err = pipeline_main(capsys, monkeypatch, "verify", "--quick", shards)
        assert_one_line_error(code, err, *fragments)


def test_quick_check_reads_no_data(shards):
    """A bit flip inside the vectors passes --quick (no hashing): only the full check sees it."""
    _flip_byte(shards / SHARD1, (shards / SHARD1).stat().st_size // 2)
    assert verify_directory(shards, full=False).num_rows == 200


@pytest.mark.parametrize("offset, quick", [(0, False), (8, False), (-8, True), (-40, True),
                                           (-200, True)])
def test_damaged_arrow_framing_is_a_shard_error_not_a_crash(shards, capsys, monkeypatch, offset,
                                                            quick):
    """Flips in the file magic, the schema or the footer; the quick check reads the footer only."""
    path = shards / SHARD1
    _flip_byte(path, offset % path.stat().st_size)
    code, _, err = pipeline_main(capsys, monkeypatch, "verify", *["--quick"] * quick, shards)
    assert_one_line_error(code, err, SHARD1)


def test_hdf5_directory(tmp_path, tiny_corpus_file, tiny_teacher_dir, capsys, monkeypatch):
    out = tmp_path / "h5"
    run_encode(EncodeConfig(out=out, corpus=CorpusConfig(sources=[str(tiny_corpus_file)], limit=100),
                            teacher=str(tiny_teacher_dir), shard_size=64, format="hdf5",
                            progress=False))
    assert verify_directory(out).num_rows == 100
    name = "train-00000-of-00002.h5"
    (out / name).write_bytes((out / name).read_bytes()[:4096])
    _edit_manifest(out, lambda m: (m["shards"][0].update(num_bytes=4096),
                                   m.update(num_bytes=sum(s["num_bytes"] for s in m["shards"]))))
    code, _, err = pipeline_main(capsys, monkeypatch, "verify", "--quick", out)
    assert_one_line_error(code, err, name, "unreadable shard")
