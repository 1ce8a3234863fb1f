"""The one tokenizer interface every reasoning_jax component uses, and the vocab-size check.

Three implementations sit behind it: `SentencePieceTokenizer` (a `.model` file: the shipped
synthetic-task model, Gemma), `HFTokenizer` (a checkpoint's `tokenizer.json` through the
`tokenizers` package: Qwen, Llama, SmolLM2), and the same `HFTokenizer` built from the
metadata of a GGUF file (`load_gguf_tokenizer`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
  """Text <-> token ids.

  Attributes:
    vocab_size: number of ids the tokenizer can emit (largest id + 1).
    bos_id, eos_id, pad_id: special ids, None where the tokenizer has none.
    special_tokens: 'bos_token'/'eos_token'/'pad_token'/'unk_token' -> token text, for
      chat templates (which write e.g. `{{ bos_token }}`).
    chat_template: the checkpoint's jinja chat template, or None.
    add_bos_token: whether the checkpoint expects BOS before plain text (pass it to
      `encode(text, add_bos=tok.add_bos_token)`; chat templates write BOS themselves).
  """
  vocab_size: int
  bos_id: int | None
  eos_id: int | None
  pad_id: int | None
  special_tokens: dict[str, str]
  chat_template: str | None
  add_bos_token: bool

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    """Token ids of `text`; special-token text (e.g. '<|im_end|>') maps to its id."""
    ...

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
    """Text of `ids`."""
    ...

  def token_to_id(self, token: str) -> int | None:
    """Id of a single token's text (e.g. '</think>'), None if it is not one token."""
    ...

  def id_to_token(self, token_id: int) -> str | None:
    """Text of a single token id, None if out of range."""
    ...


def check_vocab_size(tokenizer: Tokenizer, model_vocab_size: int, *, model_name: str = "model") -> None:
  """Raises ValueError if the tokenizer can emit ids the model has no embedding row for.

  A tokenizer *smaller* than the model's vocabulary is fine: checkpoints pad their
  embedding tables (Qwen2.5: 151,665 tokens, 151,936 rows). A larger one would index past
  the embedding table, which under jit silently clamps instead of failing.
  """
  if not isinstance(model_vocab_size, int) or model_vocab_size < 1:
    raise ValueError(f"model_vocab_size must be a positive int, got {model_vocab_size!r}.")
  n = tokenizer.vocab_size
  if n > model_vocab_size:
    raise ValueError(
        f"Tokenizer vocabulary ({n} tokens) is larger than the {model_name}'s vocabulary "
        f"({model_vocab_size} embedding rows): ids >= {model_vocab_size} have no embedding. "
        "Use the tokenizer shipped with this checkpoint, or a model config whose vocab_size "
        f"is at least {n}.")
  for name in ("bos_id", "eos_id", "pad_id"):
    token_id = getattr(tokenizer, name)
    if token_id is not None and not 0 <= token_id < model_vocab_size:
      raise ValueError(
          f"Tokenizer {name}={token_id} is outside the {model_name}'s vocabulary "
          f"[0, {model_vocab_size}).")
