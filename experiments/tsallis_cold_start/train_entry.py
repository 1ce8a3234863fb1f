"""`reasoning-jax` with one workaround, for the study's subprocesses.

Workaround (remove when fixed in reasoning_jax/training/loop.py `_check_health`): for
the tsallis layout (GARL, PAFT) the trainer passes `reward_failures` with no rewards,
and `HealthMonitor.check` raises "reward_failures needs reward_total (or rewards)" on
the first RL step. Here a failure count without a total is dropped when it is 0 (the
tsallis layout computes no verifier rewards during training, so there is nothing to
count); a non-zero count still raises.
"""
from __future__ import annotations

import sys

from reasoning_jax import cli
from reasoning_jax.training import health

_check = health.HealthMonitor.check


def _check_tolerant(self, step, *args, **kw):
  """HealthMonitor.check, minus a zero failure count that has no total."""
  if (kw.get("rewards") is None and kw.get("reward_total") is None
      and kw.get("reward_failures") == 0):
    kw["reward_failures"] = None
  return _check(self, step, *args, **kw)


health.HealthMonitor.check = _check_tolerant

if __name__ == "__main__":
  sys.exit(cli.main())
