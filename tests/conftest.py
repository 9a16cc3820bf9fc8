from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny import build_tiny_teacher, tiny_corpus

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT (hidden 32) with its tokenizer, saved once per session."""
    return build_tiny_teacher(tmp_path_factory.mktemp("tiny_teacher"))


@pytest.fixture(scope="session")
def tiny_sentences() -> list[str]:
    return tiny_corpus(200)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
