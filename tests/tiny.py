"""Tiny, fully offline test assets: a random BERT teacher and small corpora."""

from __future__ import annotations

import random
import string
from pathlib import Path

WORDS = (
    "the a an of to in and is was for on with as by at from that this it he she they we "
    "city river music film team war king law book game school house water light night year "
    "red green old new small large early late first last good great long short "
    "played wrote built won lost found made began ended moved lived died opened named "
    "england france london paris county village album song season station church island"
).split()


def tiny_corpus(n: int = 200, seed: int = 0) -> list[str]:
    """``n`` distinct, varied, sentence-like strings."""
    rng = random.Random(seed)
    sentences: list[str] = []
    seen: set[str] = set()
    while len(sentences) < n:
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 18))]
        text = " ".join(words).capitalize() + "."
        if text not in seen:
            seen.add(text)
            sentences.append(text)
    return sentences


def build_tiny_teacher(directory: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Save a randomly initialised BERT and a WordPiece tokenizer to ``directory``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "'", "-"]
    pieces += WORDS + list(string.ascii_lowercase) + [f"##{c}" for c in string.ascii_lowercase]
    pieces += list(string.digits) + [f"##{d}" for d in string.digits]
    vocab = {piece: index for index, piece in enumerate(dict.fromkeys(pieces))}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=64)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=64,
    )
    BertModel(config).eval().save_pretrained(directory)
    return directory
