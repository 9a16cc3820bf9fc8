"""torchrun on CPU (gloo): a 2-process encode equals a 1-process encode, also after a rank dies.

Every test here starts torchrun (each 8 to 45 s on 2 cores): all are ``slow``. The default run
covers the rank split in-process (tests/test_sharded_map.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cache_tools.manifest import read_manifest
from tests.helpers import GLUE_FIXTURES, read_rows, subprocess_env, tiny_corpus

pytestmark = pytest.mark.slow


def _encode_argv(corpus, teacher, out, shard_size, processes):
    args = ["encode", "--corpus", str(corpus), "--teacher", str(teacher), "--out", str(out),
            "--shard-size", str(shard_size), "--quiet"]
    if processes == 1:
        return [sys.executable, "-m", "pipeline", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
            "--standalone", "-m", "pipeline", *args]


def _run_ok(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[:3000] + " ... " + proc.stderr[-1500:]


def _assert_same_rows(got_dir, want_dir):
    (got_ids, got_vectors, _), (want_ids, want_vectors, _) = read_rows(got_dir), read_rows(want_dir)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_vectors, want_vectors, atol=1e-3)


def test_two_ranks_equal_one_process(tmp_path, tiny_teacher_dir, tiny_corpus_file):
    single, double = tmp_path / "one", tmp_path / "two"
    for out, n in ((single, 1), (double, 2)):
        _run_ok(_encode_argv(tiny_corpus_file, tiny_teacher_dir, out, 32, n))
    _assert_same_rows(double, single)
    assert len(read_manifest(double).shards) == 7


def _rank_pids(launcher_pid: int) -> dict[int, int]:
    """RANK -> pid of the worker processes torchrun started."""
    pids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                env = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if parent == launcher_pid and b"RANK" in env:
            pids[int(env[b"RANK"])] = int(entry)
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the ranks")
def test_rank_killed_mid_run_then_relaunched_gives_identical_result(tmp_path, tiny_teacher_dir):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(tiny_corpus(3000, seed=1)) + "\n")
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    _run_ok(_encode_argv(corpus, tiny_teacher_dir, reference, 25, 1))

    launcher = subprocess.Popen(_encode_argv(corpus, tiny_teacher_dir, crashed, 25, 2),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env())
    deadline = time.time() + 240
    while time.time() < deadline and len(list(crashed.glob("train-*.arrow"))) < 6:
        time.sleep(0.02)
    victim = _rank_pids(launcher.pid).get(1)
    assert victim is not None, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0
    written = len(list(crashed.glob("train-*.arrow")))
    assert not (crashed / "manifest.json").exists() and written < 120  # really interrupted
    assert not [p for p in crashed.iterdir() if p.name.startswith("train-") and ".tmp" not in p.name
                and not p.name.endswith(".arrow")]

    _run_ok(_encode_argv(corpus, tiny_teacher_dir, crashed, 25, 2))
    _assert_same_rows(crashed, reference)


def _train_argv(shards, out, processes, *extra):
    args = ["train-student", "--shards", str(shards), "--out", str(out), "--max-steps", "6",
            "--batch-size", "15", "--dropout", "0", "--eval-every", "3", "--checkpoint-every", "3",
            "--no-progress", *extra]
    if processes == 1:
        return [sys.executable, "-m", "pipeline", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
            "--standalone", "-m", "pipeline", *args]


def _weights(directory):
    from safetensors.numpy import load_file

    return load_file(str(directory / "model.safetensors"))


def test_ddp_training_equals_one_process_and_resumes(tmp_path, tiny_shards):
    runs = {}
    for name, processes, extra in (("one", 1, ()), ("two", 2, ()), ("resumed", 2, ("--stop-after", "3"))):
        _run_ok(_train_argv(tiny_shards, tmp_path / name, processes, *extra))
        runs[name] = tmp_path / name
    assert (runs["resumed"] / "checkpoint.pt").is_file()
    assert not (runs["resumed"] / "model.safetensors").exists()
    _run_ok(_train_argv(tiny_shards, runs["resumed"], 2, "--resume"))

    one, two, resumed = (_weights(runs[n]) for n in ("one", "two", "resumed"))
    for key in one:
        # Same global batch of 15 split 8 + 7 over two ranks: equal up to float summation order.
        np.testing.assert_allclose(two[key], one[key], atol=2e-5, err_msg=key)
        np.testing.assert_array_equal(resumed[key], two[key], err_msg=key)
    logs = [line for line in (runs["two"] / "metrics.jsonl").read_text().splitlines()]
    assert len(logs) == len(set(logs))  # written by rank 0 alone


def test_glue_eval_two_ranks_equal_one_process(tmp_path, tiny_teacher_dir, tiny_student_dir):
    """Rank 0 fills the teacher-logit cache while the other waits, then both read it, and the
    (system, seed) runs are dealt out, the grid's seed first, then the seed that reuses its rate
    (--grid-seeds 1): same cache, same scores, same rates."""
    args = ["glue-eval", "--glue-dir", str(GLUE_FIXTURES), "--tasks", "RTE",
            "--teacher", str(tiny_teacher_dir),
            "--system", f"student:{tiny_student_dir}+kd", "--system", "kd", "--system", "teacher",
            "--seeds", "2", "--grid-seeds", "1", "--lr-grid", "1e-3,1e-4", "--epochs", "1",
            "--head-hidden", "8", "--device", "cpu"]
    outs = {}
    for processes in (1, 2):
        outs[processes] = tmp_path / f"ranks{processes}"
        launcher = ([sys.executable, "-m", "pipeline"] if processes == 1 else
                    [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                     "--standalone", "-m", "pipeline"])
        _run_ok([*launcher, *args, "--out", str(outs[processes])])
    caches = [next(p for p in (outs[n] / "kd-cache").iterdir() if p.is_dir()) for n in (1, 2)]
    assert caches[0].name == caches[1].name
    np.testing.assert_allclose(np.load(caches[1] / "logits.npy"), np.load(caches[0] / "logits.npy"),
                               atol=1e-6)

    def scores(out):
        return [(r["system"], r["seed"], r["lr"], len(r["lr_grid"]), r["score"])
                for r in map(json.loads, (out / "runs.jsonl").open())]

    one, two = scores(outs[1]), scores(outs[2])
    assert [r[:4] for r in two] == [r[:4] for r in one] and len(one) == 6
    assert [r[3] for r in one if r[1] == 1] == [1, 1, 1]  # seed 1 trained at one rate
    np.testing.assert_allclose([r[4] for r in two], [r[4] for r in one], atol=1e-6)
