"""The tool interface: a tool maps one argument string to a `ToolResult` with a reason.

A tool never raises for bad input or a failed run: like a reward's `Outcome`, its
result carries a reason from `REASONS`, and `ToolCounts` turns reasons into metrics, so
an erroring or hanging tool shows in the metrics instead of as a silent empty
observation. "ok" is the only reason whose output is the tool's answer.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Protocol

OK = "ok"
ERROR = "error"                    # the code raised, or the expression is invalid
TIMEOUT = "timeout"                # killed at the wall-clock or CPU-time limit
MEMORY = "memory"                  # over the memory limit (MemoryError or killed)
OUTPUT_LIMIT = "output_limit"      # printed more than the output limit
REFUSED = "refused"                # the sandbox's policy refused an action
TOO_LARGE = "too_large"            # the calculator refused a number too large to build
UNPARSABLE_CALL = "unparsable_call"  # the model's tool call could not be parsed
UNKNOWN_TOOL = "unknown_tool"      # the call names a tool that is not offered
REASONS = (OK, ERROR, TIMEOUT, MEMORY, OUTPUT_LIMIT, REFUSED, TOO_LARGE,
           UNPARSABLE_CALL, UNKNOWN_TOOL)


@dataclasses.dataclass(frozen=True)
class ToolResult:
  """What a tool call returned.

  Attributes:
    output: the text shown to the model (the answer, or the error message).
    reason: one of `REASONS`.
    detail: a short explanation for logs (empty when ok).
    seconds: wall-clock time of the call.
  """
  output: str
  reason: str = OK
  detail: str = ""
  seconds: float = 0.0

  def __post_init__(self):
    if self.reason not in REASONS:
      raise ValueError(f"ToolResult.reason must be one of {REASONS}, got {self.reason!r}")

  @property
  def ok(self) -> bool:
    return self.reason == OK


class Tool(Protocol):
  """A tool: `name`, and `run(argument) -> ToolResult` that never raises for bad input."""
  name: str

  def run(self, argument: str) -> ToolResult:
    ...


class ToolCounts:
  """Tool calls counted per tool and reason, as flat metrics (`tools/<tool>/<reason>`)."""

  def __init__(self):
    self._counts: collections.Counter = collections.Counter()
    self.seconds = 0.0

  def add(self, tool: str, result: ToolResult) -> None:
    self._counts[(tool, result.reason)] += 1
    self.seconds += result.seconds

  def count(self, tool: str | None = None, reason: str | None = None) -> int:
    """Calls of `tool` (any if None) that ended with `reason` (any if None)."""
    return sum(n for (t, r), n in self._counts.items()
               if (tool is None or t == tool) and (reason is None or r == reason))

  def metrics(self, prefix: str = "tools") -> dict[str, float]:
    """Counts per tool and reason (every reason, zeros included), totals and errors."""
    out: dict[str, float] = {}
    for tool in sorted({t for t, _ in self._counts}):
      for r in REASONS:
        out[f"{prefix}/{tool}/{r}"] = float(self._counts.get((tool, r), 0))
    out[f"{prefix}/calls"] = float(self.count())
    out[f"{prefix}/failed"] = float(self.count() - self.count(reason=OK))
    out[f"{prefix}/seconds"] = self.seconds
    return out
