"""KL estimators: values, and their expected gradients on an enumerable categorical."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax.objectives import kl
from tests.objectives._helpers import x64


def test_values():
  logp = jnp.array([-1.0, -2.0])
  ref = jnp.array([-1.5, -1.0])
  lr = np.array([-0.5, 1.0])  # log r = ref - logp
  np.testing.assert_allclose(kl.kl_estimate(logp, ref, "k1"), -lr, rtol=1e-6)
  np.testing.assert_allclose(kl.kl_estimate(logp, ref, "k2"), 0.5 * lr**2, rtol=1e-6)
  np.testing.assert_allclose(kl.kl_estimate(logp, ref, "k3"), np.exp(lr) - 1 - lr, rtol=1e-6)
  np.testing.assert_allclose(kl.kl_estimate(logp, ref, "k3+"), np.exp(lr) - 1 - lr, rtol=1e-6)
  with pytest.raises(ValueError, match="unknown KL estimator"):
    kl.kl_estimate(logp, ref, "k4")


def test_expected_gradients_on_policy():
  """E_{o~pi}[grad k(o)] (score term ignored, as in a loss): k1 -> 0, k2 -> grad KL(pi||ref),
  k3 -> grad KL(ref||pi)."""
  with x64():
    theta = jnp.array([0.2, -0.7, 1.1, 0.0])
    ref = jax.nn.log_softmax(jnp.array([0.5, 0.1, -0.3, 0.4]))

    def expected(kind):
      p = jax.lax.stop_gradient(jax.nn.softmax(theta))
      return jax.grad(lambda t: jnp.sum(p * kl.kl_estimate(jax.nn.log_softmax(t), ref, kind)))(
          theta)

    def kl_fwd(t):  # KL(pi || ref)
      lp = jax.nn.log_softmax(t)
      return jnp.sum(jnp.exp(lp) * (lp - ref))

    def kl_rev(t):  # KL(ref || pi)
      return jnp.sum(jnp.exp(ref) * (ref - jax.nn.log_softmax(t)))

    np.testing.assert_allclose(expected("k1"), 0.0, atol=1e-15)
    np.testing.assert_allclose(expected("k2"), jax.grad(kl_fwd)(theta), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(expected("k3"), jax.grad(kl_rev)(theta), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(expected("k3+"), expected("k2"), rtol=1e-12, atol=1e-15)


def test_reward_to_go_and_last_token():
  mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(kl.last_token_onehot(mask), [[0, 1, 0], [0, 0, 1], [0, 0, 0]])
  r = jnp.array([[1.0, 2.0, 9.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
  np.testing.assert_allclose(kl.reward_to_go(r, mask), [[3, 2, 0], [6, 5, 3], [0, 0, 0]])
  np.testing.assert_allclose(kl.reward_to_go(r, mask, gamma=0.5)[1], [1 + 1 + 0.75, 2 + 1.5, 3])
