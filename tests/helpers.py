"""What the tests share: tiny offline assets, file and shard edits, the CLI run in-process, runs
killed with SIGKILL. Fixtures live in conftest.py, which builds on these. Heavy imports (torch,
transformers, the pipeline) happen inside the functions, so importing this module stays cheap."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import string
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GLUE_FIXTURES = ROOT / "tests" / "fixtures" / "glue"
USER_FIXTURES = ROOT / "tests" / "fixtures" / "user"
SHARED_DATA = ROOT.parent / "shared" / "data"
KILL_TIMEOUT = 120  # seconds a forked or child run may take before the test gives up on it

# -- tiny offline assets: a random BERT teacher, a random student, small corpora -------------------
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


def build_tiny_mpnet(directory: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Save a randomly initialised MPNet laid out as sentence-transformers/all-mpnet-base-v2 is:
    ``<s> <pad> </s> <unk>`` first (so the pad id is 1, not 0), ``<mask>`` last, no token types,
    positions offset by the pad id (``max_position_embeddings`` = max length + 2), and the
    sentence-transformers files that name its pooling (mean), normalisation and max length."""
    import torch
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]", ".", ",", "'", "-"]
    pieces += WORDS + list(string.ascii_lowercase) + [f"##{c}" for c in string.ascii_lowercase]
    pieces += list(string.digits) + [f"##{d}" for d in string.digits] + ["<mask>"]
    vocab = {piece: index for index, piece in enumerate(dict.fromkeys(pieces))}
    tokenizer = MPNetTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=62)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = MPNetConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=4, intermediate_size=hidden * 2,
                         max_position_embeddings=64)
    MPNetModel(config).eval().save_pretrained(directory)
    write_sentence_transformers_files(directory, hidden, max_seq_length=48)
    return directory


def write_sentence_transformers_files(directory: Path, dim: int, max_seq_length: int,
                                      pooling: str = "mean", normalize: bool = True) -> None:
    """modules.json, 1_Pooling/config.json (and 2_Normalize), sentence_bert_config.json: what
    the teacher reads its pooling, normalisation and max length from."""
    modules = [{"idx": 0, "name": "0", "path": "",
                "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir(exist_ok=True)
    (directory / "1_Pooling").mkdir(exist_ok=True)
    modes = {f"pooling_mode_{mode}": mode_name == pooling for mode, mode_name in
             (("cls_token", "cls"), ("mean_tokens", "mean"), ("max_tokens", "max"))}
    write_file(directory, "1_Pooling/config.json",
               json.dumps({"word_embedding_dimension": dim, **modes}))
    write_file(directory, "modules.json", json.dumps(modules))
    write_file(directory, "sentence_bert_config.json",
               json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}))


def random_student(tokenizer_dir: Path, seed: int = 0, **options):
    """A seeded, randomly initialised ``SentenceStudent`` with the tokenizer in ``tokenizer_dir``;
    ``options`` override the tiny sizes (output, embedding and hidden 16, max_length 32)."""
    import torch

    from student import SentenceStudent, StudentConfig, StudentEncoder
    from student.tokenization import load_tokenizer, pad_token_id

    tokenizer = load_tokenizer(tokenizer_dir)
    settings = dict(output_dim=16, embed_dim=16, hidden=16, max_length=32) | options
    config = StudentConfig(vocab_size=tokenizer.get_vocab_size(),
                           pad_token_id=pad_token_id(tokenizer, tokenizer_dir), **settings)
    torch.manual_seed(seed)
    return SentenceStudent(StudentEncoder(config).eval(), tokenizer, config)


def train_tiny_student(shards: Path, out: Path) -> Path:
    """A tiny student (hidden 16) trained for 6 steps of 32 on ``shards`` into ``out``."""
    from student import TrainConfig
    from student.train import run_train_student

    run_train_student(TrainConfig(shards=[str(shards)], out=str(out), hidden=16, batch_size=32,
                                  heldout=0.1, max_steps=6, progress=False))
    return out


def save_random_student(directory: Path, tokenizer_dir: Path, seed: int = 0, **options) -> Path:
    """:func:`random_student` saved through the student API to ``directory``."""
    random_student(tokenizer_dir, seed, **options).save(directory)
    return directory


# -- files and shard directories ------------------------------------------------------------------
def write_file(folder: Path, name: str, content: str | bytes) -> Path:
    """``folder/name`` holding ``content`` (text is written as UTF-8, bytes as they are)."""
    path = Path(folder) / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def edit_json(path: Path, edit: Callable[[dict], object]) -> None:
    """Apply ``edit`` to the JSON object stored in ``path`` (in place) and write it back."""
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def copy_shards(source: Path, target: Path) -> Path:
    """A private copy of a shard directory (or of any directory), free to damage."""
    return Path(shutil.copytree(source, target))


def rewrite_shard(directory: Path, index: int, mutate: Callable | None = None, dtype: str | None = None,
                  rows_per_batch: int | None = None) -> Path:
    """Rewrite shard ``index`` of ``directory`` and register its new size and sha256 in the manifest,
    so that only what is inside the file can tell: ``mutate(ids, vectors)`` edits the rows in place
    (vectors as float32), ``dtype`` stores the vectors in another dtype, ``rows_per_batch`` writes
    the Arrow file in record batches of that many rows (encode writes batches of 8192)."""
    import pyarrow as pa

    from cache_tools.manifest import read_manifest, write_manifest
    from cache_tools.reader import read_shard, shard_metadata
    from cache_tools.writer import write_shard
    from core.io import sha256_file

    manifest = read_manifest(directory)
    info = manifest.shards[index]
    path = directory / info.name
    data = read_shard(path, with_text=True)
    ids, vectors = data.ids.copy(), np.array(data.vectors, dtype=np.float32)
    if mutate is not None:
        mutate(ids, vectors)
    tokens = [data.tokens(i) for i in range(len(data))]
    write_shard(path, ids, data.texts, tokens, vectors, dtype or manifest.dtype, shard_metadata(path))
    if rows_per_batch is not None:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        rebatched = path.with_name(f"{path.name}.rebatched")  # never truncate a file still mapped
        with pa.OSFile(str(rebatched), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=rows_per_batch)
        os.replace(rebatched, path)
    info.num_bytes, info.sha256 = path.stat().st_size, sha256_file(path)
    manifest.num_bytes = sum(s.num_bytes for s in manifest.shards)
    write_manifest(directory, manifest)
    return path


def read_rows(directory: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every row of a shard directory in shard order: (ids, vectors as float32, texts)."""
    from cache_tools.reader import ShardDirectory

    shards = ShardDirectory(directory)
    data = [shards.read(i, with_text=True) for i in range(len(shards.manifest.shards))]
    return (np.concatenate([d.ids for d in data]),
            np.concatenate([np.asarray(d.vectors, dtype=np.float32) for d in data]),
            [t for d in data for t in d.texts])


# -- the command line -----------------------------------------------------------------------------
def pipeline_main(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    """Run ``pipeline ARGS`` in-process through ``pipeline.cli.main``: (exit code, stdout, stderr)."""
    from pipeline.cli import main

    monkeypatch.setattr(sys, "argv", ["pipeline", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str, after_log: bool = False) -> None:
    """Exit 2, a single ``error: ...`` line on stderr that contains every fragment, no traceback
    (``after_log``: progress lines before it are allowed)."""
    assert code == 2, err
    lines = err.strip().splitlines()[-1 if after_log else 0:]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(f in lines[0] for f in fragments), err
    assert "Traceback" not in err


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a child ``python``: offline, one OpenMP thread."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


def blocked_imports(*packages: str) -> str:
    """Python source to put first in a child process: importing any of ``packages`` (or a module
    inside them) raises ImportError from then on."""
    return f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {packages!r}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
"""


# -- runs killed with SIGKILL at named points -----------------------------------------------------
def kill_self_at(function_owner, name: str, pattern: str, nth: int, after: bool) -> None:
    """Wrap ``function_owner.name`` so that its ``nth`` call whose first path argument (or, for
    os.replace/os.rename, destination) matches ``pattern`` is followed or preceded by SIGKILL."""
    real = getattr(function_owner, name)
    calls = []

    def wrapper(*args, **kwargs):
        target = os.fspath(args[1] if function_owner is os else args[0]) if args else ""
        hit = isinstance(target, str) and re.search(pattern, target)
        if hit:
            calls.append(target)
        if hit and len(calls) == nth and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kwargs)
        if hit and len(calls) == nth and after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(function_owner, name, wrapper)


def die_at_call(owner, name: str, nth: int) -> None:
    """SIGKILL this process at the ``nth`` call of ``owner.name``."""
    real, calls = getattr(owner, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(owner, name, wrapper)


def _child(argv: list[str], fault) -> None:
    """Body of a forked `pipeline` process: install the fault, then run the real entry point.
    One torch thread: OpenMP's pool does not survive a fork (and every run here uses one thread,
    so the vectors compared are computed alike)."""
    import torch

    from pipeline.cli import main

    torch.set_num_threads(1)
    if fault is not None:
        fault()
    sys.argv = ["pipeline", *argv]
    main()


def start_forked(argv: list[str], fault: Callable[[], None] | None = None) -> multiprocessing.Process:
    """`pipeline ARGV` started in a forked process, ``fault()`` installed there first."""
    process = multiprocessing.get_context("fork").Process(target=_child, args=(argv, fault))
    process.start()
    return process


def run_forked(argv: list[str], fault: Callable[[], None] | None = None) -> int:
    """Exit code of `pipeline ARGV` run in a forked process (negative: killed by that signal)."""
    process = start_forked(argv, fault)
    process.join(KILL_TIMEOUT)
    if process.exitcode is None:
        process.kill()
        pytest.fail("the forked run hung")
    return process.exitcode


class Stop(BaseException):
    """What a killed process is to the code: nothing catches it."""


class StoppedFinetune:
    """A stand-in for ``evaluation.finetune.finetune`` (monkeypatch it in) that records each grid
    point's ``settings.<field>`` in ``trained`` and, while ``armed``, raises Stop at the point
    where that field is ``at``: a run killed inside its learning-rate grid."""

    def __init__(self, field: str, at: float):
        from evaluation import finetune

        self.real, self.field, self.at = finetune.finetune, field, at
        self.trained: list[float] = []
        self.armed = True

    def __call__(self, model, task, train, dev, settings, *args, **kwargs):
        value = getattr(settings, self.field)
        self.trained.append(value)
        if self.armed and value == self.at:
            raise Stop
        return self.real(model, task, train, dev, settings, *args, **kwargs)
