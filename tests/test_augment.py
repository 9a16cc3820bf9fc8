"""`encode --augment N`: teacher-encoded variants that keep their source sentence's id."""

from __future__ import annotations

import numpy as np
import pytest

from cache_tools.format import AUGMENT_FILE, ShardError
from cache_tools.reader import ShardDirectory
from cache_tools.verify import verify_directory
from data.augment import augment_corpus, augment_sentence
from data.corpus import CorpusConfig
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
