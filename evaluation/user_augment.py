"""Data augmentation for task-specific distillation (Tang et al. 2019, "Distilling Task-Specific
Knowledge from BERT into Simple Neural Networks", section 3.3).

Each synthetic example starts from a training text: every word is replaced by the mask token with
probability ``p_mask``; then, with probability ``p_ngram``, only a random n-gram (n uniform in
1..5) of it is kept. The paper's third rule, POS-guided word replacement, needs a tagger and is
left out. The copies carry no labels of their own: the teacher's outputs label them.
"""

from __future__ import annotations

import numpy as np

from data.glue import GlueSplit

P_MASK = 0.1
P_NGRAM = 0.25
MAX_NGRAM = 5
MASK_TOKEN = "[MASK]"


def augment_text(text: str, rng: np.random.Generator, mask_token: str = MASK_TOKEN,
                 p_mask: float = P_MASK, p_ngram: float = P_NGRAM) -> str:
    words = text.split()
    if not words:
        return text
    words = [mask_token if rng.random() < p_mask else word for word in words]
    if rng.random() < p_ngram:
        n = int(rng.integers(1, MAX_NGRAM + 1))
        if n < len(words):
            start = int(rng.integers(0, len(words) - n + 1))
            words = words[start : start + n]
    return " ".join(words)


def augment_split(split: GlueSplit, copies: int, seed: int, mask_token: str = MASK_TOKEN) -> GlueSplit:
    """``copies`` synthetic examples of every row (each side of a pair on its own), unlabelled;
    row ``i * copies + k`` is copy k of row i."""
    rng = np.random.default_rng(seed)
    text_a, text_b, index = [], [] if split.text_b is not None else None, []
    for row, text in enumerate(split.text_a):
        for copy in range(copies):
            text_a.append(augment_text(text, rng, mask_token))
            if text_b is not None:
                text_b.append(augment_text(split.text_b[row], rng, mask_token))
            index.append(f"{split.index[row]}-aug{copy}")
    return GlueSplit(split.task, f"{split.split}-augmented", text_a, text_b, None, index)
