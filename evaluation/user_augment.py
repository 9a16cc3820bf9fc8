"""Data augmentation for task-specific distillation (Tang et al. 2019, "Distilling Task-Specific
Knowledge from BERT into Simple Neural Networks", section 3.3).

Each synthetic example is a variant of a training text made by ``data.augment.augment_sentence``
(the same rules as `encode --augment`: words masked or dropped, then with some probability only an
n-gram kept). The paper's third rule, POS-guided word replacement, needs a tagger and is left out.
The copies carry no labels of their own: the teacher's outputs label them.
"""

from __future__ import annotations

import numpy as np

from data.augment import augment_sentence
from data.glue import GlueSplit

MASK_TOKEN = "[MASK]"


def augment_split(split: GlueSplit, copies: int, seed: int, mask_token: str = MASK_TOKEN) -> GlueSplit:
    """``copies`` synthetic examples of every row (each side of a pair on its own), unlabelled;
    row ``i * copies + k`` is copy k of row i."""
    rng = np.random.default_rng(seed)
    text_a, text_b, index = [], [] if split.text_b is not None else None, []
    for row, text in enumerate(split.text_a):
        for copy in range(copies):
            text_a.append(augment_sentence(text, rng, mask_token))
            if text_b is not None:
                text_b.append(augment_sentence(split.text_b[row], rng, mask_token))
            index.append(f"{split.index[row]}-aug{copy}")
    return GlueSplit(split.task, f"{split.split}-augmented", text_a, text_b, None, index)
