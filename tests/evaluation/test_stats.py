"""Study statistics against hand-computed numbers (reasoning_jax/evaluation/stats.py)."""
import math

import numpy as np
import pytest

from reasoning_jax.evaluation import stats


def test_std_is_ddof1():
  # [1, 2, 3, 4]: mean 2.5, squared deviations 2.25+0.25+0.25+2.25 = 5, 5/3 -> sqrt.
  assert stats.std([1, 2, 3, 4]) == pytest.approx(math.sqrt(5 / 3), rel=1e-15)
  assert stats.std([1, 2, 3, 4]) == pytest.approx(1.2909944487358056, rel=1e-15)
  assert stats.std([7, 7]) == 0.0
  assert math.isnan(stats.std([3.0]))
  assert math.isnan(stats.std([]))


def test_t_mean_ci_by_hand():
  # [1, 2, 3, 4]: std sqrt(5/3), se = sqrt(5/3)/2 = 0.6454972; t_{0.975, 3} = 3.1824463
  # (printed t tables give 3.182); half width 2.0542603.
  lo, hi = stats.t_mean_ci([1, 2, 3, 4])
  half = 3.182446305284263 * math.sqrt(5 / 3) / 2
  assert (lo, hi) == pytest.approx((2.5 - half, 2.5 + half), rel=1e-12)
  assert stats.t_mean_ci([2, 2, 2]) == (2.0, 2.0)
  assert all(math.isnan(v) for v in stats.t_mean_ci([1.0]))


def test_paired_bootstrap_of_a_constant_difference_is_that_constant():
  a = [0.31, 0.52, 0.12, 0.77, 0.40]
  b = [x - 0.25 for x in a]
  lo, hi = stats.paired_bootstrap_ci(a, b, n_boot=2000, seed=0)
  # Every resampled mean is the mean of five copies of (a - b); the only error is the
  # float subtraction a - b (one ulp of 0.77 each, so |error| <= 2e-16 after averaging).
  assert lo == pytest.approx(0.25, abs=1e-15) and hi == pytest.approx(0.25, abs=1e-15)


# Bootstrap distribution of the mean of d = [1, 2, 6] (n = 3): the 27 equally likely
# resamples have sums (count): 3 (1), 4 (3), 5 (3), 6 (1), 8 (3), 9 (6), 10 (3), 13 (3),
# 14 (3), 18 (1); cumulative probabilities 1/27=.037, 4/27=.148, 7/27=.259, ...,
# 23/27=.852, 26/27=.963, 1. So the 2.5% and 97.5% quantiles of the resampled means
# are 3/3 = 1 and 18/3 = 6 (each extreme has mass .037 > .025: for n = 3 the 95%
# interval is [min d, max d]), and the 10% / 90% quantiles are 4/3 and 14/3.
# With n_boot = 20000 resamples the empirical quantile falls off these atoms only if
# an empirical cumulative frequency misses its true value by the margin to the level
# (at least .012 at 2.5%, .048 at 10%): binomial std sqrt(.037*.963/20000) = .0013,
# so a miss is a > 9-sigma event; the assertion is exact.
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_bootstrap_matches_the_enumerated_distribution(seed):
  b = np.array([0.5, 0.25, 0.75])
  a = b + np.array([1.0, 2.0, 6.0])     # exact in binary: d = [1, 2, 6] exactly
  lo, hi = stats.paired_bootstrap_ci(a, b, n_boot=20000, seed=seed)
  assert (lo, hi) == (1.0, 6.0)         # excludes zero
  lo, hi = stats.paired_bootstrap_ci(a, b, n_boot=20000, seed=seed, level=0.80)
  assert lo == pytest.approx(4 / 3, rel=1e-15) and hi == pytest.approx(14 / 3, rel=1e-15)


@pytest.mark.parametrize("seed", [0, 1])
def test_paired_bootstrap_ci_includes_zero(seed):
  # d = [-1, 0, 2]: the resample sums are -3 (1), -2 (3), -1 (3), 0 (4), 1 (6), 2 (3),
  # 3 (3), 4 (3), 6 (1) out of 27, so the 95% interval is [-3/3, 6/3] = [-1, 2]
  # (extremes of mass 1/27 again) and the 80% one is [-2/3, 4/3]: both include 0.
  # Cumulative .148 (at -2) and .852 (at 3) are .048 from 10% / 90%, as above.
  d = np.array([-1.0, 0.0, 2.0])
  assert stats.paired_bootstrap_ci(d, np.zeros(3), n_boot=20000, seed=seed) == (-1.0, 2.0)
  lo, hi = stats.paired_bootstrap_ci(d, np.zeros(3), n_boot=20000, seed=seed, level=0.8)
  assert lo == pytest.approx(-2 / 3, rel=1e-15) and hi == pytest.approx(4 / 3, rel=1e-15)


def test_bootstrap_is_reproducible_and_checks_input():
  x = [0.1, 0.4, 0.35, 0.8, 0.2]
  assert stats.bootstrap_mean_ci(x, n_boot=500, seed=3) == stats.bootstrap_mean_ci(
      x, n_boot=500, seed=3)
  assert all(math.isnan(v) for v in stats.bootstrap_mean_ci([1.0], n_boot=10, seed=0))
  with pytest.raises(ValueError, match="pair up"):
    stats.paired_bootstrap_ci([1, 2], [1, 2, 3], n_boot=10, seed=0)
  with pytest.raises(ValueError, match="level"):
    stats.bootstrap_mean_ci(x, n_boot=10, seed=0, level=95)
  with pytest.raises(ValueError, match="n_boot"):
    stats.bootstrap_mean_ci(x, n_boot=0, seed=0)


def test_escape_step():
  # log 0.1 = -2.302585: -2.31 stays below, -2.30 is above.
  steps = [301, 302, 303, 304, 305]
  assert stats.escape_step(steps, [-9.0, -4.0, -2.31, -2.30, -1.0], math.log(0.1)) == 304
  assert stats.escape_step(steps, [-1.0, -9.0, -9.0, -9.0, -9.0], math.log(0.1)) == 301
  assert stats.escape_step(steps, [-9.0, -8.0, -7.0, -6.0, -5.0], math.log(0.1)) is None
  assert stats.escape_step(steps, [np.nan, 0.5, 0, 0, 0], 0.1) == 302   # nan never escapes
  assert stats.escape_step([3, 4], [0.1, 0.2], 0.1) == 3                 # >= threshold
  assert stats.escape_step([], [], 0.1) is None
  with pytest.raises(ValueError, match="increasing"):
    stats.escape_step([2, 1], [0.0, 0.0], 0.1)
  with pytest.raises(ValueError, match="same length"):
    stats.escape_step([1, 2], [0.0], 0.1)


def test_first_nonzero_step():
  assert stats.first_nonzero_step([300, 310, 320], [0.0, 0.0, 0.0078125]) == 320
  assert stats.first_nonzero_step([300, 310, 320], [0.25, 0.0, 0.5]) == 300
  assert stats.first_nonzero_step([300, 310, 320], [0.0, 0.0, 0.0]) is None


def test_censored_median():
  assert stats.censored_median([3, None, 5]) == 5.0        # sorted 3, 5, censored
  assert stats.censored_median([3, None, None]) == math.inf
  assert stats.censored_median([2, 4, 6, None]) == 5.0      # middle pair 4, 6
  assert stats.censored_median([2, 4, None, None]) == math.inf
  assert stats.censored_median([7]) == 7.0
  assert math.isnan(stats.censored_median([]))
