"""More teacher targets from the same text (Tang et al. 2019, "Distilling Task-Specific Knowledge
from BERT into Simple Neural Networks", section 3.3): variants of a sentence made by masking words,
dropping words and sampling an n-gram of it. The teacher encodes each variant like any sentence;
the student then sees how the teacher's vector moves when words are hidden or cut away.
"""

from __future__ import annotations

import numpy as np

P_MASK = 0.1  # a word becomes the mask token
P_DROP = 0.1  # a word is left out (word dropout)
P_NGRAM = 0.25  # the variant is cut down to one n-gram of it
MAX_NGRAM = 5  # n is drawn uniformly from 1..MAX_NGRAM


def augment_sentence(text: str, rng: np.random.Generator, mask_token: str) -> str:
    """One variant of ``text``: words masked with P_MASK or dropped with P_DROP, then, with
    P_NGRAM, only an n-gram (n in 1..5) of what is left. Never empty."""
    words = text.split()
    draws = rng.random(len(words))
    dropped = (draws >= P_MASK) & (draws < P_MASK + P_DROP)
    kept = [mask_token if d < P_MASK else w for w, d, drop in zip(words, draws, dropped) if not drop]
    if not kept:
        kept = [mask_token]
    if rng.random() < P_NGRAM:
        n = int(rng.integers(1, MAX_NGRAM + 1))
        if n < len(kept):
            start = int(rng.integers(0, len(kept) - n + 1))
            kept = kept[start : start + n]
    return " ".join(kept)


def augment_corpus(texts: list[str], variants: int, mask_token: str, seed: int = 0,
                   ) -> tuple[list[str], np.ndarray]:
    """Each sentence followed by ``variants`` variants of it, and every row's source row: the
    row of the sentence it came from (an original is its own source)."""
    rng = np.random.default_rng(seed)
    rows: list[str] = []
    sources: list[int] = []
    for text in texts:
        source = len(rows)
        rows.append(text)
        sources.append(source)
        for _ in range(variants):
            rows.append(augment_sentence(text, rng, mask_token))
            sources.append(source)
    return rows, np.asarray(sources, dtype=np.int64)
