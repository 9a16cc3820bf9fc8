"""What a stage-one run takes (``EncodeConfig``) and what it reports (``EncodeResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cache_tools.format import DTYPES, FORMATS
from cache_tools.manifest import Manifest
from core.device import PRECISIONS
from core.errors import UserError
from core.teacher import LAST_LAYER
from core.teacher_onnx import check_backend
from data.corpus import CorpusConfig
from encoding.plan import drop_counts


@dataclass
class EncodeConfig:
    """Everything `pipeline encode` needs."""

    out: Path
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    teacher: str | None = None
    pooling: str | None = None
    layer: int = LAST_LAYER
    max_length: int | None = None
    format: str = "arrow"
    shard_size: int = 20_000
    dtype: str = "float16"
    batch_size: int = 64
    # token budget of a batch; None: the teacher's default for the device (512 on CPU, where small
    # batches run faster per token, 16384 on GPU; benchmarks/encode_throughput.py)
    max_tokens: int | None = None
    device: str = "auto"
    # what runs the teacher: "auto" = onnx on CPU (same vectors, faster), torch on CUDA
    teacher_backend: str = "auto"
    # the teacher's arithmetic: "auto" = fp32 on CPU, bf16 (or fp16) on CUDA; "bf16" on CPU is
    # faster where the CPU has bf16 instructions, and its vectors are a space of their own
    teacher_precision: str = "auto"
    overwrite: bool = False
    progress: bool = True
    command: str = ""
    # Out-of-domain sentences (e.g. GLUE dev sentences) encoded into OUT/ood, never trained on:
    # train-student reports the student's cosine to the teacher on them.
    ood: list[str] = field(default_factory=list)
    ood_text_column: str | None = None
    ood_limit: int = 2000
    is_ood: bool = False  # set internally: this run writes the OUT/ood of another run
    # N teacher-encoded variants of every sentence (masked, word-dropped, n-gram sampled words).
    augment: int = 0

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.format not in FORMATS:
            raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.augment < 0:
            raise UserError(f"--augment must be 0 or more, got {self.augment}")
        check_backend(self.teacher_backend)
        if self.teacher_precision not in PRECISIONS:
            raise UserError(f"--teacher-precision must be one of {', '.join(PRECISIONS)}, "
                            f"got {self.teacher_precision!r}")
        for name in ("shard_size", "batch_size", "max_tokens", "ood_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")


@dataclass
class EncodeResult:
    manifest: Manifest
    encoded_rows: int
    encoded_tokens: int
    encode_seconds: float  # the teacher loop alone
    total_seconds: float
    rank: int = 0

    def summary(self) -> str:
        m = self.manifest
        seconds = max(self.encode_seconds, 1e-9)
        return (
            f"{m.num_rows} sentences ({m.num_tokens} tokens) in {len(m.shards)} shards, "
            f"{m.num_bytes / 1e6:.1f} MB; this run encoded {self.encoded_rows} sentences at "
            f"{self.encoded_rows / seconds:.1f} sent/s, {self.encoded_tokens / seconds:.0f} tok/s "
            f"({self.total_seconds:.1f}s in all); dropped: "
            f"{drop_counts(m.corpus.stats) or 'nothing'}"
        )
