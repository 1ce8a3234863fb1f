"""One small text interface over the task's char vocabulary and real tokenizers."""
from __future__ import annotations

from typing import Any, Sequence


class Codec:
  """encode/decode plus the special ids the trainer needs.

  Wraps a `reasoning_jax.data.tasks.CharVocab` (models trained from scratch) or a
  `reasoning_jax.data.tokenizer.Tokenizer` (checkpoints). Decoding stops at EOS, so
  a completion's text never includes what the sampler wrote after the end.
  """

  def __init__(self, inner: Any):
    self.inner = inner
    self.vocab_size = int(getattr(inner, "vocab_size", None) or inner.size)
    self.eos_id = int(inner.eos_id)
    bos = getattr(inner, "bos_id", None)
    # Checkpoint tokenizers say whether their model expects BOS (SmolLM2 does not);
    # the task char vocabularies always use it.
    self.bos_id = None if bos is None or not getattr(inner, "add_bos_token", True) else int(bos)
    pad = getattr(inner, "pad_id", None)
    self.pad_id = int(pad if pad is not None else self.eos_id)

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, no BOS/EOS added."""
    return list(self.inner.encode(text))

  def prompt_ids(self, text: str) -> list[int]:
    """A prompt's ids: BOS (when the vocabulary has one) then the text."""
    return ([self.bos_id] if self.bos_id is not None else []) + self.encode(text)

  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids` up to (not including) the first EOS; ids outside the
    tokenizer (padded model rows) decode as U+FFFD."""
    ids = [int(i) for i in ids]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    # A model's vocabulary may have more rows than its tokenizer (padded embeddings:
    # Qwen, or ref-tiny's 512 over a char vocabulary), and the sampler can draw them.
    # Such ids become U+FFFD, never dropped: "12<pad row>3" must not read as "123".
    parts, run = [], []
    for i in ids:
      if 0 <= i < self.vocab_size:
        run.append(i)
      else:
        parts.append(self.inner.decode(run) if run else "")
        run = []
    parts.append(self.inner.decode(run) if run else "")
    return "\ufffd".join(parts)
