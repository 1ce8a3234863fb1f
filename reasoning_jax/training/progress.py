"""Progress of a run as plain log lines, for output that is not a terminal.

On a terminal the trainer shows a tqdm bar (`MetricsWriter`); in Jupyter/Colab (stderr
is not a TTY), under `nohup`, in CI or with `2>log` a bar is either invisible or a wall
of carriage returns, so `ProgressLog` writes one plain line through the
`reasoning_jax.progress` logger at INFO instead
(docs/decisions/0018-progress-lines-off-a-terminal.md).
"""
from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

progress_log = logging.getLogger("reasoning_jax.progress")


def make_visible(logger: logging.Logger) -> None:
  """Lets `logger`'s INFO lines through when nobody chose its level.

  Libraries imported with the trainer (orbax, grain) install a root handler at WARNING,
  which would swallow progress in a notebook or a plain script. The user's choice wins:
  a level set on `reasoning_jax` or `reasoning_jax.progress` is kept. With no handler
  anywhere, lines go to stderr (looked up when written: Jupyter replaces it).
  """
  chosen = logger.level or logging.getLogger("reasoning_jax").level  # NOTSET is 0
  if not chosen:
    logger.setLevel(logging.INFO)
  if not logger.hasHandlers():
    logger.addHandler(_StderrHandler())


class _StderrHandler(logging.StreamHandler):
  """A handler writing to whatever `sys.stderr` is when a record is emitted."""

  def __init__(self):
    super().__init__()
    self.setFormatter(logging.Formatter("%(message)s"))

  @property
  def stream(self):  # type: ignore[override]
    return sys.stderr

  @stream.setter
  def stream(self, value):
    pass


class ProgressLog:
  """Plain progress lines for output that is not a terminal.

  A line is due on the first update, when the step enters a new tenth of the run,
  and when `every_s` seconds passed since the last line:
    `step 40/100 (40%) | reward 0.412 | acc 0.350 | 1.2e+03 tok/s | ETA 00:42`
  `acc` is the latest held-out `eval/accuracy` (carried between evaluations), `tok/s`
  the latest sampled tokens per second of rollouts, `loss` the SFT loss in the warm-up
  phase. The ETA extrapolates the steps per second since the first update, so the
  first step's compilation does not inflate it.
  """

  FIELDS = (("reward/mean", "reward {:.4g}"), ("sft/loss", "loss {:.4g}"),
            ("eval/accuracy", "acc {:.3f}"), ("throughput/tokens_per_s", "{:.3g} tok/s"))

  def __init__(self, total: int | None, *, every_s: float = 30.0,
               clock: Callable[[], float] = time.monotonic,
               logger: logging.Logger = progress_log):
    self.total, self.every_s, self._clock, self._log = total, every_s, clock, logger
    self._latest: dict[str, float] = {}
    self._first: tuple[int, float] | None = None
    self._last_t = -math.inf
    self._last_tenth = -1

  def _tenth(self, step: int) -> int:
    return 10 * step // self.total if self.total else 0

  def update(self, step: int, row: Mapping[str, Any]) -> str | None:
    """Notes the row's values; logs and returns a line when one is due."""
    if "reward/mean" in row:
      self._latest.pop("sft/loss", None)  # the warm-up is over
    for k, _ in self.FIELDS:
      v = row.get(k)
      if isinstance(v, (int, float)) and not isinstance(v, bool):
        self._latest[k] = float(v)
    now = self._clock()
    if self._first is None:
      self._first = (step, now)
    if self._tenth(step) <= self._last_tenth and now - self._last_t < self.every_s:
      return None
    self._last_t, self._last_tenth = now, max(self._last_tenth, self._tenth(step))
    line = self.format(step, now)
    self._log.info(line)
    return line

  def format(self, step: int, now: float) -> str:
    """The line for `step` at clock time `now`."""
    from tqdm import tqdm
    if self.total:
      parts = [f"step {step}/{self.total} ({100 * step // self.total}%)"]
    else:
      parts = [f"step {step}"]
    parts += [fmt.format(self._latest[k]) for k, fmt in self.FIELDS if k in self._latest]
    if self.total:
      s0, t0 = self._first
      rate = (step - s0) / (now - t0) if step > s0 and now > t0 else 0.0
      eta = tqdm.format_interval((self.total - step) / rate) if rate > 0 else "?"
      parts.append(f"ETA {eta}")
    return " | ".join(parts)
