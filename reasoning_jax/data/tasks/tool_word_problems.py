"""Word problems whose worked rationale calls a calculator tool (tool-use RL).

The problems are `word_problems`'; each equation of the rationale ("3*4=12.") becomes
a tool call and its observation, in the tagged form the trainer's episodes stop at
(`training.episodes`):
  rationale '<tool_call>{"name":"calculator","arguments":"3*4"}</tool_call>=12.'
  answer    "12" (after the "|" marker)
So a model warmed up on these rationales writes the call, the trainer runs the
calculator and appends its output as `tool_observation(output)` (the same text as
here; masked from the loss), and the model copies the result into its answer.
Numbers go up to `max_number` (default 999), which a small model does not compute
reliably by itself but copies reliably from the observation.
"""
from __future__ import annotations

import random
import re

from reasoning_jax.data.tasks.base import Problem
from reasoning_jax.data.tasks.word_problems import WordProblemTask

_EQUATION = re.compile(r"(\d+[-+*/]\d+)=(\d+)\.")


def tool_call(expression: str) -> str:
  """The call text of one calculator expression (JSON inside <tool_call> tags)."""
  return f'<tool_call>{{"name":"calculator","arguments":"{expression}"}}</tool_call>'


class ToolWordProblemTask(WordProblemTask):
  """`word_problems` with calculator calls in the rationale; same prompts and answers."""
  name = "tool_word_problems"

  def __init__(self, num_steps: int = 1, max_number: int = 999, **kwargs):
    super().__init__(num_steps=num_steps, max_number=max_number, **kwargs)

  def _base_chars(self) -> str:
    return super()._base_chars() + '<>_{}":,'

  @staticmethod
  def tool_observation(output: str) -> str:
    """The text after a call: the tool's output between "=" and "."."""
    return f"={output}."

  def _problem(self, rng: random.Random) -> Problem:
    p = super()._problem(rng)
    steps = _EQUATION.findall(p.rationale)
    rationale = "".join(tool_call(expr) + self.tool_observation(value)
                        for expr, value in steps)
    return Problem(p.prompt, rationale, p.answer, p.metadata)
