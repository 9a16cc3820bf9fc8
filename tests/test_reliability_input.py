"""Bad input to `pipeline encode`: a one-line `error:` and exit 2, or a counted skip; never a traceback."""

from __future__ import annotations

import errno
import gzip
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_tools.manifest import read_manifest
from core.errors import UserError
from core.teacher import Teacher
from data.corpus import CorpusConfig, CorpusReader, normalize_sentence, split_sentences
from tests.helpers import WORDS, assert_one_line_error, pipeline_main, tiny_corpus
from tests.helpers import write_file as _file

GOOD = "\n".join(tiny_corpus(20, seed=3)) + "\n"


@pytest.fixture
def encode(tmp_path, tiny_teacher_dir, capsys, monkeypatch):
    """``encode(*corpora, *options)`` through `pipeline.cli.main` into ``tmp_path/out``."""

    def run(*args):
        corpora = [a for a in args if not str(a).startswith("--")]
        options = [str(a) for a in args if str(a).startswith("--")]
        argv = ["encode", "--out", tmp_path / "out", "--quiet", *[x for c in corpora
                                                                  for x in ("--corpus", c)]]
        if "--teacher" not in options:
            argv += ["--teacher", tiny_teacher_dir]
        return pipeline_main(capsys, monkeypatch, *argv, *[x for o in options for x in o.split("=", 1)])

    return run


def _parquet(tmp_path) -> str:
    pq.write_table(pa.table({"body": [GOOD]}), tmp_path / "d.parquet")
    return str(tmp_path / "d.parquet")


def _readme_only_dir(tmp_path) -> str:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "README.md").write_text("about the corpus\n")
    return str(tmp_path / "corpus")


REFUSED = {
    "empty-file": (lambda t: [_file(t, "e.txt", "")], "the corpus yielded no sentences (empty input)"),
    "blank-lines-only": (lambda t: [_file(t, "b.txt", "\n \r\n\t\n")], "(empty_lines=3)"),
    "binary-file": (lambda t: [_file(t, "x.bin", b"\x00\x01\xff" * 4000)], "(binary_files=1)"),
    "jsonl-no-text-field": (lambda t: [_file(t, "c.jsonl", '{"body": "A b c d e."}\n{broken\n')],
                            "bad_records=2; is --text-column right?"),
    "parquet-no-column": (lambda t: [_parquet(t)], "no column 'text' (columns: body); pass --text-column"),
    "tsv-no-column-option": (lambda t: [_file(t, "f.tsv", "a\tb\n")], "needs --text-column"),
    "corrupt-gzip": (lambda t: [_file(t, "g.txt.gz", b"junk")], "g.txt.gz: cannot read (Not a gzipped"),
    "truncated-gzip": (lambda t: [_file(t, "h.txt.gz", gzip.compress(GOOD.encode() * 50)[:200])],
                       "h.txt.gz: cannot read (Compressed file ended"),
    "corrupt-bz2": (lambda t: [_file(t, "i.txt.bz2", b"junk")], "i.txt.bz2: cannot read"),
    "directory-without-corpus": (lambda t: [_readme_only_dir(t)], "holds no corpus files"),
    "teacher-not-a-model": (lambda t: [_file(t, "ok.txt", GOOD), f"--teacher={t}"],
                            "cannot load teacher"),
    "max-tokens-0": (lambda t: [_file(t, "ok.txt", GOOD), "--max-tokens=0"],
                     "--max-tokens must be positive, got 0"),
    "shard-size-0": (lambda t: [_file(t, "ok.txt", GOOD), "--shard-size=0"],
                     "--shard-size must be positive, got 0"),
    "limit-0": (lambda t: [_file(t, "ok.txt", GOOD), "--limit=0"], "--limit must be positive"),
    "min-words-0": (lambda t: [_file(t, "ok.txt", GOOD), "--min-words=0"], "--min-words (0) must be"),
    "max-below-min-words": (lambda t: [_file(t, "ok.txt", GOOD), "--max-words=2"],
                            "must be >= 1 and <= --max-words (2)"),
    "max-length-1": (lambda t: [_file(t, "ok.txt", GOOD), "--max-length=1"], "--max-length must be in"),
    "layer-out-of-range": (lambda t: [_file(t, "ok.txt", GOOD), "--layer=9"], "--layer 9 out of range"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_with_one_line(case, tmp_path, encode):
    make, message = REFUSED[case]
    code, _, err = encode(*make(tmp_path))
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "out" / "manifest.json").exists()


def _ten_mb_line(tmp_path) -> str:
    return _file(tmp_path, "long.txt", "word " * 2_000_000 + "\n" + GOOD)


SKIPPED = {  # corpus, kept sentences, counts
    "binary-beside-text": (lambda t: [_file(t, "x.bin", b"\x00" * 100), _file(t, "ok.txt", GOOD)],
                           20, {"binary_files": 1}),
    "invalid-utf8-line": (lambda t: [_file(t, "u.txt", b"Caf\xe9 society was very popular then.\n"
                                           + GOOD.encode())], 21, {"invalid_utf8_lines": 1}),
    "10mb-single-line": (lambda t: [_ten_mb_line(t)], 20, {"overlong_lines": 1}),
    "jsonl-broken-lines": (lambda t: [_file(t, "c.jsonl", "\n".join(
        [json.dumps({"text": GOOD}), "{broken", json.dumps({"other": 1}), '"a string"']))],
                           20, {"bad_records": 3}),
}


@pytest.mark.parametrize("case", list(SKIPPED))
def test_skipped_and_counted(case, tmp_path, encode):
    make, kept, counts = SKIPPED[case]
    code, out, err = encode(*make(tmp_path))
    assert code == 0, err
    assert f"done: {kept} sentences" in out
    assert all(f"{k}={v}" in out for k, v in counts.items())  # the done line names the skips
    stats = read_manifest(tmp_path / "out").corpus.stats
    assert {k: stats[k] for k in counts} == counts and stats["sentences_kept"] == kept


def test_crlf_and_mixed_line_endings_read_like_lf(tmp_path):
    lines = GOOD.splitlines()
    endings = ["\r\n", "\n", "\r", "\r\n"] * len(lines)
    mixed = _file(tmp_path, "mixed.txt", "".join(f"{s}{e}" for s, e in zip(lines, endings)))
    crlf = _file(tmp_path, "crlf.txt", GOOD.replace("\n", "\r\n"))
    expected = list(CorpusReader(CorpusConfig(sources=[_file(tmp_path, "lf.txt", GOOD)])))
    assert len(expected) == 20
    for path in (mixed, crlf):
        assert list(CorpusReader(CorpusConfig(sources=[path]))) == expected


@pytest.mark.parametrize("args, message", [
    (["encode", "--out", "o", "--shard-size", "abc"], "Invalid value for '--shard-size'"),
    (["encode", "--out", "o", "--format", "xml"], "Invalid value for '--format'"),
    (["encode"], "Missing option '--out'"),
    (["encode", "--out", "o", "--no-such-option"], "No such option '--no-such-option'"),
    (["no-such-command"], "No such command 'no-such-command'"),
    (["verify"], "Missing argument 'DIRECTORY'"),
])
def test_click_usage_errors_exit_2_without_traceback(args, message, capsys, monkeypatch):
    code, _, err = pipeline_main(capsys, monkeypatch, *args)
    assert code == 2 and f"Error: {message}" in err and "Traceback" not in err, err


@pytest.mark.parametrize("make_out, message", [
    (lambda t: _file(t, "a-file", "x"), "File exists"),
    (lambda t: f"{_file(t, 'a-file', 'x')}/shards", "Not a directory"),
])
def test_os_errors_are_one_line(make_out, message, tmp_path, tiny_teacher_dir, capsys, monkeypatch):
    code, _, err = pipeline_main(capsys, monkeypatch, "encode", "--corpus", _file(tmp_path, "ok.txt", GOOD),
                                 "--teacher", tiny_teacher_dir, "--out", make_out(tmp_path), "--quiet")
    assert_one_line_error(code, err, message, "a-file")


@pytest.mark.parametrize("error, message", [
    (OSError(errno.EIO, "Input/output error\nat block 7", "f.arrow"),
     "error: Input/output error at block 7: f.arrow"),
    (UserError("first line\n  second line"), "error: first line second line"),
])
def test_multi_line_library_messages_become_one_line(error, message, tmp_path, encode, monkeypatch):
    def fail(config):
        raise error

    monkeypatch.setattr("pipeline.encode_cmd.run_encode", fail)
    code, _, err = encode(_file(tmp_path, "ok.txt", GOOD))
    assert_one_line_error(code, err, message)


def test_ctrl_c_says_how_to_resume(tmp_path, encode, monkeypatch):
    def interrupted(self, token_ids):
        raise KeyboardInterrupt

    monkeypatch.setattr(Teacher, "embed", interrupted)
    code, _, err = encode(_file(tmp_path, "ok.txt", GOOD))
    assert code == 130 and err.strip() == (
        "Interrupted; rerun the same command to resume (train-student: with --resume).")


# -- properties (tests/test_corpus.py has: splitter never fails, reader survives any bytes) ------
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
_LINES = st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join),
                  min_size=1, max_size=12)


@settings(max_examples=100, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cf", "Co", "Cn")), max_size=300))
def test_splitter_loses_and_invents_no_visible_character(text):
    """Only whitespace may change (control characters are normalize_sentence's business)."""
    sentences = split_sentences(text)
    assert all(s.strip() and "\n" not in s for s in sentences)
    assert re.sub(r"\s", "", "".join(sentences)) == re.sub(r"\s", "", text)


@settings(max_examples=30, deadline=None)
@given(_LINES, st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=12, max_size=12))
def test_line_endings_never_change_the_sentences(tmp_path_factory, lines, endings):
    folder = tmp_path_factory.mktemp("endings")
    lf = _file(folder, "lf.txt", "\n".join(lines) + "\n")
    mixed = _file(folder, "mixed.txt", "".join(f"{s}{e}" for s, e in zip(lines, endings)))
    read = [list(CorpusReader(CorpusConfig(sources=[p], min_words=1))) for p in (lf, mixed)]
    assert read[0] == read[1]


@settings(max_examples=40, deadline=None)
@given(_TEXT.filter(lambda t: len(t) <= 300), st.integers(1, 4), st.integers(0, 6))
def test_reader_accounts_for_every_sentence(tmp_path_factory, text, min_words, extra):
    path = _file(tmp_path_factory.mktemp("acct"), "x.txt", text)
    reader = CorpusReader(CorpusConfig(sources=[path], min_words=min_words,
                                       max_words=min_words + extra))
    kept = list(reader)
    s = reader.stats
    assert s.sentences_seen == s.sentences_kept + s.too_short + s.too_long + s.duplicates
    assert len(kept) == s.sentences_kept == len(set(kept))
    assert all(min_words <= len(k.split()) <= min_words + extra for k in kept)
    assert all(k == normalize_sentence(k) and "\n" not in k and "\r" not in k for k in kept)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("ok"), _LINES.map(" ".join)),
                          st.tuples(st.just("broken"), _TEXT.filter(lambda t: len(t) <= 20)),
                          st.tuples(st.just("no-field"), st.integers())), max_size=10))
def test_jsonl_bad_records_are_counted_exactly(tmp_path_factory, records):
    folder = tmp_path_factory.mktemp("jsonl")
    lines = [json.dumps({"text": v}) if kind == "ok" else json.dumps({"n": v}) if kind == "no-field"
             else "{" + v.replace("\n", " ").replace("\r", " ") for kind, v in records]
    clean = [json.dumps({"text": v}) for kind, v in records if kind == "ok"]
    reader = CorpusReader(CorpusConfig(sources=[_file(folder, "x.jsonl", "\n".join(lines))],
                                       min_words=1))
    expected = list(CorpusReader(CorpusConfig(sources=[_file(folder, "y.jsonl", "\n".join(clean))],
                                              min_words=1)))
    assert list(reader) == expected
    assert reader.stats.bad_records == sum(kind != "ok" for kind, _ in records)
