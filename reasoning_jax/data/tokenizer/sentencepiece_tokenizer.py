"""SentencePiece `.model` files behind the `Tokenizer` interface (synthetic tasks, Gemma).

SentencePiece never matches *control* pieces (`<bos>`, `<eos>`, `<pad>`) in input text, but
chat templates write them as text (`{{ bos_token }}`), and transformers treats them as special
tokens there. So `encode` first splits the text on the control pieces' spellings and maps each
to its id, then encodes the rest with SentencePiece; user-defined pieces (`<think>`,
`<start_of_turn>`) SentencePiece already keeps whole.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence

import sentencepiece as spm


class SentencePieceTokenizer:
  """A `Tokenizer` over a SentencePiece model.

  Args:
    model: path to a `.model` file, or its serialized bytes.
    chat_template: optional jinja chat template (SentencePiece files carry none).
    add_bos_token: whether plain text is expected to start with BOS (Gemma: True).
  """

  def __init__(self, model: str | os.PathLike | bytes, *, chat_template: str | None = None,
               add_bos_token: bool = False):
    if isinstance(model, bytes):
      self._sp = spm.SentencePieceProcessor(model_proto=model)
      self.path = None
    else:
      path = os.fspath(model)
      if not os.path.exists(path):
        raise FileNotFoundError(f"SentencePiece model not found: {path}")
      self._sp = spm.SentencePieceProcessor(model_file=path)
      self.path = path
    sp = self._sp
    self.vocab_size = sp.get_piece_size()
    self.bos_id = sp.bos_id() if sp.bos_id() >= 0 else None
    self.eos_id = sp.eos_id() if sp.eos_id() >= 0 else None
    self.pad_id = sp.pad_id() if sp.pad_id() >= 0 else None
    self.unk_id = sp.unk_id() if sp.unk_id() >= 0 else None
    self.chat_template = chat_template
    self.add_bos_token = add_bos_token
    # The checkpoint directory it was read from (load_tokenizer), for exports to copy.
    self.source_dir: str | None = None
    self.special_tokens = {
        name: sp.id_to_piece(i)
        for name, i in (("bos_token", self.bos_id), ("eos_token", self.eos_id),
                        ("pad_token", self.pad_id), ("unk_token", self.unk_id))
        if i is not None
    }
    self._control = {sp.id_to_piece(i): i for i in range(self.vocab_size) if sp.is_control(i)}
    if self.unk_id is not None:  # transformers also treats '<unk>' text as the unk token
      self._control[sp.id_to_piece(self.unk_id)] = self.unk_id
    self._control = {p: i for p, i in self._control.items() if p}
    # Longest first so '<eos>' cannot shadow a longer control spelling that contains it.
    alternatives = sorted(self._control, key=len, reverse=True)
    self._control_re = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    """Token ids of `text`, with control-token spellings mapped to their ids."""
    if not isinstance(text, str):
      raise TypeError(f"encode expects a str, got {type(text).__name__}.")
    ids: list[int] = [self.bos_id] if add_bos and self.bos_id is not None else []
    if add_bos and self.bos_id is None:
      raise ValueError("add_bos=True but this SentencePiece model has no BOS piece.")
    if self._control_re is None:
      return ids + self._sp.encode(text, out_type=int)
    pos = 0
    for m in self._control_re.finditer(text):
      if m.start() > pos:
        ids += self._sp.encode(text[pos:m.start()], out_type=int)
      ids.append(self._control[m.group(0)])
      pos = m.end()
    if pos < len(text):
      ids += self._sp.encode(text[pos:], out_type=int)
    return ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
    """Text of `ids`; control tokens are written out unless `skip_special_tokens`."""
    out, run = [], []
    for i in (int(x) for x in ids):
      if 0 <= i < self.vocab_size and (self._sp.is_control(i) or i == self.unk_id):
        if run:
          out.append(self._sp.decode(run))
          run = []
        if not skip_special_tokens:
          out.append(self._sp.id_to_piece(i))
      else:
        run.append(i)
    if run:
      out.append(self._sp.decode(run))
    return "".join(out)

  def token_to_id(self, token: str) -> int | None:
    """Id of a piece, None if the model has no such piece (SentencePiece would say unk)."""
    i = self._sp.piece_to_id(token)
    return i if self._sp.id_to_piece(i) == token else None

  def id_to_token(self, token_id: int) -> str | None:
    """Piece text of an id, None if out of range."""
    return self._sp.id_to_piece(token_id) if 0 <= token_id < self.vocab_size else None


def synthetic_tokenizer() -> SentencePieceTokenizer:
  """The tiny SentencePiece model shipped for the synthetic tasks (see train_synthetic_sp.py)."""
  import importlib.resources
  data = importlib.resources.files("reasoning_jax.data").joinpath(
      "assets/synthetic_sp.model").read_bytes()
  return SentencePieceTokenizer(data)
