"""A checkpoint's `tokenizer.json` (Qwen, Llama, SmolLM2, ...) behind the `Tokenizer` interface.

The `tokenizers` package runs the tokenizer exactly as transformers' fast tokenizers do;
this wrapper adds what transformers reads from `tokenizer_config.json` (special tokens,
`add_bos_token`, `chat_template`) and `special_tokens_map.json`, plus a `chat_template.jinja`
file, which newer checkpoints store separately.

`encode` never runs the tokenizer.json post-processor (which may add BOS, as Llama 3's
does): BOS is added only when asked, so prompts rendered by a chat template that already
writes BOS do not get two.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import tokenizers

_SPECIAL_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")


def _token_text(value: Any) -> str | None:
  # tokenizer_config.json spells special tokens as a string or an AddedToken dict.
  if value is None:
    return None
  if isinstance(value, dict):
    return value.get("content")
  return str(value)


def _read_json(path: str) -> dict[str, Any]:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: invalid JSON ({e.msg} at line {e.lineno}).") from e


class HFTokenizer:
  """A `Tokenizer` over a `tokenizers.Tokenizer`.

  Args:
    tokenizer: the backend tokenizer.
    special_tokens: 'bos_token'/'eos_token'/'pad_token'/'unk_token' -> token text (each
      must be a single token of the vocabulary).
    chat_template: jinja chat template, or None.
    add_bos_token: whether plain text should start with BOS; None infers it from the
      backend's post-processor (True when it prepends BOS, as Llama 3's does).
  """

  def __init__(self, tokenizer: tokenizers.Tokenizer, *,
               special_tokens: dict[str, str] | None = None,
               chat_template: str | None = None, add_bos_token: bool | None = None):
    self.backend = tokenizer
    self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
    ids = {}
    for name, text in self.special_tokens.items():
      token_id = tokenizer.token_to_id(text)
      if token_id is None:
        raise ValueError(f"Special token {name}={text!r} is not in the tokenizer's vocabulary.")
      ids[name] = token_id
    self.bos_id = ids.get("bos_token")
    self.eos_id = ids.get("eos_token")
    self.pad_id = ids.get("pad_token")
    self.unk_id = ids.get("unk_token")
    self.chat_template = chat_template
    # The checkpoint directory it was read from (from_dir), for exports to copy.
    self.source_dir: str | None = None
    if add_bos_token is None:
      first = tokenizer.encode("", add_special_tokens=True).ids[:1]
      add_bos_token = self.bos_id is not None and first == [self.bos_id]
    self.add_bos_token = bool(add_bos_token)
    # Largest id + 1, not the count: added tokens may leave gaps, and what matters for the
    # model's embedding table is the largest id the tokenizer can emit.
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    self.vocab_size = max(vocab.values()) + 1 if vocab else 0

  @classmethod
  def from_dir(cls, path: str | os.PathLike) -> "HFTokenizer":
    """Loads `tokenizer.json` (+ `tokenizer_config.json`, `special_tokens_map.json`,
    `chat_template.jinja` when present) from a checkpoint directory."""
    path = os.fspath(path)
    tok_file = os.path.join(path, "tokenizer.json")
    if not os.path.exists(tok_file):
      raise FileNotFoundError(
          f"No tokenizer.json in {path}. Point at the checkpoint directory that holds it "
          "(SentencePiece-only checkpoints: use SentencePieceTokenizer on tokenizer.model).")
    backend = tokenizers.Tokenizer.from_file(tok_file)
    config: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # later wins
      file = os.path.join(path, name)
      if os.path.exists(file):
        config.update(_read_json(file))
    special = {name: _token_text(config.get(name)) for name in _SPECIAL_NAMES}
    template = config.get("chat_template")
    jinja_file = os.path.join(path, "chat_template.jinja")
    if os.path.exists(jinja_file):
      with open(jinja_file, encoding="utf-8") as f:
        template = f.read()
    if isinstance(template, list):  # a list of named templates: take the default one
      named = {t["name"]: t["template"] for t in template}
      template = named.get("default", next(iter(named.values()), None))
    add_bos = config.get("add_bos_token")
    tok = cls(backend, special_tokens=special, chat_template=template,
              add_bos_token=None if add_bos is None else bool(add_bos))
    tok.source_dir = path
    return tok

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    """Token ids of `text` (added/special tokens written in the text map to their ids)."""
    if not isinstance(text, str):
      raise TypeError(f"encode expects a str, got {type(text).__name__}.")
    if add_bos and self.bos_id is None:
      raise ValueError("add_bos=True but this tokenizer has no bos_token.")
    ids = self.backend.encode(text, add_special_tokens=False).ids
    return [self.bos_id, *ids] if add_bos else ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
    """Text of `ids`."""
    return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def token_to_id(self, token: str) -> int | None:
    """Id of one token's text (vocabulary spelling, e.g. '<|im_end|>'), or None."""
    return self.backend.token_to_id(token)

  def id_to_token(self, token_id: int) -> str | None:
    """Vocabulary spelling of an id, or None."""
    return self.backend.id_to_token(token_id)
