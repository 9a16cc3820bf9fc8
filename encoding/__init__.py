"""Stage one: stream a corpus through the teacher and write sharded sentence vectors.

The run has three steps, each resumable:

1. plan (``plan``): read the corpus into ``.work/plan.arrow`` (id, text). The shard plan is a pure
   function of the corpus and settings: shard ``i`` holds ids ``[i * shard_size, (i + 1) *
   shard_size)``.
2. shards (``shards``): tokenize and encode each missing shard, write it to a temporary name and
   rename it; a receipt (rows, bytes, sha256) goes to ``.work/`` once the shard is in place
   (``cache_tools.sharded_map``, shared with glue-eval's teacher-logit cache).
3. manifest (``run``): written last, from the receipts; its presence means "complete".

``directory`` claims and locks the output directory, ``sidecars`` writes what stage two needs
instead of the teacher (tokenizer, embedding matrices, the sources of augmented rows).
"""

from __future__ import annotations

from encoding.config import EncodeConfig, EncodeResult
from encoding.run import run_encode

__all__ = ["EncodeConfig", "EncodeResult", "run_encode"]
