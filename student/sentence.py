"""SentenceStudent: a trained encoder with its tokenizer; save, load, encode."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from core.batching import pad_batch
from core.device import resolve_device
from core.errors import UserError
from core.io import atomic_output, atomic_write_json
from student.batching import encode_sorted, token_ids
from student.config import StudentConfig
from student.directory import TOKENIZER_NAME, WEIGHTS_NAME, StudentDirectory
from student.model import StudentEncoder
from student.tokenization import load_tokenizer, suffix_length

# sentence-transformers finds the module class through modules.json; see student/st_module.py.
ST_MODULE_CLASS = "student.st_module.SRAStudentModule"


class SentenceStudent:
    """The student encoder plus the teacher's tokenizer: text in, sentence vectors out."""

    def __init__(self, model: StudentEncoder, tokenizer: Tokenizer, config: StudentConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        # A tokenizer handed in from elsewhere may still pad / truncate on its own.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._suffix = suffix_length(tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device | None) -> SentenceStudent:
        self.model.to(resolve_device(device))
        return self

    # -- text -> ids ------------------------------------------------------------------------
    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with special tokens, truncated to ``config.max_length`` like training data."""
        return token_ids(self.tokenizer, texts, self.config.max_length, self._suffix)

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids (B, T) and lengths (B,), both int64 on the CPU."""
        return pad_batch(self.token_ids(texts), self.config.pad_token_id)

    # -- encoding ---------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str] | str,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        """Sentence vectors (N, output_dim) float32 in the order of ``texts``.

        Batches are formed over length-sorted sentences (little padding) and put back in order.
        """
        if isinstance(texts, str):
            texts = [texts]
        if device is not None:
            self.to(device)
        was_training = self.model.training
        self.model.eval()

        def forward(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
            output = self.model(torch.from_numpy(ids).to(self.device), torch.from_numpy(lengths))
            return output.float().cpu().numpy()

        try:
            return encode_sorted(self.token_ids(texts), forward, self.config.output_dim,
                                 self.config.pad_token_id, batch_size, show_progress_bar)
        finally:
            self.model.train(was_training)

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path, half: bool = False) -> None:
        """config.json + model.safetensors + tokenizer.json + sentence-transformers files;
        ``half`` stores the weights in float16 (half the size; loading casts them back)."""
        directory = Path(directory)
        self.save_module(directory, half)
        modules = [{"idx": 0, "name": "0", "path": "", "type": ST_MODULE_CLASS}]
        atomic_write_json(directory / "modules.json", modules)
        st_config = {"model_type": "SentenceTransformer", "prompts": {},
                     "default_prompt_name": None, "similarity_fn_name": "cosine"}
        atomic_write_json(directory / "config_sentence_transformers.json", st_config)

    def save_module(self, directory: str | Path, half: bool = False) -> None:
        """The student's own files (what the sentence-transformers module saves too)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory)
        dtype = torch.float16 if half else None
        state = {k: v.detach().cpu().to(dtype=dtype or v.dtype).contiguous()
                 for k, v in self.model.state_dict().items()}
        with atomic_output(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp))
        with atomic_output(directory / TOKENIZER_NAME) as tmp:
            self.tokenizer.save(str(tmp))

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device | None = None) -> SentenceStudent:
        saved = StudentDirectory.open(directory)  # a shipped student by its short name too
        config = saved.config
        weights = saved.weights_path
        model = StudentEncoder(config)
        try:
            model.load_state_dict(load_file(str(weights)))
        except (SafetensorError, RuntimeError, OSError) as exc:
            # Corrupt file, or weights of another architecture than config.json describes.
            reason = str(exc).strip().splitlines()[0]
            raise UserError(f"{weights}: cannot load the student weights ({reason})") from None
        model.eval().to(resolve_device(device))
        return cls(model, load_tokenizer(saved.path), config)


def load_student(directory: str | Path, device: str | torch.device | None = None) -> SentenceStudent:
    """Load a saved student directory (config.json, model.safetensors, tokenizer.json), or a
    shipped student by its short name (``student.pretrained``)."""
    return SentenceStudent.load(directory, device)
