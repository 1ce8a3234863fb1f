"""The worker process of `RewardRunner`: score items one by one, report each result.

Imported by the forkserver before it forks workers, so the expensive imports (sympy,
math-verify's LaTeX grammar) happen once and every worker starts warm.
"""
from __future__ import annotations

import signal

from reasoning_jax.rewards import math_equiv
from reasoning_jax.rewards.base import score_item

READY = "ready"


def warm_up() -> None:
  """Imports sympy/math-verify and runs one parse, so no item pays the slow import."""
  math_equiv.disable_signal_timeouts()
  math_equiv.check_equivalence("\\frac{1}{2}", "x^2")


def worker_main(conn) -> None:
  """Loop: receive (reward, items), send (score, reason, detail) per item, in order.

  One message per item lets the parent attribute a hang to the exact item and keep the
  results of the items before it when it kills this process.
  """
  # Ctrl-C is the parent's to handle; a worker dying mid-item would read as a crash.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  warm_up()
  conn.send(READY)
  while True:
    try:
      msg = conn.recv()
    except (EOFError, OSError):
      return
    if msg is None:
      return
    reward, items = msg
    for item in items:
      out = score_item(reward, item)
      conn.send((out.score, out.reason, out.detail))
