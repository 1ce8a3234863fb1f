"""A tiny character-level vocabulary for the synthetic tasks (one char = one token).

The quickstart trains a model from scratch on a task's ~15-40 symbols; this maps them
to ids with pad/bos/eos first, and rejects any character outside the task's alphabet
with a clear error instead of silently mapping it to an unknown token.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence


@dataclasses.dataclass(frozen=True)
class CharVocab:
  """Ids: 0 pad, 1 bos, 2 eos, then the characters of `chars` in order."""
  chars: str
  specials: tuple[str, ...] = ("<pad>", "<bos>", "<eos>")

  def __post_init__(self):
    if len(set(self.chars)) != len(self.chars):
      raise ValueError(f"CharVocab chars must be distinct, got {self.chars!r}.")

  pad_id = 0
  bos_id = 1
  eos_id = 2

  @property
  def size(self) -> int:
    """Number of ids (specials + characters)."""
    return len(self.specials) + len(self.chars)

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    """Character ids of `text`; raises ValueError naming any character not in the vocab."""
    table = {c: i + len(self.specials) for i, c in enumerate(self.chars)}
    try:
      ids = [table[c] for c in text]
    except KeyError as e:
      raise ValueError(f"character {e.args[0]!r} is not in this task's alphabet "
                       f"{self.chars!r}.") from None
    return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

  def decode(self, ids: Iterable[int], stop_at_eos: bool = True) -> str:
    """Text of `ids`, skipping pad/bos; stops at the first eos when `stop_at_eos`."""
    out = []
    n = len(self.specials)
    for i in ids:
      i = int(i)
      if i == self.eos_id and stop_at_eos:
        break
      if i < n:
        continue
      if i - n >= len(self.chars):
        raise ValueError(f"id {i} is outside this vocabulary (size {self.size}).")
      out.append(self.chars[i - n])
    return "".join(out)

  def token_strings(self) -> Sequence[str]:
    """The string of every id, in id order."""
    return list(self.specials) + list(self.chars)
