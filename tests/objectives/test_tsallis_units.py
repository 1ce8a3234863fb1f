"""GARL / PAFT weight math, hand-computed values, binary variants, resampling, errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax.objectives import OBJECTIVES
from reasoning_jax.objectives import tsallis
from reasoning_jax.objectives.garl import GARLBinaryConfig, GARLConfig
from reasoning_jax.objectives.paft import PAFTBinaryConfig, PAFTConfig
from tests.objectives._helpers import inputs

F32_TOL = dict(rtol=2e-6, atol=1e-7)  # a few float32 ulps on O(1) values


def test_garl_coefficients_hand_values():
  w = [0.2, 0.5, 0.1]
  q = 0.5
  wbar = sum(w) / 3
  wloo = [(0.5 + 0.1) / 2, (0.2 + 0.1) / 2, (0.2 + 0.5) / 2]
  e_want = [wm / math.sqrt(wbar) for wm in w]
  c_want = [e - math.sqrt(l) for e, l in zip(e_want, wloo)]
  c, e = tsallis.garl_coefficients(jnp.log(jnp.array(w)), q)
  np.testing.assert_allclose(e, e_want, **F32_TOL)
  np.testing.assert_allclose(c, c_want, **F32_TOL)
  # Endpoints: q = 0 is RB-RLOO (w - wloo), q = 1 self-normalised (w / wbar - 1).
  c0, e0 = tsallis.garl_coefficients(jnp.log(jnp.array(w)), 0.0)
  np.testing.assert_allclose(c0, np.array(w) - np.array(wloo), **F32_TOL)
  np.testing.assert_allclose(e0, w, **F32_TOL)
  c1, _ = tsallis.garl_coefficients(jnp.log(jnp.array(w)), 1.0)
  np.testing.assert_allclose(c1, np.array(w) / wbar - 1.0, **F32_TOL)


def test_garl_coefficients_stable_when_weights_underflow():
  """log w of -300 underflows float32 exp(); the log-space form stays exact at q = 1."""
  a = jnp.array([-300.0, -301.0, -305.0], jnp.float32)
  c, e = tsallis.garl_coefficients(a, 1.0)
  shifted = np.exp(np.array([0.0, -1.0, -5.0]))          # w / w_max, exact in float64
  e_want = shifted / shifted.mean()
  # exp(a - log wbar) with |a| ~ 300: one float32 ulp of log wbar (300 * eps) is a
  # relative error of 300 * eps in e, so the tolerance scales with |a| (condition number).
  tol = dict(rtol=4 * 300 * np.finfo(np.float32).eps, atol=0)
  np.testing.assert_allclose(e, e_want, **tol)
  np.testing.assert_allclose(c, e_want - 1.0, atol=4 * 300 * np.finfo(np.float32).eps * 3)
  c5, e5 = tsallis.garl_coefficients(a, 0.5)
  assert np.all(np.isfinite(c5)) and np.all(np.isfinite(e5))


def test_garl_coefficients_batched_and_errors():
  a = jnp.log(jnp.array([[0.2, 0.5, 0.1], [0.3, 0.3, 0.3]]))
  c, e = tsallis.garl_coefficients(a, 0.5)
  assert c.shape == (2, 3)
  np.testing.assert_allclose(c[1], 0.0, atol=1e-7)  # equal weights: zero RLOO signal
  for q in (-0.1, 1.5):
    with pytest.raises(ValueError, match=r"q must lie in \[0, 1\]"):
      tsallis.garl_coefficients(a, q)
    with pytest.raises(ValueError, match="q must lie"):
      GARLConfig(q=q)
    with pytest.raises(ValueError, match="q must lie"):
      PAFTConfig(q=q)
  with pytest.raises(ValueError, match="at least 2"):
    tsallis.garl_coefficients(jnp.zeros((1,)), 0.5)


def test_garl_loss_hand_value_with_padding():
  """Two prompts x M=2; rationale / answer tokens; trailing padding with garbage."""
  logp = [[-1.0, -0.5, -0.2, -0.3, 7.0], [-2.0, -0.1, -1.0, 9.0, 9.0],
          [-0.4, -1.2, -0.7, 0.0, 0.0], [-0.3, -0.6, -0.2, -0.1, 5.0]]
  mask = [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]
  rat = [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]
  ans = [[0, 0, 1, 1, 0], [0, 0, 1, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0]]
  q = 0.5
  s = [-1.5, -2.1, -0.4, -0.9]
  a = [-0.5, -1.0, -1.9, -0.3]
  want = 0.0
  for g in range(2):
    w = [math.exp(a[2 * g]), math.exp(a[2 * g + 1])]
    wbar = sum(w) / 2
    for j in range(2):
      e = w[j] / wbar**q
      c = e - w[1 - j] ** (1 - q)
      want += -(c * s[2 * g + j] + e * a[2 * g + j]) / 2 * 2 ** (-q)
  want /= 2
  x = inputs(logp, mask, rationale_mask_BT=rat, answer_mask_BT=ans, group_size=2)
  loss, metrics = OBJECTIVES["garl"].loss(x, GARLConfig(q=q))
  np.testing.assert_allclose(loss, want, **F32_TOL)
  assert np.isfinite(metrics["ess_frac"]) and 0.5 <= metrics["ess_frac"] <= 1.0


def test_binary_coefficients_hand_values():
  c, e = tsallis.binary_coefficients(jnp.array([1.0, 0.0, 1.0, 0.0]), 0.5)
  s2 = math.sqrt(0.5)
  np.testing.assert_allclose(e, [1 / s2, 0, 1 / s2, 0], **F32_TOL)
  np.testing.assert_allclose(
      c, [1 / s2 - math.sqrt(1 / 3), -math.sqrt(2 / 3), 1 / s2 - math.sqrt(1 / 3),
          -math.sqrt(2 / 3)], **F32_TOL)
  c1, e1 = tsallis.binary_coefficients(jnp.array([1.0, 0.0, 0.0]), 1.0)
  np.testing.assert_allclose(e1, [3, 0, 0], **F32_TOL)
  np.testing.assert_allclose(c1, [2, -1, -1], **F32_TOL)  # 0^0 = 1 at q = 1
  c0, e0 = tsallis.binary_coefficients(jnp.zeros(4), 0.3)
  np.testing.assert_array_equal(c0, 0.0)
  np.testing.assert_array_equal(e0, 0.0)


def test_garl_binary_loss_hand_value():
  logp = [[-1.0, -2.0, 3.0], [-0.5, 4.0, 4.0], [-0.1, -0.2, -0.3], [-1.0, -1.0, 0.0]]
  mask = [[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]]
  rewards = [1.0, 0.0, 0.0, 0.0]  # second group all wrong: zero gradient
  obj = OBJECTIVES["garl_binary"]
  cfg = GARLBinaryConfig(q=0.5)
  x = obj.prepare(inputs(logp, mask, rewards_B=rewards, group_size=2), cfg)
  # Group 1: rbar = 0.5, e = [1/sqrt(.5), 0], rbar_-m = [0, 1], c = [sqrt2, -1].
  c = [math.sqrt(2), -1.0, 0.0, 0.0]
  seq = [-3.0, -0.5, -0.6, -2.0]
  want = -sum(cm * sm for cm, sm in zip(c, seq)) * 2 ** -0.5 / 4
  loss, _ = obj.loss(x, cfg)
  np.testing.assert_allclose(loss, want, **F32_TOL)


def test_paft_loss_hand_value_and_endpoints():
  logp = [[-1.0, -0.5, -0.2], [-2.0, -0.1, -1.0]]
  mask = [[1, 1, 1], [1, 1, 1]]
  rat = [[1, 0, 0], [1, 0, 0]]
  ans = [[0, 1, 1], [0, 1, 1]]
  counts = [2.0, 1.0]  # K = 3 draws
  a = [-0.7, -1.1]
  s = [-1.0, -2.0]
  for q in (0.0, 0.5, 1.0):
    wbar = (math.exp(a[0]) + math.exp(a[1])) / 2
    want = -wbar ** (1 - q) * sum(n / 3 * (sm + am) for n, sm, am in zip(counts, s, a))
    want *= 2 ** -q
    x = inputs(logp, mask, rationale_mask_BT=rat, answer_mask_BT=ans,
               resample_counts_B=counts, group_size=2)
    loss, _ = OBJECTIVES["paft"].loss(x, PAFTConfig(q=q, num_samples=3))
    np.testing.assert_allclose(loss, want, **F32_TOL)


def test_paft_resample_counts_distribution():
  w = np.array([0.1, 0.6, 0.3])
  log_w = jnp.log(jnp.asarray(np.stack([w, w[::-1]])))
  k, n = 4, 4000
  keys = jax.random.split(jax.random.PRNGKey(0), n)
  counts = jax.vmap(lambda key: tsallis.paft_resample_counts(key, log_w, k))(keys)
  assert counts.dtype == jnp.int32 and counts.shape == (n, 2, 3)
  np.testing.assert_array_equal(counts.sum(-1), k)
  mean = np.asarray(counts, np.float64).mean(0)
  expect = k * np.stack([w, w[::-1]])
  # Multinomial: Var(n_m) = K p (1 - p); allow 5 standard errors of the mean.
  se = np.sqrt(k * np.stack([w, w[::-1]]) * (1 - np.stack([w, w[::-1]])) / n)
  assert np.all(np.abs(mean - expect) < 5 * se), (mean, expect)
  # A group with no positive weight is skipped; same key, same counts (pure function).
  z = tsallis.paft_resample_counts(keys[0], jnp.full((1, 3), -jnp.inf), 5)
  np.testing.assert_array_equal(z, 0)
  np.testing.assert_array_equal(tsallis.paft_resample_counts(keys[1], log_w, k),
                                tsallis.paft_resample_counts(keys[1], log_w, k))
  with pytest.raises(ValueError, match="positive int"):
    tsallis.paft_resample_counts(keys[0], log_w, 0)


def test_paft_prepare_and_binary_variant():
  key = jax.random.PRNGKey(3)
  logp = [[-1.0, -0.5], [-2.0, -0.1], [-0.3, -0.2], [-0.4, -0.6]]
  mask = [[1, 1]] * 4
  obj = OBJECTIVES["paft_binary"]
  cfg = PAFTBinaryConfig(q=0.5)
  x = obj.prepare(inputs(logp, mask, rewards_B=[0.0, 1.0, 0.0, 0.0], group_size=2), cfg, key)
  # Group 1: both draws land on the one correct row; group 2 (all wrong) is skipped.
  np.testing.assert_array_equal(x.resample_counts_B, [0, 2, 0, 0])
  loss, metrics = obj.loss(x, cfg)
  want = -(0.5 ** 0.5) * (2 / 2) * (-2.1) * 2 ** -0.5 / 2
  np.testing.assert_allclose(loss, want, **F32_TOL)
  np.testing.assert_allclose(metrics["skipped_group_frac"], 0.5)
  with pytest.raises(ValueError, match="PRNG key"):
    obj.prepare(x, cfg)
  # PAFT prepare: counts follow w = exp(answer log-probs); sums to K = M per group.
  rat = [[1, 0]] * 4
  ans = [[0, 1]] * 4
  p = OBJECTIVES["paft"].prepare(
      inputs(logp, mask, rationale_mask_BT=rat, answer_mask_BT=ans, group_size=2),
      PAFTConfig(), key)
  np.testing.assert_array_equal(np.asarray(p.resample_counts_B).reshape(2, 2).sum(-1), 2)
