from __future__ import annotations

import bz2
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import UserError
from data.corpus import (
    CorpusConfig,
    CorpusReader,
    KeySet,
    bundled_wiki_sample,
    normalize_sentence,
    resolve_sources,
    sentence_key,
    split_sentences,
)

PARAGRAPH = "The river is long. It flows into the sea near the old city. Many boats sail on it."


def read(sources, **kwargs):
    reader = CorpusReader(CorpusConfig(sources=[str(s) for s in sources], **kwargs))
    return list(reader), reader.stats


def test_plain_text_split_normalised_and_deduplicated(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(f"{PARAGRAPH}\n\n  The   river is  long.\r\nShort one.\n")
    sentences, stats = read([path])
    assert sentences == ["The river is long.", "It flows into the sea near the old city.",
                         "Many boats sail on it."]
    assert stats.duplicates == 1 and stats.too_short == 1 and stats.empty_lines == 1


def test_limit_and_word_filters(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(PARAGRAPH + "\n")
    assert read([path], limit=2)[0] == ["The river is long.", "It flows into the sea near the old city."]
    assert read([path], min_words=5, max_words=8)[0] == ["Many boats sail on it."]


def test_invalid_utf8_binary_and_overlong_lines_are_counted(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"Caf\xe9 society was very popular then.\n" + b"word " * 300 + b"\n"
                    + b"A normal sentence is here too.\n")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02 binary stuff" * 100)
    sentences, stats = read([bad, binary], max_line_chars=1000)
    assert sentences == ["Caf society was very popular then.", "A normal sentence is here too."]
    assert stats.invalid_utf8_lines == 1 and stats.overlong_lines == 1 and stats.binary_files == 1


def test_jsonl_with_broken_lines_and_missing_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": PARAGRAPH}) + "\n{broken\n" + json.dumps({"other": 1}) + "\n")
    sentences, stats = read([path])
    assert len(sentences) == 3 and stats.bad_records == 2


def test_parquet_and_missing_column(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"body": [PARAGRAPH, None]}), path)
    sentences, stats = read([path], text_column="body")
    assert len(sentences) == 3 and stats.bad_records == 1
    with pytest.raises(UserError, match="no column 'text'"):
        read([path])


def test_tsv_by_name_and_csv_by_index(tmp_path):
    tsv = tmp_path / "e.tsv"
    tsv.write_text('\ufeffid\tSentence\n1\tHe said "hello to all of them.\n2\tThe old king died in 1901.\n')
    assert read([tsv], text_column="Sentence")[0] == ['He said "hello to all of them.',
                                                      "The old king died in 1901."]
    csv_file = tmp_path / "f.csv"
    csv_file.write_text('"The city, by the river, grew fast.",x\n')
    assert read([csv_file], text_column="0")[0] == ["The city, by the river, grew fast."]
    with pytest.raises(UserError, match="needs --text-column"):
        read([tsv])


def test_text_column_candidates_fit_each_file(tmp_path):
    with_header = tmp_path / "qa.tsv"
    with_header.write_text("QuestionID\tSentence\nQ1\tThe first sentence of the file.\n")
    headerless = tmp_path / "split.tsv"
    headerless.write_text("The old king died in 1901.\tx\n")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(json.dumps({"Sentence": "A record with the second name."}) + "\n")
    sentences, stats = read([with_header, headerless, jsonl], text_column="Sentence,0")
    assert sentences == ["The first sentence of the file.", "The old king died in 1901.",
                         "A record with the second name."]
    assert stats.bad_records == 0
    with pytest.raises(UserError, match="no column 'body'"):
        read([with_header], text_column="body")


def test_wiki_dump_markup_is_stripped(tmp_path):
    dump = tmp_path / "enwiki-test-pages-articles.xml.bz2"
    page = ("<page><title>T</title><ns>0</ns><id>1</id><revision><text>"
            "{{Infobox|a=b}}\n'''Foo''' is a [[bar|small town]] in the north of the land."
            "&lt;ref&gt;x&lt;/ref&gt;"
            "\n== History ==\nIt was founded in 1850 by some settlers.\n* a list item here"
            "</text></revision></page>")
    dump.write_bytes(bz2.compress(f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">{page}</mediawiki>'.encode()))
    sentences, stats = read([dump])
    assert sentences == ["Foo is a small town in the north of the land.",
                         "It was founded in 1850 by some settlers."]
    assert stats.markup_lines >= 1


def test_xml_that_is_not_a_dump_is_a_clear_error(tmp_path):
    path = tmp_path / "notes-pages-articles.xml"
    path.write_text("<notes><note>hello</note></notes>")
    with pytest.raises(UserError, match="not a MediaWiki XML dump"):
        read([path])


def test_wikiextractor_directory(tmp_path):
    folder = tmp_path / "extracted" / "AA"
    folder.mkdir(parents=True)
    (folder / "wiki_00").write_text(f'<doc id="1" url="u" title="T">\nT\n\n{PARAGRAPH}\n</doc>\n')
    (tmp_path / "extracted" / "README.md").write_text("Not corpus text at all, skip this file.\n")
    sentences, _ = read([tmp_path / "extracted"])
    assert len(sentences) == 3


def test_bundled_sample_dump_is_real_wikipedia():
    sentences, stats = read([bundled_wiki_sample()], limit=50)
    assert len(sentences) == 50 and stats.documents >= 1
    assert sentences[0].startswith("Anarchism is a political philosophy")


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read([tmp_path / "nope.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no corpus files"):
        read([tmp_path / "empty"])


def test_wikitext_escapes_and_crlf(tmp_path):
    path = tmp_path / "wiki.valid.raw"
    path.write_bytes(b" = Title = \r\n The 1 @,@ 000 people lived in a well @-@ known town .\r\n")
    assert read([path])[0] == ["The 1,000 people lived in a well-known town ."]


@pytest.mark.parametrize("raw, expected", [
    ("  The   river\tis\nlong.  ", "The river is long."),  # whitespace collapsed and stripped
    ("Cafe\u0301 society", "Caf\u00e9 society"),  # NFC: e + combining acute -> one character
    ("a\x00b\x07c\x1fd\x7fe", "a b c d e"),  # control characters become spaces
    ("a\ufffdb", "a b"),  # the replacement character of invalid UTF-8 too
    ("a well @-@ known town , 1 @,@ 000 and 3 @.@ 5", "a well-known town , 1,000 and 3.5"),  # WikiText
    ("a\u00a0b\u2003c\u2028d", "a b c d"),  # Unicode spaces and line separators
    ("", ""),
])
def test_normalize_sentence(raw, expected):
    assert normalize_sentence(raw) == expected


@pytest.mark.parametrize("paragraph, expected", [
    (PARAGRAPH, ["The river is long.", "It flows into the sea near the old city.",
                 "Many boats sail on it."]),
    ("Dr. Smith went to Washington. He arrived at 5 p.m. on Monday.",
     ["Dr. Smith went to Washington.", "He arrived at 5 p.m. on Monday."]),  # abbreviations
    ("The U.S. economy grew 3.5% in 2019. Prices rose.",
     ["The U.S. economy grew 3.5% in 2019.", "Prices rose."]),
    ("Is it? Yes! It is.", ["Is it?", "Yes!", "It is."]),
    ('He said "Go." Then he left.', ['He said "Go."', "Then he left."]),
    ("", []),
    ("   \n ", []),
])
def test_split_sentences(paragraph, expected):
    assert split_sentences(paragraph) == expected


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=400))
def test_splitter_and_normaliser_never_fail_and_give_clean_stable_sentences(text):
    sentences = [normalize_sentence(s) for s in split_sentences(text)]
    assert all(s == s.strip() and "  " not in s for s in sentences)
    assert all(not c.isspace() for s in sentences for c in s.replace(" ", ""))  # only plain spaces
    assert [normalize_sentence(s) for s in sentences] == sentences  # normalising again changes nothing


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=600))
def test_reader_survives_arbitrary_bytes(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("fuzz") / "x.txt"
    path.write_bytes(blob)
    sentences, stats = read([path], min_words=1)
    assert len(sentences) == stats.sentences_kept
    assert all(s and "\x00" not in s for s in sentences)


# -- scale: exclusion, duplicates across sources, mixing, bounded memory ----------------------------
def test_exclude_drops_every_text_field_of_the_given_files(tmp_path):
    corpus = tmp_path / "wiki.txt"
    corpus.write_text(f"{PARAGRAPH}\nThe old  king died in 1901. A quiet reign ended that year.\n")
    dev = tmp_path / "dev.tsv"  # a GLUE-like file: the sentences sit in a column with no name given
    dev.write_text("sentence1\tsentence2\tlabel\nThe river is long.\tThe old king died in 1901.\t1\n")
    lines = tmp_path / "held.txt"
    lines.write_text("Many boats sail on it. It flows into the sea near the old city.\n")
    sentences, stats = read([corpus], exclude=[str(dev), str(lines)])
    assert sentences == ["A quiet reign ended that year."]
    assert stats.excluded == 4 and stats.sentences_kept == 1


def test_exclude_changes_the_plan_fingerprint_by_content(tmp_path):
    from encoding.plan import corpus_key as _corpus_key

    held = tmp_path / "held.txt"
    held.write_text("The river is long.\n")
    plain = CorpusConfig(sources=["wiki"])
    with_exclude = CorpusConfig(sources=["wiki"], exclude=[str(held)])
    assert "exclude" not in _corpus_key(plain) and "mix_sources" not in _corpus_key(plain)
    before = _corpus_key(with_exclude)
    held.write_text("The river is short.\n")
    assert _corpus_key(with_exclude) != before


def test_duplicates_are_dropped_across_sources(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(PARAGRAPH + "\n")
    b.write_text("Many boats sail on it. A new sentence only here.\n")
    sentences, stats = read([a, b])
    assert sentences[-1] == "A new sentence only here." and len(sentences) == 4
    assert stats.duplicates == 1


def test_mix_sources_interleaves_in_proportion_to_size(tmp_path):
    big, small = tmp_path / "big.txt", tmp_path / "small.txt"
    big.write_text("".join(f"Big source sentence number {i} is here.\n" for i in range(300)))
    small.write_text("".join(f"Small source line number {i} is here.\n" for i in range(100)))
    mixed, _ = read([big, small], mix_sources=True)
    chained, _ = read([big, small])
    assert sorted(mixed) == sorted(chained) and mixed != chained
    first = mixed[:40]  # every prefix samples both, about 3:1
    assert 25 <= sum(s.startswith("Big") for s in first) <= 35
    assert read([big, small], mix_sources=True)[0] == mixed  # deterministic


def test_keyset_is_exact_across_merges():
    keys = KeySet(buffer=4)
    values = [sentence_key(f"sentence {i}") for i in range(50)]
    for value in values[:25]:
        keys.add(value)
    assert len(keys) == 25 and all(v in keys for v in values[:25])
    assert not any(v in keys for v in values[25:])


def test_wiki_is_the_bundled_sample_and_the_hub_needs_a_limit():
    assert resolve_sources(["wiki"]) == [str(bundled_wiki_sample())]
    with pytest.raises(UserError, match="--limit"):
        CorpusConfig(sources=["wiki-hub"])
    CorpusConfig(sources=["wiki-hub"], limit=10)
    with pytest.raises(UserError, match="--mix-sources"):
        CorpusConfig(sources=["wiki-hub", "wiki"], limit=10, mix_sources=True)
