"""Chat templates: a checkpoint's jinja `chat_template`, rendered the way transformers does.

`apply_chat_template(tok, messages, add_generation_prompt=True)` returns the same string as
transformers' `tokenizer.apply_chat_template(messages, add_generation_prompt=True,
tokenize=False)`: the same sandboxed jinja environment (trim_blocks, lstrip_blocks,
loopcontrols), the same globals (`raise_exception`, `strftime_now`, a JSON `tojson` that does
not HTML-escape) and the same variables (`messages`, `add_generation_prompt`, `tools`,
`documents`, and the tokenizer's special tokens such as `bos_token` and `eos_token`). The
prompt's ids are then `tok.encode(text)` with no extra BOS: templates write BOS themselves.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

Message = Mapping[str, Any]


class ChatTemplateError(ValueError):
  """The chat template could not be rendered (its own raise_exception, or a jinja error)."""


def _raise_exception(message: str):
  raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  # jinja's own tojson HTML-escapes '<' and '>', which would corrupt tool schemas.
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
  return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=32)
def compile_template(template: str) -> jinja2.Template:
  """Compiles a chat template once (cached by its text)."""
  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[jinja2.ext.loopcontrols])
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise_exception
  env.globals["strftime_now"] = _strftime_now
  try:
    return env.from_string(template)
  except jinja2.exceptions.TemplateSyntaxError as e:
    raise ChatTemplateError(f"Chat template has a syntax error at line {e.lineno}: {e.message}") from e


def render_chat_template(template: str, messages: Sequence[Message], *,
                         add_generation_prompt: bool = True,
                         special_tokens: Mapping[str, str] | None = None,
                         tools: Sequence[Mapping[str, Any]] | None = None,
                         documents: Sequence[Mapping[str, Any]] | None = None,
                         **kwargs: Any) -> str:
  """Renders `messages` with a jinja chat template.

  Args:
    template: the template text.
    messages: [{'role': 'system'|'user'|'assistant', 'content': str}, ...].
    add_generation_prompt: end with the assistant header so the model writes the reply.
    special_tokens: e.g. {'bos_token': '<s>', 'eos_token': '</s>'}; visible to the template.
    tools, documents: passed through for templates that use them.
    **kwargs: extra template variables (e.g. enable_thinking=False for Qwen3); they
      override special tokens of the same name.
  """
  for i, m in enumerate(messages):
    if not isinstance(m, Mapping) or "role" not in m:
      raise ChatTemplateError(
          f"messages[{i}] must be a dict with 'role' and 'content', got {m!r}.")
  variables = {**(special_tokens or {}), **kwargs}
  try:
    return compile_template(template).render(
        messages=[dict(m) for m in messages], tools=tools, documents=documents,
        add_generation_prompt=add_generation_prompt, **variables)
  except jinja2.exceptions.TemplateError as e:
    raise ChatTemplateError(f"Chat template failed: {e}") from e


def apply_chat_template(tokenizer: Any, messages: Sequence[Message], *,
                        add_generation_prompt: bool = True, **kwargs: Any) -> str:
  """Renders `messages` with `tokenizer.chat_template` and its special tokens.

  Equals transformers' `apply_chat_template(messages, add_generation_prompt=...,
  tokenize=False)`. Raises ChatTemplateError if the tokenizer has no template.
  """
  template = getattr(tokenizer, "chat_template", None)
  if not template:
    raise ChatTemplateError(
        "This tokenizer has no chat_template. Pass one (HFTokenizer/SentencePieceTokenizer "
        "chat_template=...) or format prompts without a chat template.")
  return render_chat_template(template, messages, add_generation_prompt=add_generation_prompt,
                              special_tokens=getattr(tokenizer, "special_tokens", None), **kwargs)
