"""Integration: the bundled all-MiniLM-L6-v2 teacher on a few dozen real Wikipedia sentences.

It loads the real teacher twice (30 s on 2 cores): ``slow``. The default run covers encode with
the tiny random BERT (tests/test_encode.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from cache_tools.reader import ShardDirectory
from core.teacher import default_teacher
from data.corpus import CorpusConfig
from encoding import EncodeConfig, run_encode


@pytest.mark.slow
def test_bundled_teacher_shards_match_sentence_transformers(tmp_path):
    out = tmp_path / "shards"
    result = run_encode(EncodeConfig(out=out, corpus=CorpusConfig(sources=["wiki-sample"], limit=40),
                                     shard_size=16, progress=False))
    manifest = result.manifest
    assert (manifest.num_rows, manifest.dim, len(manifest.shards)) == (40, 384, 3)
    assert manifest.pooling == "mean" and manifest.normalize and manifest.max_length == 256
    shards = ShardDirectory(out)
    data = [shards.read(i, with_text=True) for i in range(3)]
    texts = [t for d in data for t in d.texts]
    vectors = np.concatenate([d.vectors for d in data]).astype(np.float32)

    reference = SentenceTransformer(default_teacher(), device="cpu").encode(texts, batch_size=16)
    cosine = (vectors * reference).sum(1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() > 0.999
    assert shards.load_embeddings().shape == (30522, 384)
