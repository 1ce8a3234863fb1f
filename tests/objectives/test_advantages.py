"""Advantage functions against hand-computed values."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax.objectives import OBJECTIVES
from reasoning_jax.objectives import advantages as adv
from tests.objectives._helpers import inputs

TOL = dict(rtol=2e-6, atol=1e-6)


def test_group_normalized_hand_values():
  r = jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # G = 4: mixed, all correct
  got = adv.group_normalized(r, 4, eps=0.0)
  std = math.sqrt((0.75**2 + 3 * 0.25**2) / 3)  # Bessel
  np.testing.assert_allclose(got[:4], [0.75 / std] + [-0.25 / std] * 3, **TOL)
  np.testing.assert_allclose(got[4:], 0.0)  # all correct: 0 / (0 + eps) -> 0 with eps
  got_eps = adv.group_normalized(r, 4, eps=1e-6)
  np.testing.assert_allclose(got_eps[4:], 0.0)
  pop = adv.group_normalized(r, 4, eps=0.0, ddof=0)
  np.testing.assert_allclose(pop[0], 0.75 / math.sqrt(0.1875), **TOL)


def test_mean_centered_and_rloo():
  r = jnp.array([1.0, 0.0, 0.5, 2.0, 2.0, -1.0])
  np.testing.assert_allclose(adv.mean_centered(r, 3), [0.5, -0.5, 0.0, 1.0, 1.0, -2.0], **TOL)
  np.testing.assert_allclose(adv.rloo(r, 3), [0.75, -0.75, 0.0, 1.5, 1.5, -3.0], **TOL)


def test_zero_variance_groups():
  r = jnp.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
  np.testing.assert_array_equal(adv.zero_variance_groups(r, 2), [True, False, True])


def test_reinforce_pp_token_advantages():
  # Two rows, T = 3; row 2 has a padded last token. k1 KL = old - ref per token.
  old = jnp.array([[-1.0, -1.0, -1.0], [-0.5, -0.5, 0.0]])
  ref = jnp.array([[-1.5, -1.0, -0.5], [-0.5, -1.5, 0.0]])
  mask = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
  r = jnp.array([1.0, 0.0])
  beta = 0.1
  # KL_t: row1 [0.5, 0, -0.5], row2 [0, 1]. Token rewards: -beta KL + r on the last token.
  tr = np.array([[-0.05, 0.0, 0.05 + 1.0], [0.0, -0.1, 0.0]])
  rtg = np.array([[1.0, 1.05, 1.05], [-0.1, -0.1, 0.0]])
  assert np.allclose(rtg[0], [tr[0].sum(), tr[0, 1:].sum(), tr[0, 2]])
  vals = np.array([1.0, 1.05, 1.05, -0.1, -0.1])
  mean = vals.mean()
  var = ((vals - mean) ** 2).sum() / 4
  want = np.zeros((2, 3))
  want[mask > 0] = (vals - mean) / np.sqrt(var + 1e-8)
  got = adv.reinforce_pp(r, mask, old, ref, kl_coef=beta)
  np.testing.assert_allclose(got, want, **TOL)
  # Baseline variant: group mean of r subtracted first (G = 2 -> r = [0.5, -0.5]).
  got_b = adv.reinforce_pp(r, mask, old, ref, kl_coef=0.0, group_size=2, baseline=True)
  vals_b = np.array([0.5, 0.5, 0.5, -0.5, -0.5])
  want_b = np.zeros((2, 3))
  want_b[mask > 0] = (vals_b - vals_b.mean()) / np.sqrt(vals_b.var(ddof=1) + 1e-8)
  np.testing.assert_allclose(got_b, want_b, **TOL)


def test_psr_nsr_w_reinforce():
  r = jnp.array([1.0, 0.0, 1.0, 0.0])
  a, keep = adv.psr_nsr(r, "psr")
  np.testing.assert_array_equal(a, [1, 0, 1, 0])
  np.testing.assert_array_equal(keep, [1, 0, 1, 0])
  a, keep = adv.psr_nsr(r, "nsr")
  np.testing.assert_array_equal(a, [0, -1, 0, -1])
  np.testing.assert_array_equal(keep, [0, 1, 0, 1])
  a, keep = adv.psr_nsr(jnp.array([1.0, -1.0]), "w_reinforce")  # +-1 scores work too
  np.testing.assert_allclose(a, [0.1, -1.0])
  np.testing.assert_array_equal(keep, [1, 1])
  with pytest.raises(ValueError, match="unknown mode"):
    adv.psr_nsr(r, "bogus")


def test_nsr_drops_correct_rows_from_the_denominator():
  logp = [[-1.0, -2.0], [-0.5, -0.5], [-0.2, 0.0]]
  mask = [[1, 1], [1, 1], [1, 0]]
  obj = OBJECTIVES["nsr"]
  x = obj.prepare(inputs(logp, mask, rewards_B=[1.0, 0.0, 0.0]))
  loss, metrics = obj.loss(x)
  # On-policy ratio 1: token loss = -A = +1 on the 3 incorrect tokens, token-mean.
  np.testing.assert_allclose(loss, 1.0, **TOL)
  np.testing.assert_allclose(metrics["adv_mean"], -1.0, **TOL)


def test_errors():
  with pytest.raises(ValueError, match="does not divide"):
    adv.group_normalized(jnp.ones(5), 2)
  with pytest.raises(ValueError, match="group_size >= 2"):
    adv.rloo(jnp.ones(3), 1)
  with pytest.raises(ValueError, match=r"shape \[B\]"):
    adv.mean_centered(jnp.ones((2, 2)), 2)
