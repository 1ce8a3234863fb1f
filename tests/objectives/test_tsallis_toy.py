"""GARL / PAFT on an enumerable latent model, in float64.

Toy model: R rationales with p(z) = softmax(theta)_z and p(y* | z) = sigmoid(phi_z), so
P = sum_z p(z) sigmoid(phi_z) is exact. One rollout is a row with two tokens: token 0 is
the rationale (log p(z)), token 1 the gold answer (log p(y*|z)). Expectations over the
M i.i.d. rationales are exact sums over multinomial compositions of M into R parts
(the estimators are symmetric in the samples), so no Monte-Carlo noise enters.
"""
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax.objectives import OBJECTIVES, ObjectiveInputs
from reasoning_jax.objectives.garl import GARLConfig
from reasoning_jax.objectives.paft import PAFTConfig
from tests.objectives._helpers import x64

THETA = np.array([0.3, -0.5, 1.0])
PHI = np.array([-2.0, 0.5, -1.0])
R = 3


def _params():
  return (jnp.asarray(THETA, jnp.float64), jnp.asarray(PHI, jnp.float64))


def success_prob(params):
  theta, phi = params
  return jnp.sum(jax.nn.softmax(theta) * jax.nn.sigmoid(phi))


def ell_q(params, q):
  p = success_prob(params)
  if q == 1.0:
    return -jnp.log(p)
  return (1.0 - p ** (1.0 - q)) / (1.0 - q)


def toy_inputs(params, idx, counts=None):
  theta, phi = params
  s = jax.nn.log_softmax(theta)[idx]
  a = jax.nn.log_sigmoid(phi)[idx]
  m = idx.shape[0]
  ones = jnp.ones((m, 2), jnp.float64)
  return ObjectiveInputs(
      logp_BT=jnp.stack([s, a], axis=1), mask_BT=ones,
      rationale_mask_BT=ones * jnp.array([[1.0, 0.0]]), answer_mask_BT=ones * jnp.array([[0.0, 1.0]]),
      resample_counts_B=counts, group_size=m)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def garl_grad(params, idx, q, estimator="rloo", scale=False):
  cfg = GARLConfig(q=q, estimator=estimator, scale_by_m_q=scale)
  return jax.grad(lambda p: OBJECTIVES["garl"].loss(toy_inputs(p, idx), cfg)[0])(params)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def paft_grad(params, idx, counts, q, k, scale=False):
  cfg = PAFTConfig(q=q, num_samples=k, scale_by_m_q=scale)
  return jax.grad(lambda p: OBJECTIVES["paft"].loss(toy_inputs(p, idx, counts), cfg)[0])(params)


def flat(g):
  return np.concatenate([np.asarray(x).ravel() for x in g])


def eq12_by_hand(idx, q, scale=False):
  """The paper's Eq. 12 with analytic gradients of log p(z) and w = sigmoid(phi_z)."""
  p = np.exp(THETA) / np.exp(THETA).sum()
  sig = 1.0 / (1.0 + np.exp(-PHI))
  m = len(idx)
  w = sig[idx]
  wbar = w.mean()
  wloo = (w.sum() - w) / (m - 1)
  c = w / wbar**q - wloo ** (1.0 - q)
  g_theta = np.zeros(R)
  g_phi = np.zeros(R)
  for j, z in enumerate(idx):
    score = np.eye(R)[z] - p                      # grad_theta log p(z)
    grad_w = w[j] * (1.0 - sig[z]) * np.eye(R)[z]  # grad_phi sigmoid(phi_z)
    g_theta += -c[j] * score
    g_phi += -grad_w / wbar**q
  out = np.concatenate([g_theta, g_phi]) / m
  return out * (m ** -q if scale else 1.0)


def compositions(m):
  """All (counts, log multinomial probability) of M draws over R rationales."""
  p = np.exp(THETA) / np.exp(THETA).sum()
  out = []
  for k1 in range(m + 1):
    for k2 in range(m + 1 - k1):
      k = np.array([k1, k2, m - k1 - k2])
      logprob = (math.lgamma(m + 1) - sum(math.lgamma(x + 1) for x in k)
                 + float(np.sum(k * np.log(p))))
      out.append((k, logprob))
  return out


def exact_expectations(m, q):
  """Exact E[grad] of the (plug-in, RLOO) GARL estimators over M i.i.d. rationales."""
  comps = compositions(m)
  idx = jnp.asarray(np.stack([np.repeat(np.arange(R), k) for k, _ in comps]))
  probs = jnp.asarray(np.exp([lp for _, lp in comps]))

  @jax.jit
  def expect(idx, probs):
    def both(i):
      return garl_grad(_params(), i, q, "plugin"), garl_grad(_params(), i, q, "rloo")
    grads = jax.vmap(both)(idx)
    return jax.tree.map(lambda g: jnp.tensordot(probs, g, axes=1), grads)

  plug, rloo = expect(idx, probs)
  return flat(plug), flat(rloo), float(probs.sum())


@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_prop_4_1_dual_factorisation(q):
  with x64():
    params = _params()
    p = float(success_prob(params))
    g_q = flat(jax.grad(ell_q)(params, q))
    g_0 = flat(jax.grad(ell_q)(params, 0.0))
    g_1 = flat(jax.grad(ell_q)(params, 1.0))
    np.testing.assert_allclose(g_q, p ** (-q) * g_0, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g_q, p ** (1.0 - q) * g_1, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("q,scale", [(0.0, False), (0.3, False), (0.3, True), (1.0, False)])
def test_garl_autodiff_equals_eq12(q, scale):
  with x64():
    for idx in ([0, 2, 2, 1], [2, 0, 1, 1], [2, 0]):
      idx = np.array(idx)
      got = flat(garl_grad(_params(), jnp.asarray(idx), q, scale=scale))
      np.testing.assert_allclose(got, eq12_by_hand(idx, q, scale), rtol=1e-12, atol=1e-15)


def test_garl_q0_is_rao_blackwellised_rloo():
  """q = 0: -(1/M) sum [(w_m - mean_{j!=m} w_j) grad log p(z_m) + grad w_m]."""
  with x64():
    idx = jnp.array([0, 2, 1, 2, 2])
    theta, phi = _params()

    def rb_rloo_surrogate(params):
      th, ph = params
      w = jax.nn.sigmoid(ph)[idx]
      wd = jax.lax.stop_gradient(w)
      base = (jnp.sum(wd) - wd) / (idx.shape[0] - 1)
      return -jnp.mean((wd - base) * jax.nn.log_softmax(th)[idx] + w)

    want = flat(jax.grad(rb_rloo_surrogate)((theta, phi)))
    np.testing.assert_allclose(flat(garl_grad((theta, phi), idx, 0.0)), want, rtol=1e-12,
                               atol=1e-15)


def test_garl_q1_plugin_is_self_normalised_iwae_gradient():
  """q = 1 plug-in: -sum_m (w_m / sum_j w_j) grad log p(z_m, y*); RLOO's c sums to 0."""
  with x64():
    idx = jnp.array([0, 2, 1, 2])
    params = _params()

    def log_joint(p, z):
      th, ph = p
      return jax.nn.log_softmax(th)[z] + jax.nn.log_sigmoid(ph)[z]

    w = jax.nn.sigmoid(params[1])[idx]
    snis = sum(-(w[j] / jnp.sum(w)) * flat(jax.grad(log_joint)(params, idx[j]))
               for j in range(4))
    np.testing.assert_allclose(flat(garl_grad(params, idx, 1.0, "plugin")), snis,
                               rtol=1e-12, atol=1e-15)
    from reasoning_jax.objectives.tsallis import garl_coefficients
    c, _ = garl_coefficients(jnp.log(w), 1.0)
    assert abs(float(jnp.sum(c))) < 1e-12


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0])
def test_exact_bias_zero_at_q0_equal_estimators_and_shrinking(q):
  with x64():
    truth = flat(jax.grad(ell_q)(_params(), q))
    biases = {}
    for m in (4, 16, 64):
      plug, rloo, total = exact_expectations(m, q)
      assert abs(total - 1.0) < 1e-12
      # Prop 6.2: the RLOO version has the plug-in's expectation.
      np.testing.assert_allclose(rloo, plug, rtol=1e-10, atol=1e-13)
      biases[m] = float(np.linalg.norm(plug - truth))
    if q == 0.0:
      # Thm 6.1: exactly unbiased at q = 0.
      assert max(biases.values()) < 1e-12
    else:
      # O(1/M) leading term: the bias shrinks, by close to 4x per 4x rollouts.
      assert biases[4] > biases[16] > biases[64] > 0
      assert 3.0 < biases[16] / biases[64] < 5.0, biases


def test_paft_expected_gradient_equals_garl_plugin():
  with x64():
    params = _params()
    idx = jnp.array([0, 2, 1])
    k = 2
    w = np.asarray(jax.nn.sigmoid(params[1])[idx])
    for q in (0.0, 0.5, 1.0):
      plug = flat(garl_grad(params, idx, q, "plugin", scale=True))
      # Exact expectation over all K-tuples of ordered draws r_k ~ Cat(w / sum w).
      expect = np.zeros_like(plug)
      for draws in itertools.product(range(3), repeat=k):
        prob = np.prod(w[list(draws)] / w.sum())
        counts = jnp.asarray(np.bincount(draws, minlength=3), jnp.float64)
        expect += prob * flat(paft_grad(params, idx, counts, q, k, scale=True))
      np.testing.assert_allclose(expect, plug, rtol=1e-12, atol=1e-15)
      # Same with the expected counts E[n_m] = K w_m / sum w plugged in.
      mean_counts = jnp.asarray(k * w / w.sum())
      np.testing.assert_allclose(flat(paft_grad(params, idx, mean_counts, q, k, True)), plug,
                                 rtol=1e-12, atol=1e-15)
