"""`encode --augment N`: teacher-encoded variants that keep their source sentence's id."""

from __future__ import annotations

import numpy as np
import pytest

from cache_tools.format import AUGMENT_FILE, ShardError
from cache_tools.reader import ShardDirectory
from cache_tools.verify import verify_directory
from data.augment import TransferSettings, augment_corpus, augment_sentence, augment_split
from data.corpus import CorpusConfig
from data.glue import GlueSplit
from data.pos import PosVocabulary, textblob_tagger
from encoding import EncodeConfig, run_encode
from student.data import ShardCorpus, heldout_split
from tests.helpers import copy_shards


@pytest.fixture(scope="module")
def augmented(tmp_path_factory, tiny_teacher_dir, tiny_corpus_file):
    out = tmp_path_factory.mktemp("augmented")
    run_encode(EncodeConfig(out=out, corpus=CorpusConfig(sources=[str(tiny_corpus_file)]),
                            teacher=str(tiny_teacher_dir), shard_size=128, progress=False, augment=2))
    return out


def test_variants_mask_drop_and_cut_words_of_their_sentence():
    rng = np.random.default_rng(0)
    text = "the old king built a large church near the river in early spring"
    variants = [augment_sentence(text, rng, "[MASK]") for _ in range(400)]
    words = set(text.split()) | {"[MASK]"}
    assert all(v and set(v.split()) <= words for v in variants)
    assert any("[MASK]" in v for v in variants)
    assert any(len(v.split()) <= 5 for v in variants)  # n-grams
    assert any(len(v.split()) < 12 and "[MASK]" not in v for v in variants)  # dropped words
    assert len(set(variants)) > 100
    rows, sources = augment_corpus(["a b c d", "e f g h"], 3, "[MASK]")
    assert rows[0] == "a b c d" and rows[4] == "e f g h" and sources.tolist() == [0] * 4 + [4] * 4
    first, again = (augment_corpus(["a b c d e"], 9, "[M]", seed=1)[0] for _ in range(2))
    assert first == again


def test_augmented_shards_carry_sources_and_split_by_them(augmented, tiny_sentences):
    shards = ShardDirectory(augmented)
    manifest = shards.manifest
    assert manifest.num_rows == 3 * len(tiny_sentences) and manifest.augment.variants == 2
    texts = [t for i in range(len(manifest.shards)) for t in shards.read(i, with_text=True).texts]
    sources = shards.source_ids()
    assert [texts[s] for s in sources[::3]] == tiny_sentences
    verify_directory(augmented, full=True)
    corpus = ShardCorpus([augmented])
    split = heldout_split(corpus.num_rows, 0.2, 1000, corpus.source_ids)
    held_sources = set(corpus.source_ids[np.setdiff1d(np.arange(corpus.num_rows), split.train)])
    assert held_sources and not held_sources & set(corpus.source_ids[split.train])
    assert (corpus.source_ids[split.validation] == split.validation).all()  # originals only


def test_split_without_augmentation_is_unchanged():
    rows = np.arange(500)
    assert np.array_equal(heldout_split(500, 0.1, 20).validation,
                          heldout_split(500, 0.1, 20, rows).validation)


def test_verify_refuses_corrupt_sources(tmp_path, augmented):
    copy = copy_shards(augmented, tmp_path / "copy")
    sources = np.load(copy / AUGMENT_FILE)
    sources[5] = 4  # a variant pointing at another variant
    np.save(copy / AUGMENT_FILE, sources)
    with pytest.raises(ShardError, match="sha256 mismatch"):
        verify_directory(copy, full=True)
    np.save(copy / AUGMENT_FILE, sources[:-1])
    with pytest.raises(ShardError, match="expected"):
        verify_directory(copy, full=False)


# -- Tang et al.'s rules for the transfer set of task-specific distillation ----------------------
TAGS = {"the": "DT", "a": "DT", "cat": "NN", "dog": "NN", "bird": "NN", "sat": "VBD", "ran": "VBD",
        "on": "IN", "near": "IN", "mat": "NN", "old": "JJ", "red": "JJ"}


class DictTagger:
    """A stand-in tagger: a word's tag from TAGS (the rule, not the tagger, is under test)."""

    name = "dict"

    def tag(self, words):
        return [TAGS[w] for w in words]


def _fits(variant: list[str], original: list[str]) -> bool:
    """Whether ``variant`` is a window of ``original`` with each word kept, masked or replaced by
    a word of the same tag."""
    return any(all(v == "[M]" or TAGS[v] == TAGS[w] for v, w in zip(variant, original[s:]))
               for s in range(len(original) - len(variant) + 1))


def test_tang_rules_mask_replace_by_tag_and_sample_ngrams_deterministically():
    texts = ["the old cat sat on the red mat", "a dog ran near the bird", "the bird sat"]
    vocabulary = PosVocabulary(texts, DictTagger())
    split = GlueSplit("SST-2", "train", texts, None, np.array([0, 1, 0]), ["0", "1", "2"])
    settings = TransferSettings(300, seed=3)
    varied = augment_split(split, settings, "[M]", vocabulary)
    assert varied.text_a == augment_split(split, settings, "[M]", vocabulary).text_a  # seeded
    assert varied.text_a != augment_split(split, TransferSettings(300, seed=4), "[M]",
                                          vocabulary).text_a
    first = [v.split() for v in varied.text_a[:300]]  # the variants of texts[0] (8 words)
    original = texts[0].split()
    assert all(_fits(v, original) for v in first)  # never a word of another part of speech
    whole = [v for v in first if len(v) == len(original)]
    slots = np.array([[a != b for a, b in zip(v, original)] for v in whole])  # (V, 8) changed
    masked = np.mean([[a == "[M]" for a in v] for v in whole])
    replaced = np.mean([[a not in ("[M]", b) for a, b in zip(v, original)] for v in whole])
    assert 0.05 < masked < 0.16  # P_MASK = 0.1
    assert 0.02 < replaced < 0.12  # P_POS = 0.1, less a replacement by the same word
    assert slots.any() and not any(set(v) - set(TAGS) - {"[M]"} for v in first)
    cut = 1 - len(whole) / len(first)  # n-grams of 1..5 words: shorter than the 8 words
    assert 0.15 < cut < 0.35 and all(1 <= len(v) <= 5 for v in first if len(v) < len(original))


def test_pos_vocabulary_draws_words_of_the_tag_by_frequency():
    vocabulary = PosVocabulary(["the cat the dog the cat", "a cat"], DictTagger())
    rng = np.random.default_rng(0)
    draws = [vocabulary.draw("NN", rng) for _ in range(3000)]
    assert set(draws) == {"cat", "dog"} and 0.7 < draws.count("cat") / 3000 < 0.8  # 3 of 4
    assert {vocabulary.draw("DT", rng) for _ in range(200)} == {"the", "a"}
    assert vocabulary.draw("VB", rng) is None  # no training word of that tag: the word is kept
    assert vocabulary.tags("a cat") == ["DT", "NN"]


def test_encode_variants_are_unchanged_without_a_replacer():
    rng = np.random.default_rng(7)
    text = "the old king built a large church near the river in early spring"
    # as encode --augment made them before the replacement rule existed: its shards stay valid
    assert [augment_sentence(text, rng, "[MASK]") for _ in range(6)] == [
        "the old king built a large [MASK] near the river in early spring",
        "the old king built a large church the [MASK] [MASK] early spring",
        "the old king built [MASK] church near the [MASK] in spring",
        "river [MASK]",
        "the old king built a large near the river [MASK] early spring",
        "the old king a large church near in early"]


def test_textblob_tags_the_given_words():
    tagger = textblob_tagger()
    assert tagger.name.startswith("textblob-")
    assert tagger.tag("the dog sat on a mat".split()) == ["DT", "NN", "VBD", "IN", "DT", "NN"]
    assert tagger.tag([]) == []
