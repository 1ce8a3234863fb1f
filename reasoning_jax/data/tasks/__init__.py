"""Synthetic task families, generated deterministically from a seed.

    task = get_task("arithmetic", num_digits=3,
                    cold_start=ColdStart(kind="suffix", depth=2))
    warm = task.warmup_corpus(10_000, seed=0)        # SFT: prompt, rationale, answer
    rl = task.rl_prompts(512, seed=1)                # RL train prompts, cold format
    held = task.rl_prompts(512, seed=2, split="heldout")
"""
from __future__ import annotations

from typing import Any

from reasoning_jax.data.tasks.arithmetic import ArithmeticTask
from reasoning_jax.data.tasks.base import (COLD_START_KINDS, ColdStart, Example,
                                           Problem, Task)
from reasoning_jax.data.tasks.champ_task import ChampTask
from reasoning_jax.data.tasks.countdown import CountdownTask
from reasoning_jax.data.tasks.dataset import DatasetExample, DatasetTask
from reasoning_jax.data.tasks.vocab import CharVocab
from reasoning_jax.data.tasks.tool_word_problems import ToolWordProblemTask
from reasoning_jax.data.tasks.word_problems import WordProblemTask

TASKS: dict[str, type[Task]] = {
    "arithmetic": ArithmeticTask,
    "countdown": CountdownTask,
    "word_problems": WordProblemTask,
    "tool_word_problems": ToolWordProblemTask,
}
# Tasks over shipped real data (no generator, no SFT warm-up corpus), beside TASKS.
DATA_TASKS: dict[str, type] = {"champ": ChampTask}


def get_task(name: str, **kwargs: Any) -> Task:
  """Builds the named task; `cold_start` may be a ColdStart or a dict of its fields.

  "dataset" builds a `DatasetTask` over real data (tfds or JSONL; see its docstring);
  "champ" CHAMP's verifiable problems (`DATA_TASKS`); the other names are the synthetic
  generators in `TASKS`.
  """
  if name == "dataset":
    return DatasetTask(**kwargs)
  known = {**TASKS, **DATA_TASKS}
  if name not in known:
    raise ValueError(f"Unknown task {name!r}; known tasks: {sorted(known) + ['dataset']}.")
  if isinstance(kwargs.get("cold_start"), dict):
    cs = dict(kwargs["cold_start"])
    if "depths" in cs:
      cs["depths"] = tuple(cs["depths"])
    kwargs["cold_start"] = ColdStart(**cs)
  try:
    return known[name](**kwargs)
  except TypeError as e:
    raise TypeError(f"Bad arguments for task {name!r}: {e}") from None


__all__ = ["ArithmeticTask", "ChampTask", "CharVocab", "DatasetExample", "DatasetTask", "COLD_START_KINDS", "ColdStart",
           "CountdownTask", "DATA_TASKS", "Example", "Problem", "Task", "TASKS", "WordProblemTask",
           "get_task"]
