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

The observations are the tool's text, not the model's: `metadata["observation_spans"]`
holds their `[start, end)` character spans in the rationale, and the SFT loss skips
them (`training.setup.sft_arrays`), as the RL loss skips an episode's observations.
`single_call=True` keeps only problems solved by one call, and `terse=True` drops the
story's names, items and question ("has 592. buys 415 more."): the tiny example's form,
whose model must learn to copy the operands into the call from a short context.
"""
from __future__ import annotations

import random
import re

from reasoning_jax.data.tasks.base import Problem
from reasoning_jax.data.tasks.word_problems import WordProblemTask

_EQUATION = re.compile(r"(\d+[-+*/]\d+)=(\d+)\.")
_START = re.compile(r"(\w+) has (\d+) (\w+)\. ")


def terse(prompt: str) -> str:
  """A `word_problems` prompt without its name, pronouns, item and question."""
  m = _START.match(prompt)
  if m is None:
    raise ValueError(f"not a word_problems prompt: {prompt!r}")
  item = m.group(3)
  body = prompt[m.end():prompt.rindex(" how many ")]
  body = re.sub(rf"\b(he|she) | (the )?{item}\b| them", "", body)
  return f"has {m.group(2)}. {body}"


def tool_call(expression: str) -> str:
  """The call text of one calculator expression (JSON inside <tool_call> tags)."""
  return f'<tool_call>{{"name":"calculator","arguments":"{expression}"}}</tool_call>'


class ToolWordProblemTask(WordProblemTask):
  """`word_problems` with calculator calls in the rationale; same prompts and answers."""
  name = "tool_word_problems"

  def __init__(self, num_steps: int = 1, max_number: int = 999, *,
               single_call: bool = False, terse: bool = False, **kwargs):
    if single_call and num_steps != 1:
      raise ValueError(f"single_call=True needs num_steps=1 (one operation, one call), "
                       f"got num_steps={num_steps}.")
    super().__init__(num_steps=num_steps, max_number=max_number, **kwargs)
    self.single_call, self.terse = single_call, terse

  def _base_chars(self) -> str:
    return super()._base_chars() + '<>_{}":,'

  @staticmethod
  def tool_observation(output: str) -> str:
    """The text after a call: the tool's output between "=" and "."."""
    return f"={output}."

  def _problem(self, rng: random.Random) -> Problem:
    p = super()._problem(rng)
    steps = _EQUATION.findall(p.rationale)
    while self.single_call and len(steps) != 1:  # "boxes" takes two calls: redraw
      p = super()._problem(rng)
      steps = _EQUATION.findall(p.rationale)
    rationale, spans = "", []
    for expr, value in steps:
      rationale += tool_call(expr)
      obs = self.tool_observation(value)
      spans.append([len(rationale), len(rationale) + len(obs)])
      rationale += obs
    return Problem(terse(p.prompt) if self.terse else p.prompt, rationale, p.answer,
                   {**p.metadata, "observation_spans": spans})
