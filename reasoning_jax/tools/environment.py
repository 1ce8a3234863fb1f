"""The tool environment of multi-turn episodes: a paused row's turn -> observation ids.

`ToolEnvironment` is the `environment` callable of `sampling.run_episodes`. For each
row paused at a tool call it decodes the turn, parses the call (`parse_tool_call`),
runs the named tool, counts the result's reason, and renders the tool's output with
the checkpoint's chat template. The observation is exactly the text the template puts
between the model's tool call and the next assistant turn: the conversation with the
tool message rendered in full, minus the conversation up to the model's own text.
So the episode's tokens are the chat the template would have produced, and no
template-specific strings live here.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from reasoning_jax.data.chat_template import ChatTemplateError, apply_chat_template
from reasoning_jax.sampling.episodes import Observation, ToolRequest
from reasoning_jax.tools.base import (OK, UNKNOWN_TOOL, UNPARSABLE_CALL, Tool, ToolCounts,
                                      ToolResult)

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
_FENCED = re.compile(r"```(?:python|py)\s*\n(.*?)```", re.S)


def parse_tool_call(text: str) -> tuple[str, str]:
  """`(tool name, argument)` of the last tool call in `text`.

  Two forms: a Hermes/Qwen-style `<tool_call>{"name": ..., "arguments": {...}}
  </tool_call>` (the argument is the arguments' single value, or "code" /
  "expression"), or a fenced Python block (the "python" tool). Raises ValueError.
  """
  tagged = _TAGGED.findall(text)
  if tagged:
    try:
      call = json.loads(tagged[-1])
    except json.JSONDecodeError as e:
      raise ValueError(f"tool call is not JSON: {e.msg}") from None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
      raise ValueError('tool call needs {"name": ..., "arguments": ...}')
    args = call.get("arguments", "")
    if isinstance(args, str):
      return call["name"], args
    if isinstance(args, dict):
      for key in ("code", "expression"):
        if isinstance(args.get(key), str):
          return call["name"], args[key]
      if len(args) == 1 and isinstance(next(iter(args.values())), str):
        return call["name"], next(iter(args.values()))
    raise ValueError("tool call arguments must be a string or one string field")
  fenced = _FENCED.findall(text)
  if fenced:
    return "python", fenced[-1]
  raise ValueError("no tool call found (expected <tool_call>...</tool_call> or a "
                   "```python block)")


class ToolEnvironment:
  """Runs the tools of paused rows and renders their outputs as observation ids.

  Args:
    tokenizer: the checkpoint's tokenizer (`encode`, `decode`, `chat_template`).
    conversations: per prompt, the messages its prompt ids were rendered from
      (`apply_chat_template(tokenizer, messages, add_generation_prompt=True)`).
    tools: the tools offered, by the name calls use (e.g. {"python": PythonSandbox()}).
    group: episodes per prompt (episode e belongs to prompt e // group).
    error_reward: the turn reward of a failed call (any reason but "ok").
    template_kwargs: extra template variables (e.g. enable_thinking=False).
  """

  def __init__(self, tokenizer, conversations: Sequence[Sequence[Mapping[str, Any]]],
               tools: Mapping[str, Tool], *, group: int = 1, error_reward: float = 0.0,
               template_kwargs: Mapping[str, Any] | None = None):
    if not tools:
      raise ValueError("ToolEnvironment needs at least one tool")
    self.tokenizer, self.tools, self.group = tokenizer, dict(tools), group
    self.conversations = [list(c) for c in conversations]
    self.error_reward, self.kwargs = float(error_reward), dict(template_kwargs or {})
    self.counts = ToolCounts()
    self._history: dict[int, list[dict]] = {}  # episode -> messages after the prompt

  def _render(self, messages, generation: bool) -> str:
    return apply_chat_template(self.tokenizer, messages, add_generation_prompt=generation,
                               **self.kwargs)

  def observation_text(self, episode: int, turn_text: str, output: str) -> str:
    """The template's text between the model's `turn_text` and its next turn."""
    before = self.conversations[episode // self.group] + self._history.get(episode, [])
    turn = [{"role": "assistant", "content": turn_text}, {"role": "tool", "content": output}]
    prefix = self._render(before, True) + turn_text
    full = self._render(before + turn, True)
    if not full.startswith(prefix):
      raise ChatTemplateError(
          "the chat template does not render an assistant turn as its text verbatim "
          "(it rewrites or strips the content), so the observation cannot be cut out of "
          "the rendered conversation; use a template that keeps assistant content as "
          "written, or one without thinking-stripping for tool turns")
    self._history.setdefault(episode, []).extend(turn)
    return full[len(prefix):]

  def run_call(self, turn_text: str) -> tuple[str, ToolResult]:
    """Parses and runs the turn's tool call: `(tool name, result)`, never raising."""
    try:
      name, argument = parse_tool_call(turn_text)
    except ValueError as e:
      return "unparsed", ToolResult(f"Error: {e}", UNPARSABLE_CALL, str(e))
    tool = self.tools.get(name)
    if tool is None:
      msg = f"unknown tool {name!r}; available: {sorted(self.tools)}"
      return name, ToolResult(f"Error: {msg}", UNKNOWN_TOOL, msg)
    return name, tool.run(argument)

  def __call__(self, requests: Sequence[ToolRequest]) -> list[Observation]:
    out = []
    for req in requests:
      turn_text = self.tokenizer.decode(req.tokens[req.turn_start:].tolist())
      name, result = self.run_call(turn_text)
      self.counts.add(name, result)
      text = self.observation_text(req.episode, turn_text, result.output)
      reward = 0.0 if result.reason == OK else self.error_reward
      out.append(Observation(tokens=self.tokenizer.encode(text), reward=reward))
    return out
