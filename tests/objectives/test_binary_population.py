"""Spec 1.5 [derived] claims, checked with exact expectations (float64):
- binary-reward GARL is unbiased at q = 0 and its bias shrinks with M for q > 0;
- population-limit GRPO gives grad P / sqrt(P (1 - P)); RLOO / Dr. GRPO give grad P.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax.objectives import OBJECTIVES, ObjectiveInputs
from reasoning_jax.objectives import advantages as adv_lib
from reasoning_jax.objectives.garl import GARLBinaryConfig
from tests.objectives._helpers import x64

THETA = np.array([0.3, -0.5, 1.0])
PHI = np.array([-2.0, 0.5, -1.0])


def _params():
  return jnp.asarray(THETA, jnp.float64), jnp.asarray(PHI, jnp.float64)


def ell_q(params, q):
  th, ph = params
  p = jnp.sum(jax.nn.softmax(th) * jax.nn.sigmoid(ph))
  return -jnp.log(p) if q == 1.0 else (1.0 - p ** (1.0 - q)) / (1.0 - q)


def binary_grad(params, z, y, q):
  """Autodiff gradient of the garl_binary loss; rollout = (z, sampled answer y in {0,1})."""
  obj = OBJECTIVES["garl_binary"]
  cfg = GARLBinaryConfig(q=q, scale_by_m_q=False)
  m = z.shape[0]

  def loss(p):
    th, ph = p
    ans = jnp.where(y > 0, jax.nn.log_sigmoid(ph)[z], jax.nn.log_sigmoid(-ph)[z])
    x = ObjectiveInputs(logp_BT=jnp.stack([jax.nn.log_softmax(th)[z], ans], 1),
                        mask_BT=jnp.ones((m, 2), jnp.float64), rewards_B=y.astype(jnp.float64),
                        group_size=m)
    return obj.loss(obj.prepare(x, cfg), cfg)[0]

  return jax.grad(loss)(params)


def outcome_compositions(m):
  """Counts over the 6 outcomes (z, y) with their multinomial probabilities."""
  p_z = np.exp(THETA) / np.exp(THETA).sum()
  sig = 1 / (1 + np.exp(-PHI))
  probs = np.concatenate([p_z * (1 - sig), p_z * sig])  # outcomes: (z, 0) then (z, 1)

  def rec(left, k):
    if k == 1:
      yield (left,)
      return
    for first in range(left + 1):
      for rest in rec(left - first, k - 1):
        yield (first,) + rest

  comps = np.array(list(rec(m, 6)))
  logc = np.array([math.lgamma(m + 1) - sum(math.lgamma(c + 1) for c in row) for row in comps])
  return comps, np.exp(logc + comps @ np.log(probs))


@pytest.mark.parametrize("q", [0.0, 0.5])
def test_binary_garl_unbiased_at_q0_and_consistent(q):
  with x64():
    truth = np.concatenate([np.asarray(g) for g in jax.grad(ell_q)(_params(), q)])
    biases = []
    for m in (4, 8, 16):
      comps, probs = outcome_compositions(m)
      outcome = np.stack([np.repeat(np.arange(6), c) for c in comps])
      z, y = jnp.asarray(outcome % 3), jnp.asarray(outcome // 3)

      @jax.jit
      def expect(z, y, probs):
        g = jax.vmap(lambda zz, yy: binary_grad(_params(), zz, yy, q))(z, y)
        return jnp.concatenate([jnp.tensordot(probs, gi, axes=1) for gi in g])

      assert abs(probs.sum() - 1) < 1e-12
      biases.append(float(np.linalg.norm(np.asarray(expect(z, y, jnp.asarray(probs))) - truth)))
    if q == 0.0:
      assert max(biases) < 1e-12, biases
    else:
      assert biases[0] > biases[1] > biases[2] > 0, biases


def test_population_limit_grpo_and_rloo():
  """Bernoulli policy p = sigmoid(theta), reward 1 on success; exact E over k successes."""
  with x64():
    theta = 0.4
    p = 1 / (1 + math.exp(-theta))
    grad_p = p * (1 - p)

    def expected(advantage_fn, g):
      k = np.arange(g + 1)
      probs = np.exp([math.lgamma(g + 1) - math.lgamma(i + 1) - math.lgamma(g - i + 1)
                      + i * math.log(p) + (g - i) * math.log(1 - p) for i in k])
      r = (np.arange(g)[None, :] < k[:, None]).astype(np.float64)  # k successes first
      a = np.asarray(jax.vmap(lambda rr: advantage_fn(rr, g))(jnp.asarray(r)))
      score = np.where(r > 0, 1 - p, -p)  # d/dtheta log p(outcome)
      return float(probs @ (a * score).mean(axis=1))

    # RLOO and Dr. GRPO behave like q = 0: unbiased for grad P at every G (Dr. GRPO up to
    # its (G-1)/G factor from the own-sample term in the mean).
    for g in (2, 8, 64):
      np.testing.assert_allclose(expected(adv_lib.rloo, g), grad_p, rtol=1e-12)
      np.testing.assert_allclose(expected(adv_lib.mean_centered, g), grad_p * (g - 1) / g,
                                 rtol=1e-12)
    # GRPO's std normalisation tends to grad P / sqrt(P (1 - P)), the J_Q q = 1/2 scaling.
    target = grad_p / math.sqrt(p * (1 - p))
    errs = [abs(expected(lambda r, g: adv_lib.group_normalized(r, g, eps=0.0, ddof=0), g)
                - target) / target for g in (64, 256, 1024)]
    # The gap is O(1/G) (about 0.5/G here): 4x more rollouts, 4x smaller.
    assert errs[0] > errs[1] > errs[2], errs
    assert 3.0 < errs[1] / errs[2] < 5.0 and errs[2] < 1e-3, errs
