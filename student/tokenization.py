"""The teacher's tokenizer, used raw: one truncation rule for stored ids and for new text.

No torch at import time: the torch-free ONNX student (student/onnx.py) uses this module too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from core.errors import UserError

TOKENIZER_FILE = "tokenizer.json"
# Files a Hugging Face tokenizer directory may hold; copied along with a saved student.
TOKENIZER_FILES = (
    TOKENIZER_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """The fast tokenizer in ``directory`` with padding and truncation switched off.

    Saved tokenizer.json files often carry fixed padding / truncation (all-MiniLM-L6-v2 pads to 128);
    the student pads per batch and truncates with :func:`truncate_ids` instead.
    """
    path = Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise UserError(f"{directory}: no {TOKENIZER_FILE} (a fast tokenizer is required)")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


PAD_NAMES = ("[PAD]", "<pad>")  # BERT's; MPNet's and RoBERTa's (id 1 there, not 0)


def pad_token_id(tokenizer: Tokenizer, directory: str | Path | None = None) -> int:
    """The pad id named in tokenizer_config.json, else that of the first of PAD_NAMES in the
    vocabulary, else 0."""
    names = list(PAD_NAMES)
    config = Path(directory) / "tokenizer_config.json" if directory is not None else None
    if config is not None and config.is_file():
        pad = json.loads(config.read_text()).get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        names = [pad, *names] if pad else names
    ids = (tokenizer.token_to_id(name) for name in names)
    return next((int(token_id) for token_id in ids if token_id is not None), 0)


def suffix_length(tokenizer: Tokenizer) -> int:
    """How many special tokens the tokenizer appends after the text (1 for BERT's [SEP] and
    MPNet's </s>; 0 without a post-processor)."""
    mask = tokenizer.encode("a", add_special_tokens=True).special_tokens_mask
    count = 0
    for flag in reversed(mask):
        if not flag:
            break
        count += 1
    return count


def truncate_ids(ids: Sequence[int] | np.ndarray, max_length: int, suffix: int):
    """Keep the first ``max_length - suffix`` ids and the ``suffix`` closing special tokens.

    This is what Hugging Face truncation gives for a single sentence, so stored (teacher-truncated)
    ids cut to the student's max_length equal a fresh tokenization truncated to it.
    """
    if len(ids) <= max_length:
        return ids
    if suffix == 0:
        return ids[:max_length]
    head = ids[: max_length - suffix]
    tail = ids[len(ids) - suffix :]
    if isinstance(ids, np.ndarray):
        return np.concatenate([head, tail])
    return list(head) + list(tail)
