from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModel, AutoTokenizer

import cache_tools.writer
from cache_tools.format import MANIFEST_NAME
from cache_tools.reader import ShardDirectory
from cache_tools.verify import verify_directory
from core.batching import sorted_batches
from core.errors import UserError
from data.corpus import CorpusConfig
from encoding import EncodeConfig, run_encode
from pipeline.cli import cli
from tests.helpers import assert_one_line_error, pipeline_main, read_rows, subprocess_env


def _config(out, corpus_file, teacher, **kwargs) -> EncodeConfig:
    return EncodeConfig(out=out, corpus=CorpusConfig(sources=[str(corpus_file)]),
                        teacher=str(teacher), shard_size=64, progress=False, **kwargs)


def _direct_mean_pooled(teacher_dir, sentences):
    """The teacher's vectors computed one sentence at a time, no padding, no batching."""
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    model = AutoModel.from_pretrained(teacher_dir).eval()
    with torch.no_grad():
        return np.stack([
            model(**tokenizer(s, return_tensors="pt")).last_hidden_state[0].mean(0).numpy()
            for s in sentences
        ])


def test_vectors_match_direct_teacher_in_order(tiny_shards, tiny_teacher_dir, tiny_sentences):
    ids, vectors, texts = read_rows(tiny_shards)
    assert ids.tolist() == list(range(len(tiny_sentences)))
    assert texts == tiny_sentences  # original corpus order, by id
    expected = _direct_mean_pooled(tiny_teacher_dir, tiny_sentences)
    cosine = (vectors * expected).sum(1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() > 0.999


def test_manifest_and_sidecars(tiny_shards):
    shards = ShardDirectory(tiny_shards)
    m = shards.manifest
    assert [s.name for s in m.shards] == [f"train-0000{i}-of-00004.arrow" for i in range(4)]
    assert [s.num_rows for s in m.shards] == [64, 64, 64, 8]
    assert m.num_rows == 200 and m.dim == 32 and m.dtype == "float16" and m.pooling == "mean"
    assert m.corpus.stats["sentences_kept"] == 200
    assert (shards.tokenizer_dir / "tokenizer.json").is_file()
    assert shards.load_embeddings().shape == (m.vocab_size, 32)
    assert verify_directory(tiny_shards).num_rows == 200


def test_interrupted_run_resumes_to_identical_result(tmp_path, tiny_corpus_file, tiny_teacher_dir,
                                                     monkeypatch):
    reference = tmp_path / "reference"
    run_encode(_config(reference, tiny_corpus_file, tiny_teacher_dir))

    interrupted = tmp_path / "interrupted"
    real_write, calls = cache_tools.writer.write_shard, []

    def crash_on_third(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if killed while writing shard 3
        return real_write(*args, **kwargs)

    monkeypatch.setattr("cache_tools.sharded_map.write_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_encode(_config(interrupted, tiny_corpus_file, tiny_teacher_dir))
    assert not (interrupted / MANIFEST_NAME).exists()
    assert sorted(p.name for p in interrupted.glob("train-*")) == [
        "train-00000-of-00004.arrow", "train-00001-of-00004.arrow"]

    first_receipts = [json.loads(p.read_text()) for p in sorted(interrupted.glob(".work/shard-*"))]
    monkeypatch.setattr("cache_tools.sharded_map.write_shard", real_write)
    result = run_encode(_config(interrupted, tiny_corpus_file, tiny_teacher_dir))
    assert result.encoded_rows == 64 + 8  # only the two missing shards
    # each shard's cost is recorded once, by the run that made it: the pass's cost over both runs
    shards = result.manifest.shards
    assert all(s.seconds > 0 and s.cpu_seconds > 0 for s in shards)
    assert [(s.seconds, s.cpu_seconds) for s in shards[:2]] == [
        (r["seconds"], r["cpu_seconds"]) for r in first_receipts]
    for got, want in zip(read_rows(interrupted), read_rows(reference), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_different_settings_refused_unless_overwrite(tmp_path, tiny_corpus_file, tiny_teacher_dir):
    out = tmp_path / "shards"
    run_encode(_config(out, tiny_corpus_file, tiny_teacher_dir))
    with pytest.raises(UserError, match="different teacher, corpus or settings"):
        run_encode(_config(out, tiny_corpus_file, tiny_teacher_dir, dtype="float32"))
    result = run_encode(_config(out, tiny_corpus_file, tiny_teacher_dir, dtype="float32",
                                overwrite=True))
    assert result.manifest.dtype == "float32"
    assert len(list(out.glob("train-*"))) == 4


def test_rerun_of_complete_directory_encodes_nothing(tmp_path, tiny_corpus_file, tiny_teacher_dir):
    out = tmp_path / "shards"
    run_encode(_config(out, tiny_corpus_file, tiny_teacher_dir))
    assert run_encode(_config(out, tiny_corpus_file, tiny_teacher_dir)).encoded_rows == 0


def test_hdf5_format_holds_the_same_rows(tmp_path, tiny_shards, tiny_corpus_file, tiny_teacher_dir):
    import h5py

    out = tmp_path / "h5"
    run_encode(_config(out, tiny_corpus_file, tiny_teacher_dir, format="hdf5"))
    paths = ShardDirectory(out).shard_paths
    assert [p.suffix for p in paths] == [".h5"] * 4
    ids, vectors, texts = read_rows(tiny_shards)
    for got, want in zip(read_rows(out), (ids, vectors, texts), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # the files themselves, read with plain h5py as README shows: datasets, dtypes, attributes
    with h5py.File(paths[1], "r") as h5:
        assert sorted(h5) == ["id", "input_ids", "text", "vector"]
        assert json.loads(h5.attrs["sra_shard"])["index"] == 1
        np.testing.assert_array_equal(h5["id"][:], ids[64:128])
        assert h5["vector"].dtype == np.float16 and h5["vector"].shape == (64, 32)
        np.testing.assert_array_equal(h5["vector"][:].astype(np.float32), vectors[64:128])
        assert h5["text"].asstr()[:].tolist() == texts[64:128]
        assert h5["input_ids"][0].dtype == np.int32 and h5["input_ids"][0][0] == 2  # [CLS]


def test_arrow_shards_readable_with_polars_and_pyarrow(tiny_shards):
    import polars as pl
    import pyarrow as pa

    path = ShardDirectory(tiny_shards).shard_paths[0]
    frame = pl.read_ipc(path)
    assert frame.columns == ["id", "text", "input_ids", "vector"] and frame.height == 64
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    assert json.loads(table.schema.metadata[b"sra_shard"])["dim"] == 32
    ids, vectors, _ = read_rows(tiny_shards)
    np.testing.assert_array_equal(frame["id"].to_numpy(), ids[:64])
    np.testing.assert_array_equal(np.stack(frame["vector"].to_numpy()).astype(np.float32), vectors[:64])


@pytest.mark.parametrize("lengths", [[5, 1, 9, 9, 3, 7, 2], list(range(1, 100)), [4]])
def test_token_budget_batches_cover_each_index_once_within_budget(lengths):
    batches = sorted_batches(lengths, batch_size=4, max_tokens=20)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) <= 4 and (len(batch) == 1 or len(batch) * longest <= 20)


def test_cli_encode_and_shards_info(tmp_path, tiny_corpus_file, tiny_teacher_dir):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(cli, ["encode", "--corpus", str(tiny_corpus_file), "--out", str(out),
                                 "--teacher", str(tiny_teacher_dir), "--limit", "50", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "50 sentences" in result.output
    info = runner.invoke(cli, ["shards-info", str(out)])
    assert info.exit_code == 0 and "50 x 32 float16" in info.output
    assert "cost        teacher pass" in info.output and "1 of 1 shards timed" in info.output


def test_cli_exclude_never_encodes_evaluation_sentences(tmp_path, tiny_corpus_file, tiny_teacher_dir,
                                                       tiny_sentences):
    held = tmp_path / "dev.tsv"
    held.write_text("sentence\tlabel\n" + "".join(f"{s}\t1\n" for s in tiny_sentences[:7]))
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(cli, ["encode", "--corpus", str(tiny_corpus_file), "--out", str(out),
                                 "--teacher", str(tiny_teacher_dir), "--exclude", str(held),
                                 "--mix-sources", "--quiet"])
    assert result.exit_code == 0, result.output
    _, _, texts = read_rows(out)
    assert texts == tiny_sentences[7:]
    manifest = ShardDirectory(out).manifest
    assert manifest.corpus.stats["excluded"] == 7
    assert manifest.corpus.settings["exclude"][0]["source"] == str(held)
    info = runner.invoke(cli, ["shards-info", str(out)])
    assert "excluded 7" in info.output


def test_excluding_a_shard_directory_continues_its_sentence_list(tmp_path, tiny_corpus_file,
                                                                tiny_teacher_dir, tiny_sentences,
                                                                capsys, monkeypatch):
    """A corpus grown without re-encoding: the same corpus with the first directory excluded and
    a larger --limit encodes the sentences after it, and the two train as one corpus."""
    runner = CliRunner()
    first, rest = tmp_path / "first", tmp_path / "rest"
    common = ["--corpus", str(tiny_corpus_file), "--teacher", str(tiny_teacher_dir), "--quiet"]
    result = runner.invoke(cli, ["encode", *common, "--out", str(first), "--limit", "60"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["encode", *common, "--out", str(rest), "--limit", "100",
                                 "--exclude", str(first)])
    assert result.exit_code == 0, result.output
    assert read_rows(first)[2] == tiny_sentences[:60]
    assert read_rows(rest)[2] == tiny_sentences[60:160]
    manifest = ShardDirectory(rest).manifest
    assert manifest.corpus.stats["excluded"] == 60
    (entry,) = manifest.corpus.settings["exclude"]
    assert entry["source"] == str(first)  # the directory, by its manifest's content
    assert entry["sha256"] == hashlib.sha256((first / MANIFEST_NAME).read_bytes()).hexdigest()
    (first / MANIFEST_NAME).rename(tmp_path / "aside.json")  # as if its encode had not finished
    code, _, err = pipeline_main(capsys, monkeypatch, "encode", *common, "--out", tmp_path / "more",
                                 "--exclude", first)
    assert_one_line_error(code, err, "unfinished shard directory")
    (tmp_path / "aside.json").rename(first / MANIFEST_NAME)
    result = runner.invoke(cli, ["train-student", "--shards", str(first), "--shards", str(rest),
                                 "--out", str(tmp_path / "student"), "--max-steps", "2",
                                 "--batch-size", "8", "--hidden", "8", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "student" / "training_summary.json").read_text())
    assert 100 < summary["train_rows"] <= 160  # rows of both (each alone has 60 and 100)


def test_streamed_plan_fingerprint_equals_the_list_fingerprint():
    from core.io import fingerprint
    from encoding.plan import StreamingFingerprint as _StreamingFingerprint

    for texts in ([], ["a"], ["x \"quoted\" é", "second", "third"]):
        streamed = _StreamingFingerprint()
        for text in texts:
            streamed.add(text)
        assert streamed.hexdigest() == fingerprint(texts)


ENCODE_REFUSALS = [
    (["--corpus", "/no/such/file.txt"], "corpus path not found"),
    (["--teacher", "/no/such/teacher"], "cannot load teacher"),
    (["--shard-size", "-5"], "--shard-size must be positive"),
    (["--batch-size", "0"], "--batch-size must be positive"),
]


def _encode_argv(tmp_path, tiny_corpus_file, tiny_teacher_dir, args) -> list[str]:
    options = {"--corpus": str(tiny_corpus_file), "--teacher": str(tiny_teacher_dir)}
    options.update(zip(args[::2], args[1::2], strict=True))
    return ["encode", "--out", str(tmp_path / "o"), "--quiet",
            *[item for pair in options.items() for item in pair]]


@pytest.mark.parametrize("args, message", ENCODE_REFUSALS)
def test_cli_bad_input_is_one_line_error(tmp_path, tiny_corpus_file, tiny_teacher_dir, args, message,
                                         capsys, monkeypatch):
    argv = _encode_argv(tmp_path, tiny_corpus_file, tiny_teacher_dir, args)
    code, _, err = pipeline_main(capsys, monkeypatch, *argv)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "o" / MANIFEST_NAME).exists()


@pytest.mark.slow  # a `python -m pipeline` process each (3 to 7 s): the in-process test above is fast
@pytest.mark.parametrize("args, message", ENCODE_REFUSALS)
def test_cli_bad_input_is_one_line_error_in_a_real_process(tmp_path, tiny_corpus_file, tiny_teacher_dir,
                                                           args, message):
    argv = _encode_argv(tmp_path, tiny_corpus_file, tiny_teacher_dir, args)
    proc = subprocess.run([sys.executable, "-m", "pipeline", *argv], capture_output=True, text=True,
                          timeout=120, env=subprocess_env())
    assert_one_line_error(proc.returncode, proc.stderr, message)
