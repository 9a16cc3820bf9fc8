"""Variants of a sentence for distillation (Tang et al. 2019, "Distilling Task-Specific Knowledge
from BERT into Simple Neural Networks", section 3.3): words masked, words dropped or replaced by
a word of the same part of speech, and an n-gram of the sentence sampled.

Two users, one set of rules (:func:`augment_sentence`): ``encode --augment``
(:func:`augment_corpus`: words masked or dropped; the student sees how the teacher's vector moves
when words are hidden or cut away) and the transfer set of task-specific distillation
(:func:`augment_split`, Tang's rules: masking, POS-guided replacement, n-gram sampling; the
variants are labelled by the teacher alone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.errors import UserError
from data.glue import GlueSplit
from data.pos import TEXTBLOB, PosVocabulary, get_tagger

P_MASK = 0.1  # a word becomes the mask token
P_DROP = 0.1  # a word is left out (word dropout), or, given a replacer, replaced (Tang's p_pos)
P_NGRAM = 0.25  # the variant is cut down to one n-gram of it
MAX_NGRAM = 5  # n is drawn uniformly from 1..MAX_NGRAM

# (word position, rng) -> the word that replaces it, None to keep it (a word of no known tag)
Replacer = Callable[[int, np.random.Generator], "str | None"]


def augment_sentence(text: str, rng: np.random.Generator, mask_token: str,
                     replace: Replacer | None = None) -> str:
    """One variant of ``text``: each word masked with P_MASK, else with P_DROP dropped (no
    ``replace``) or replaced by ``replace``; then, with P_NGRAM, only an n-gram (n in 1..5) of
    what is left. Never empty. Without ``replace`` the draws are encode's as they always were."""
    words = text.split()
    draws = rng.random(len(words))
    second = (draws >= P_MASK) & (draws < P_MASK + P_DROP)
    if replace is None:
        kept = [mask_token if d < P_MASK else w for w, d, drop in zip(words, draws, second) if not drop]
    else:  # in word order, so the replacements' draws are seeded like the rest
        kept = [mask_token if d < P_MASK else ((replace(i, rng) or w) if swap else w)
                for i, (w, d, swap) in enumerate(zip(words, draws, second))]
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


# -- the transfer set of task-specific distillation --------------------------------------------
AUTO = "auto"  # --augment auto: as many variants as the training set's size calls for
# The transfer set `auto` aims at, in rows (training rows and their variants), and its most
# variants a row. Measured (benchmarks/RESULTS.md, issue 25): 16 variants lifted student+kd by
# 5.3 MCC on CoLA (8,551 rows, 145k transfer rows) and by 1.7 points on MRPC (3,668 rows, 62k);
# 4 lifted it on SST-2 (67,349 rows, 337k) by more than a point. The size gives each of them
# the variants measured; a training set of 350k rows or more has enough rows of its own.
AUTO_TRANSFER_ROWS = 350_000
AUTO_MAX_VARIANTS = 16


def parse_augment(value: int | str) -> int | str:
    """``--augment``'s value checked once: ``auto`` or a count of variants (0: none)."""
    if value == AUTO:
        return AUTO
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise UserError(f"--augment must be a number of variants or {AUTO!r}, got {value!r}") from None
    if count < 0:
        raise UserError(f"--augment must be 0 or more, got {count}")
    return count


def auto_variants(rows: int) -> int:
    """``--augment auto``'s variants a row for ``rows`` training rows: a transfer set of about
    AUTO_TRANSFER_ROWS rows, at most AUTO_MAX_VARIANTS variants a row, none for a large set."""
    return max(0, min(AUTO_MAX_VARIANTS, AUTO_TRANSFER_ROWS // max(rows, 1) - 1))


def transfer_settings(augment: int | str, rows: int) -> TransferSettings:
    """The transfer set of a training set of ``rows`` rows under ``--augment``."""
    augment = parse_augment(augment)
    return TransferSettings(auto_variants(rows) if augment == AUTO else augment)


def transfer_passes(epochs: int, rows: int, transfer_rows: int) -> int:
    """Passes over a transfer set of ``transfer_rows`` rows made from ``rows`` training rows:
    the steps of ``epochs`` passes over the training rows, and at least one pass (with 4 or
    more variants a row and 3 epochs or fewer: one pass, as the transfer sets were measured)."""
    return max(1, round(epochs * rows / max(transfer_rows, 1)))


@dataclass(frozen=True)
class TransferSettings:
    """``--augment N``: N variants of every training row, labelled by the teacher's logits
    alone. ``variants=0``: no transfer set, the training rows only."""

    variants: int = 0
    seed: int = 0
    tagger: str = TEXTBLOB  # the POS tagger of the replacement rule (data.pos)

    def __post_init__(self) -> None:
        if self.variants < 0:
            raise UserError(f"--augment must be 0 or more, got {self.variants}")

    def identity(self) -> dict | None:
        """What makes the variants: in the kd cache's key and a +kd run's fingerprint. None
        without variants, so that runs without a transfer set keep their fingerprints."""
        if not self.variants:
            return None
        return {"variants": self.variants, "seed": self.seed, "tagger": self.tagger,
                "p_mask": P_MASK, "p_pos": P_DROP, "p_ngram": P_NGRAM, "max_ngram": MAX_NGRAM}


def variant_id(row_id: str, copy: int) -> str:
    """The row id of variant ``copy`` (0-based) of the row ``row_id``."""
    return f"{row_id}-aug{copy}"


def augment_split(split: GlueSplit, settings: TransferSettings, mask_token: str,
                  vocabulary: PosVocabulary | None = None) -> GlueSplit:
    """``settings.variants`` variants of every row by Tang's rules, unlabelled; row
    ``i * variants + k`` is variant k of row i, and a pair's variant has both sides varied.
    ``vocabulary``: the training words by tag (default: ``split``'s, tagged by the settings'
    tagger)."""
    if vocabulary is None:
        tagger = get_tagger(settings.tagger)
        vocabulary = PosVocabulary(split.text_a + (split.text_b or []), tagger)
    rng = np.random.default_rng(settings.seed)
    sides = [split.text_a] if split.text_b is None else [split.text_a, split.text_b]
    varied: list[list[str]] = [[] for _ in sides]
    index = []
    for row in range(len(split)):
        for copy in range(settings.variants):
            for side, out in zip(sides, varied, strict=True):
                out.append(augment_sentence(side[row], rng, mask_token,
                                            _pos_replacer(vocabulary, side[row])))
            index.append(variant_id(split.index[row], copy))
    return GlueSplit(split.task, f"{split.split}-augmented", varied[0],
                     varied[1] if len(varied) > 1 else None, None, index)


def _pos_replacer(vocabulary: PosVocabulary, text: str) -> Replacer:
    tags = vocabulary.tags(text)
    return lambda position, rng: vocabulary.draw(tags[position], rng)
