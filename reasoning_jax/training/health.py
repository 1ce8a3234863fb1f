"""Loud warnings for the silent failures of RL post-training.

Runs that "train" while learning nothing share a few signatures: every reward is zero
(answers never parse, the verifier times out, the budget cuts every answer off), most
completions hit the length limit, the loss or gradients go NaN/Inf, or the reward runner
fails on many items. `HealthMonitor.check` looks at one step's host-side numbers, logs a
`logging.warning` that says what is wrong and what to check, and returns whether the
update may be applied (False on non-finite loss or gradients: the trainer skips it).

Plain host Python and numpy: values may be jax arrays (read through `np.asarray`).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

_LOG = logging.getLogger("reasoning_jax.health")


@dataclasses.dataclass(frozen=True)
class HealthConfig:
  """Thresholds for `HealthMonitor`.

  Attributes:
    zero_reward_patience: warn once all rewards have been zero for this many consecutive
      steps (and again every `zero_reward_patience` steps while it lasts).
    truncation_threshold: warn when the fraction of truncated completions exceeds it.
    reward_failure_threshold: warn when the fraction of reward computations that
      failed (timeouts, crashes) exceeds it.
    repeat_every: a repeated truncation/failure warning is logged at most once per
      this many steps, so a long bad stretch does not drown the log.
  """
  zero_reward_patience: int = 5
  truncation_threshold: float = 0.5
  reward_failure_threshold: float = 0.05
  repeat_every: int = 10

  def __post_init__(self):
    if self.zero_reward_patience < 1 or self.repeat_every < 1:
      raise ValueError("zero_reward_patience and repeat_every must be >= 1, got "
                       f"{self.zero_reward_patience} and {self.repeat_every}")
    for name in ("truncation_threshold", "reward_failure_threshold"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} is a fraction in [0, 1], got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class HealthReport:
  """One step's verdict: `apply_update` is False when loss/grads are not finite."""
  apply_update: bool
  warnings: tuple[str, ...]

  def __bool__(self):
    # `if monitor.check(...)` could mean "ok" or "has warnings"; make callers say which.
    raise TypeError("HealthReport has no truth value; test report.apply_update "
                    "(False: skip this update) or report.warnings")


def _all_finite(value: Any) -> bool:
  return bool(np.all(np.isfinite(np.asarray(value, dtype=np.float64))))


class HealthMonitor:
  """Keeps the streaks across steps; call `check` once per training step."""

  def __init__(self, config: HealthConfig | None = None, *,
               logger: logging.Logger | None = None, **overrides: Any):
    """Thresholds from `config` (default `HealthConfig()`) with keyword `overrides`.

    `HealthMonitor(zero_reward_patience=3)` equals
    `HealthMonitor(HealthConfig(zero_reward_patience=3))`; an unknown keyword raises
    TypeError. `logger` defaults to the `reasoning_jax.health` logger.
    """
    self.config = dataclasses.replace(config or HealthConfig(), **overrides)
    self.logger = logger or _LOG
    self.zero_reward_streak = 0
    self.refused_steps = 0
    self._last_warned: dict[str, int] = {}

  def _warn(self, kind: str, step: int, message: str, out: list[str],
            rate_limited: bool = True) -> None:
    last = self._last_warned.get(kind)
    if rate_limited and last is not None and step - last < self.config.repeat_every:
      return
    self._last_warned[kind] = step
    message = f"[step {step}] {message}"
    self.logger.warning(message)
    out.append(message)

  def check(self, step: int, *, rewards: Any = None, truncated: Any = None,
            loss: Any = None, grad_norm: Any = None, reward_failures: int | None = None,
            reward_total: int | None = None) -> HealthReport:
    """Checks one step; every argument is optional.

    Args:
      step: the training step (for messages and rate limiting).
      rewards: this step's rewards, any shape (e.g. `rewards_B`).
      truncated: per-completion truncation flags (bool array), or a fraction.
      loss: the loss (scalar or array); NaN/Inf refuses the update.
      grad_norm: the global gradient norm, or any array of gradient values; NaN/Inf
        refuses the update.
      reward_failures: how many reward computations failed (timeouts, errors).
      reward_total: how many were attempted (default: the number of rewards).
    """
    out: list[str] = []
    apply_update = self._check_finite(step, loss, grad_norm, out)
    if rewards is not None:
      self._check_zero_rewards(step, rewards, out)
    if truncated is not None:
      self._check_truncation(step, truncated, out)
    if reward_failures is not None:
      self._check_reward_failures(step, reward_failures, reward_total, rewards, out)
    return HealthReport(apply_update=apply_update, warnings=tuple(out))

  def _check_finite(self, step: int, loss, grad_norm, out: list[str]) -> bool:
    """Whether loss and gradients are finite (else the update is refused and counted)."""
    apply_update = True
    for name, value in (("loss", loss), ("gradients", grad_norm)):
      if value is not None and not _all_finite(value):
        apply_update = False
        self._warn(f"nonfinite_{name}", step,
                   f"{name} contain NaN/Inf; this update is skipped. Check the learning "
                   "rate, log-prob ratios (old vs new policy mismatch) and masks of "
                   "all-padding rows.", out, rate_limited=False)
    if not apply_update:
      self.refused_steps += 1
    return apply_update

  def _check_zero_rewards(self, step: int, rewards, out: list[str]) -> None:
    r = np.asarray(rewards, dtype=np.float64)
    if not (r.size and np.all(r == 0)):
      self.zero_reward_streak = 0
      return
    self.zero_reward_streak += 1
    if self.zero_reward_streak % self.config.zero_reward_patience == 0:
      self._warn("zero_rewards", step,
                 f"all rewards have been 0 for {self.zero_reward_streak} consecutive "
                 "steps; nothing is being learned. Check that answers are extracted "
                 "(format, \\boxed{}), that the verifier does not time out, and that "
                 "the generation budget leaves room for an answer.", out,
                 rate_limited=False)

  def _check_truncation(self, step: int, truncated, out: list[str]) -> None:
    t = np.asarray(truncated, dtype=np.float64)
    frac = float(t.mean()) if t.ndim else float(t)
    limit = self.config.truncation_threshold
    if frac > limit:
      self._warn("truncation", step,
                 f"{frac:.0%} of completions were truncated at the length limit "
                 f"(threshold {limit:.0%}); they usually get no reward. Raise "
                 "max_new_tokens / the thinking budget, or add a length penalty.", out)

  def _check_reward_failures(self, step: int, failures: int, total: int | None, rewards,
                             out: list[str]) -> None:
    if total is None and rewards is not None:
      total = int(np.asarray(rewards).size)
    if total is None or total <= 0:
      raise ValueError("reward_failures needs reward_total (or rewards) to compute a "
                       "failure fraction")
    frac = failures / total
    limit = self.config.reward_failure_threshold
    if frac > limit:
      self._warn("reward_failures", step,
                 f"{failures}/{total} reward computations failed ({frac:.0%}, "
                 f"threshold {limit:.0%}); failed items score 0. Check the reward "
                 "runner's log for timeouts or exceptions, or raise its timeout.", out)
