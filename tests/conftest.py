from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import (
    SHARED_DATA,
    build_tiny_mpnet,
    build_tiny_teacher,
    save_random_student,
    tiny_corpus,
)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models run as fast on one thread, and are immune to a busy shared CPU's contention."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def onnx_teacher_cache(tmp_path_factory):
    """The teachers' ONNX graphs (core.teacher_onnx) go to a session folder, not ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SRA_CACHE", str(tmp_path_factory.mktemp("sra_cache")))
        yield


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT (hidden 32) with its tokenizer, saved once per session."""
    return build_tiny_teacher(tmp_path_factory.mktemp("tiny_teacher"))


@pytest.fixture(scope="session")
def tiny_mpnet_dir(tmp_path_factory) -> Path:
    """A random 2-layer MPNet (hidden 32) laid out like all-mpnet-base-v2 (pad id 1, no token
    types, positions offset by the pad id, sentence-transformers files), saved once per session."""
    return build_tiny_mpnet(tmp_path_factory.mktemp("tiny_mpnet"))


@pytest.fixture(scope="session")
def tiny_student_dir(tiny_teacher_dir, tmp_path_factory) -> Path:
    """A randomly initialised (seeded) tiny BiLSTM saved through the student API, tokenizer of the
    teacher."""
    return save_random_student(tmp_path_factory.mktemp("tiny_student"), tiny_teacher_dir)


@pytest.fixture(scope="session")
def tiny_sentences() -> list[str]:
    return tiny_corpus(200)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_corpus_file(tmp_path_factory, tiny_sentences) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n".join(tiny_sentences) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory, tiny_teacher_dir, tiny_corpus_file) -> Path:
    """A complete shard directory: the 200 tiny sentences encoded by the tiny teacher
    (4 Arrow shards of 64 rows or fewer, float16). Treat it as read-only."""
    from data.corpus import CorpusConfig
    from encoding import EncodeConfig, run_encode

    out = tmp_path_factory.mktemp("tiny_shards")
    run_encode(EncodeConfig(out=out, corpus=CorpusConfig(sources=[str(tiny_corpus_file)]),
                            teacher=str(tiny_teacher_dir), shard_size=64, progress=False))
    return out
