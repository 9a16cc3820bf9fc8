"""`pipeline encode` survives kill -9 at any point, a full disk, and a second run on its directory."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cache_tools.writer
from cache_tools.format import MANIFEST_NAME, parse_shard_name
from cache_tools.manifest import read_manifest
from cache_tools.reader import read_shard
from cache_tools.verify import verify_directory
from core.teacher import Teacher
from tests.helpers import (
    KILL_TIMEOUT,
    assert_one_line_error,
    kill_self_at,
    pipeline_main,
    run_forked,
    start_forked,
    subprocess_env,
)


def _encode_args(corpus, teacher, out, shard_size=64) -> list[str]:
    return ["encode", "--corpus", str(corpus), "--teacher", str(teacher), "--out", str(out),
            "--shard-size", str(shard_size), "--quiet"]


def _rows(directory: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Shard index -> (ids, vectors) of every file under a final shard name."""
    rows = {}
    for path in sorted(directory.iterdir()):
        parsed = parse_shard_name(path.name)
        if parsed:
            data = read_shard(path)
            rows[parsed[0]] = (data.ids, np.asarray(data.vectors))
    return rows


def _assert_same_rows(got: dict, want: dict) -> None:
    assert set(got) <= set(want)
    for index, (ids, vectors) in got.items():
        np.testing.assert_array_equal(ids, want[index][0])
        np.testing.assert_array_equal(vectors, want[index][1])


def _assert_finished_like(out: Path, reference: Path) -> None:
    """Complete, verified, identical to the uninterrupted run, no temporary file left behind."""
    verify_directory(out, full=True)
    got, want = _rows(out), _rows(reference)
    assert sorted(got) == sorted(want)
    _assert_same_rows(got, want)
    assert [s.sha256 for s in read_manifest(out).shards] == \
        [s.sha256 for s in read_manifest(reference).shards]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


# -- kill -9 inside the run, at named points -------------------------------------------------
def _vocabulary_pass(token_ids) -> bool:
    """The contextual-embedding pass ([CLS] token [SEP] each), not a batch of corpus sentences
    (the tiny corpus has at least four words a sentence)."""
    return all(len(ids) == 3 for ids in token_ids)


def _embed_then_die(nth: int) -> None:
    real, calls = Teacher.embed, []

    def embed(self, token_ids):
        if _vocabulary_pass(token_ids):
            return real(self, token_ids)
        calls.append(1)
        if len(calls) == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, token_ids)

    Teacher.embed = embed


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_corpus_file, tiny_teacher_dir) -> Path:
    """The uninterrupted run that every interrupted one must end up equal to."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert run_forked(_encode_args(tiny_corpus_file, tiny_teacher_dir, out)) == 0
    return out


KILL_POINTS = {
    # name: (fault installed in the child, a manifest may exist afterwards)
    "plan-written-not-renamed": lambda: kill_self_at(os, "replace", r"plan\.arrow$", 1, False),
    "tokenizer-not-renamed": lambda: kill_self_at(os, "rename", r"/tokenizer$", 1, False),
    "mid-teacher-batch": lambda: _embed_then_die(2),
    "shard-written-not-renamed": lambda: kill_self_at(os, "replace", r"train-00002-of-\d+\.arrow$",
                                                       1, False),
    "shard-renamed-no-receipt": lambda: kill_self_at(os, "replace", r"train-00002-of-\d+\.arrow$",
                                                      1, True),
    "receipt-not-renamed": lambda: kill_self_at(os, "replace", r"shard-00001\.json$", 1, False),
    "manifest-not-renamed": lambda: kill_self_at(os, "replace", r"/manifest\.json$", 1, False),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_rerun_gives_the_uninterrupted_result(point, tmp_path, reference,
                                                          tiny_corpus_file, tiny_teacher_dir):
    out = tmp_path / "out"
    argv = _encode_args(tiny_corpus_file, tiny_teacher_dir, out)
    assert run_forked(argv, KILL_POINTS[point]) == -signal.SIGKILL
    assert not (out / MANIFEST_NAME).exists()
    _assert_same_rows(_rows(out), _rows(reference))  # no half-written shard under a final name

    assert run_forked(argv) == 0  # the same command again
    _assert_finished_like(out, reference)


def test_overwrite_after_a_kill_clears_half_written_files(tmp_path, tiny_corpus_file,
                                                          tiny_teacher_dir):
    out = tmp_path / "out"
    argv = _encode_args(tiny_corpus_file, tiny_teacher_dir, out)
    assert run_forked(argv, KILL_POINTS["tokenizer-not-renamed"]) == -signal.SIGKILL
    assert [p for p in out.iterdir() if p.is_dir() and p.name.startswith(".tokenizer.tmp-")]
    assert run_forked([*argv, "--dtype", "float32", "--overwrite"]) == 0
    assert verify_directory(out).num_rows == 200
    assert not [p for p in out.iterdir() if p.name.startswith(".tokenizer.tmp-")]


@pytest.mark.slow  # a real `python -m pipeline` process (8 s); the forked kill points above are fast
def test_external_kill_9_of_a_real_process(tmp_path, tiny_corpus_file, tiny_teacher_dir):
    """`python -m pipeline encode` killed from outside once a few shards are on disk."""
    reference = tmp_path / "reference"
    assert run_forked(_encode_args(tiny_corpus_file, tiny_teacher_dir, reference, 2)) == 0
    out = tmp_path / "out"
    argv = _encode_args(tiny_corpus_file, tiny_teacher_dir, out, shard_size=2)
    process = subprocess.Popen([sys.executable, "-m", "pipeline", *argv],
                               env=subprocess_env())
    deadline = time.monotonic() + KILL_TIMEOUT
    while len(list(out.glob("train-*.arrow"))) < 5 and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / MANIFEST_NAME).exists()
    _assert_same_rows(_rows(out), _rows(reference))

    assert run_forked(argv) == 0
    _assert_finished_like(out, reference)


# -- disk full ---------------------------------------------------------------------------------
def _disk_full(path):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_disk_full_while_writing_a_shard(tmp_path, tiny_shards, tiny_corpus_file, tiny_teacher_dir,
                                         capsys, monkeypatch):
    out = tmp_path / "out"
    argv = _encode_args(tiny_corpus_file, tiny_teacher_dir, out)
    real_write, shards_started = cache_tools.writer._write_arrow, []

    def write_until_full(tmp, *args):
        shards_started.append(tmp)
        if len(shards_started) == 3:
            tmp.write_bytes(b"ARROW1 half a shard")
            raise _disk_full(tmp)
        real_write(tmp, *args)

    monkeypatch.setattr(cache_tools.writer, "_write_arrow", write_until_full)
    code, _, stderr = pipeline_main(capsys, monkeypatch, *argv)
    assert_one_line_error(code, stderr, "No space left on device", "train-00002-of-00004.arrow",
                          "rerun the same command to resume")
    assert not (out / MANIFEST_NAME).exists()
    assert sorted(_rows(out)) == [0, 1]  # complete shards kept, the broken one removed
    _assert_same_rows(_rows(out), _rows(tiny_shards))
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]

    monkeypatch.setattr(cache_tools.writer, "_write_arrow", real_write)  # space freed
    code, stdout, stderr = pipeline_main(capsys, monkeypatch, *argv)
    assert code == 0 and "this run encoded 72 sentences" in stdout, stderr
    _assert_finished_like(out, tiny_shards)


def test_disk_full_while_writing_the_manifest(tmp_path, tiny_shards, tiny_corpus_file,
                                              tiny_teacher_dir, capsys, monkeypatch):
    out = tmp_path / "out"
    argv = _encode_args(tiny_corpus_file, tiny_teacher_dir, out)
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(".manifest.json."):
            raise _disk_full(MANIFEST_NAME)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, _, stderr = pipeline_main(capsys, monkeypatch, *argv)
    assert_one_line_error(code, stderr, "No space left on device", "manifest.json")
    assert not (out / MANIFEST_NAME).exists() and not list(out.glob(".manifest.json*"))
    assert sorted(_rows(out)) == [0, 1, 2, 3]

    monkeypatch.setattr(os, "fsync", real_fsync)
    code, stdout, stderr = pipeline_main(capsys, monkeypatch, *argv)
    assert code == 0 and "this run encoded 0 sentences" in stdout, stderr
    _assert_finished_like(out, tiny_shards)


# -- a teacher that gives NaN/Inf ------------------------------------------------------------------
@pytest.mark.parametrize("value, message", [
    (np.nan, "check the teacher and --device"),
    (1e6, "they overflow float16: pass --dtype float32"),
])
def test_non_finite_teacher_vectors_are_never_stored(value, message, tmp_path, tiny_shards,
                                                     tiny_corpus_file, tiny_teacher_dir, capsys,
                                                     monkeypatch):
    out = tmp_path / "out"
    real, calls = Teacher.embed, []

    def embed(self, token_ids):
        vectors = real(self, token_ids)
        if _vocabulary_pass(token_ids):
            return vectors
        calls.append(1)
        if len(calls) == 2:  # shard 1
            vectors[3, 0] = value
        return vectors

    monkeypatch.setattr(Teacher, "embed", embed)
    # one teacher batch a shard (64 sentences), so the second call is shard 1's
    code, _, err = pipeline_main(capsys, monkeypatch,
                                 *_encode_args(tiny_corpus_file, tiny_teacher_dir, out),
                                 "--max-tokens", "16384")
    assert_one_line_error(code, err, "train-00001-of-00004.arrow: NaN or Inf teacher vectors for 1 "
                          "of 64 sentences (first id", message)
    assert sorted(_rows(out)) == [0] and not (out / MANIFEST_NAME).exists()


# -- two runs on one directory -----------------------------------------------------------------
def _hold_in_first_batch(started: Path, release: Path) -> None:
    real = Teacher.embed

    def embed(self, token_ids):
        started.touch()
        while not release.exists():
            time.sleep(0.02)
        return real(self, token_ids)

    Teacher.embed = embed


def test_second_process_on_the_same_directory_is_refused(tmp_path, reference, tiny_corpus_file,
                                                         tiny_teacher_dir):
    out, started, release = tmp_path / "out", tmp_path / "started", tmp_path / "release"
    argv = _encode_args(tiny_corpus_file, tiny_teacher_dir, out)
    first = start_forked(argv, lambda: _hold_in_first_batch(started, release))
    try:
        deadline = time.monotonic() + KILL_TIMEOUT
        while not started.exists() and first.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists(), "the first run did not start encoding"
        second = subprocess.run([sys.executable, "-m", "pipeline", *argv], capture_output=True,
                                text=True, timeout=KILL_TIMEOUT,
                                env=subprocess_env())
        assert_one_line_error(second.returncode, second.stderr, str(out),
                              "is locked by another `pipeline encode` run")
    finally:
        release.touch()
        first.join(KILL_TIMEOUT)
    assert first.exitcode == 0
    _assert_finished_like(out, reference)
