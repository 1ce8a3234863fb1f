"""One small text interface over the task's char vocabulary and real tokenizers.

An instruct checkpoint must see prompts in its own chat format: with a `ChatFormat`,
`Codec.prompt_ids` renders the task's prompt as the user turn of the tokenizer's chat
template (`data.chat_template`, equal to transformers' `apply_chat_template`), opens the
assistant turn, appends `response_prefix`, and tokenizes that text without adding BOS
(templates write their own). Every prompt the run samples, trains on (SFT and RL) and
evaluates goes through `prompt_ids`, so the template is applied in one place.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from reasoning_jax.data.chat_template import apply_chat_template


@dataclasses.dataclass(frozen=True)
class ChatFormat:
  """How prompts become chat turns.

  Attributes:
    system: a system message put before the user turn ("" for none).
    response_prefix: text the assistant turn starts with (e.g. "<think>\n" to open
      a rationale the template does not open itself).
    kwargs: `(name, value)` template variables, e.g. (("enable_thinking", False),).
  """
  system: str = ""
  response_prefix: str = ""
  kwargs: tuple = ()

  def messages(self, prompt: str) -> list[dict[str, str]]:
    """The conversation of one prompt: optional system turn, then the user turn."""
    sys = [{"role": "system", "content": self.system}] if self.system else []
    return sys + [{"role": "user", "content": prompt}]


class Codec:
  """encode/decode plus the special ids the trainer needs.

  Wraps a `reasoning_jax.data.tasks.CharVocab` (models trained from scratch) or a
  `reasoning_jax.data.tokenizer.Tokenizer` (checkpoints). Decoding stops at EOS, so
  a completion's text never includes what the sampler wrote after the end.
  """

  def __init__(self, inner: Any, chat: ChatFormat | None = None):
    self.inner = inner
    self.chat = chat
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

  def prompt_text(self, text: str) -> str:
    """The text a prompt is tokenized from: the prompt itself, or its chat rendering."""
    if self.chat is None:
      return text
    rendered = apply_chat_template(self.inner, self.chat.messages(text),
                                   add_generation_prompt=True, **dict(self.chat.kwargs))
    return rendered + self.chat.response_prefix

  def prompt_ids(self, text: str) -> list[int]:
    """A prompt's ids: BOS (when the vocabulary has one) then the text; with a chat
    format, the rendered template's ids (the template writes BOS if the model has one)."""
    if self.chat is not None:
      return self.encode(self.prompt_text(text))
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
