"""Statistics over seeds for study reports (host, numpy + scipy): spread, confidence
intervals, paired differences and escape steps.

Conventions (docs/decisions/0032-study-statistics.md):
  - spread is the sample std with ddof=1 (the unbiased variance's root): with 3-5 seeds
    the population std (ddof=0) is sqrt((n-1)/n) of it, 18% smaller at 3, 11% at 5;
  - a mean over seeds gets a Student-t interval (exact for normal data at any n);
  - a paired difference (method A minus method B on the same seeds and warm starts) gets
    a percentile bootstrap interval of its mean (scipy.stats.bootstrap, resampling the
    per-seed differences, so the pairing is kept), seeded by an explicit numpy
    Generator so a report is reproducible;
  - an escape step is the first step whose value reaches a threshold, None when the run
    never does; seeds that never escape are right-censored at the budget, and their
    median counts them (`censored_median`) instead of averaging only the escaped ones.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.stats


def _vector(name: str, x) -> np.ndarray:
  """`x` as a 1-D float array, or a ValueError naming `name`."""
  a = np.asarray(x, dtype=float)
  if a.ndim != 1:
    raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {a.shape}")
  return a


def _check_level(level: float) -> float:
  if not 0.0 < level < 1.0:
    raise ValueError(f"level must be in (0, 1) (e.g. 0.95), got {level!r}")
  return float(level)


def std(x: Sequence[float]) -> float:
  """Sample standard deviation with ddof=1; nan for fewer than 2 values."""
  a = _vector("x", x)
  return float(np.std(a, ddof=1)) if a.size >= 2 else float("nan")


def t_mean_ci(x: Sequence[float], level: float = 0.95) -> tuple[float, float]:
  """Student-t interval for the mean: mean ± t_{(1+level)/2, n-1} · std(x)/√n.

  Returns (nan, nan) for fewer than 2 values; (c, c) when every value is c.
  """
  a, level = _vector("x", x), _check_level(level)
  if a.size < 2:
    return float("nan"), float("nan")
  half = scipy.stats.t.ppf((1 + level) / 2, a.size - 1) * np.std(a, ddof=1) / np.sqrt(a.size)
  m = float(np.mean(a))
  return m - float(half), m + float(half)


def bootstrap_mean_ci(x: Sequence[float], *, n_boot: int, seed: int,
                      level: float = 0.95) -> tuple[float, float]:
  """Percentile bootstrap interval of the mean of `x`.

  `n_boot` resamples of len(x) values drawn with replacement, by
  `np.random.default_rng(seed)`; the bounds are the (1-level)/2 and (1+level)/2
  percentiles (numpy's linear interpolation) of the resampled means. Returns
  (nan, nan) for fewer than 2 values; (c, c) when every value is c.
  """
  a, level = _vector("x", x), _check_level(level)
  if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
    raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
  if a.size < 2:
    return float("nan"), float("nan")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"x must be finite, got {a.tolist()}")
  res = scipy.stats.bootstrap((a,), np.mean, n_resamples=int(n_boot), vectorized=True,
                              confidence_level=level, method="percentile",
                              rng=np.random.default_rng(seed))
  ci = res.confidence_interval
  return float(ci.low), float(ci.high)


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], *, n_boot: int,
                        seed: int, level: float = 0.95) -> tuple[float, float]:
  """Percentile bootstrap interval of mean(a - b) over paired units (seeds).

  a[i] and b[i] must come from the same unit; resampling the differences resamples the
  pairs, so the between-seed variation shared by both methods cancels.
  """
  x, y = _vector("a", a), _vector("b", b)
  if x.shape != y.shape:
    raise ValueError(f"a and b must pair up one value per seed, got {x.size} and {y.size}")
  return bootstrap_mean_ci(x - y, n_boot=n_boot, seed=seed, level=level)


def _series(steps, values) -> tuple[np.ndarray, np.ndarray]:
  s, v = _vector("steps", steps), _vector("values", values)
  if s.shape != v.shape:
    raise ValueError(f"steps and values must have the same length, got {s.size} and {v.size}")
  if np.any(np.diff(s) <= 0):
    raise ValueError(f"steps must be strictly increasing, got {s.tolist()}")
  return s, v


def escape_step(steps: Sequence[int], values: Sequence[float],
                threshold: float) -> int | None:
  """First step whose value is >= threshold (None if none is); nan never escapes."""
  s, v = _series(steps, values)
  hit = np.flatnonzero(v >= threshold)
  return int(s[hit[0]]) if hit.size else None


def first_nonzero_step(steps: Sequence[int], values: Sequence[float]) -> int | None:
  """First step whose value is > 0 (the paper's "any non-zero accuracy"), else None."""
  s, v = _series(steps, values)
  hit = np.flatnonzero(v > 0)
  return int(s[hit[0]]) if hit.size else None


def censored_median(times: Sequence[int | None]) -> float:
  """Median of escape times where None (never escaped) is censored above every time.

  A censored time is larger than any observed one, so it sorts last; the median is an
  ordinary number only while the middle order statistic(s) are observed, and inf
  otherwise (more than half, or exactly half with even n, never escaped). nan if empty.
  """
  if not len(times):
    return float("nan")
  t = np.sort(np.asarray([np.inf if x is None else float(x) for x in times]))
  n = t.size
  return float(t[n // 2]) if n % 2 else float((t[n // 2 - 1] + t[n // 2]) / 2)
