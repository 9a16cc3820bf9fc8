"""Part-of-speech tags for the POS-guided word replacement of Tang et al. (2019), section 3.3.

A :class:`Tagger` tags the whitespace words of a sentence (the words the augmentation rules work
on), one tag per word. The one shipped is TextBlob's English tagger (:func:`textblob_tagger`):
pattern's lexicon and Brill rules, bundled in the ``textblob`` wheel, so it needs no download at
run time (NLTK's perceptron tagger and spaCy's English models do). Its tags are the Penn
Treebank's, which keep inflection (VBD, VBZ...), so a replacement word fits its slot better than
a coarse class would. A tagger's ``name`` (with its package version) enters the transfer set's
identity: another tagger gives other variants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Protocol

import numpy as np

from core.errors import UserError

TEXTBLOB = "textblob"


class Tagger(Protocol):
    name: str  # what the transfer set's identity records

    def tag(self, words: Sequence[str]) -> list[str]:
        """One tag per word, in order."""
        ...


@dataclass(frozen=True)
class TextBlobTagger:
    name: str

    def tag(self, words: Sequence[str]) -> list[str]:
        from textblob.en import tag

        if not words:
            return []
        # tokenize=False: one tag per given word, so tags line up with the rules' words
        tagged = tag(" ".join(words), tokenize=False)
        if len(tagged) != len(words):  # the tagger split a word after all: keep words untagged
            return ["" for _ in words]
        return [t for _, t in tagged]


def textblob_tagger() -> TextBlobTagger:
    """TextBlob's English tagger; a UserError naming the install when ``textblob`` is missing."""
    try:
        import textblob.en  # noqa: F401
    except ImportError:
        raise UserError("--augment's POS-guided word replacement needs TextBlob: "
                        "pip install 'textblob>=0.18'") from None
    return TextBlobTagger(f"{TEXTBLOB}-{version(TEXTBLOB)}")


def get_tagger(name: str) -> Tagger:
    """The tagger a transfer set names (only TextBlob's for now)."""
    if name != TEXTBLOB:
        raise UserError(f"unknown POS tagger {name!r} (available: {TEXTBLOB})")
    return textblob_tagger()


class PosVocabulary:
    """The training set's words by tag, with their counts: a replacement is drawn from the
    unigram distribution of the words of the same tag (Tang et al.: "re-normalized by the POS
    tag"), so variants keep the training set's word frequencies. Every sentence is tagged once;
    ``tags`` hands its tags to the rules."""

    def __init__(self, texts: Sequence[str], tagger: Tagger):
        self._tags: dict[str, list[str]] = {}
        counts: dict[str, dict[str, int]] = {}
        for text in texts:
            words = text.split()
            tags = self.tags(text, tagger)
            for word, tag in zip(words, tags, strict=True):
                if tag:
                    counts.setdefault(tag, {})
                    counts[tag][word] = counts[tag].get(word, 0) + 1
        # sorted: the same table, and so the same draws, whatever order texts came in
        self._words = {tag: sorted(words) for tag, words in counts.items()}
        self._cumulative = {tag: np.cumsum([counts[tag][w] for w in self._words[tag]])
                            for tag in self._words}

    def tags(self, text: str, tagger: Tagger | None = None) -> list[str]:
        """The tags of ``text``'s words (tagged on first sight; a tagger is needed then)."""
        if text not in self._tags:
            if tagger is None:
                raise KeyError(text)
            self._tags[text] = tagger.tag(text.split())
        return self._tags[text]

    def draw(self, tag: str, rng: np.random.Generator) -> str | None:
        """A training word of ``tag`` drawn by its frequency; None for an unknown tag."""
        cumulative = self._cumulative.get(tag)
        if cumulative is None:
            return None
        position = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        return self._words[tag][min(position, len(cumulative) - 1)]
