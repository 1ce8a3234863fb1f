"""GSPO vs GSPO-token, CISPO's pass-through gradient, GPPO's bounded clipped gradients."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from reasoning_jax.objectives import OBJECTIVES
from reasoning_jax.objectives.cispo import CISPOConfig
from reasoning_jax.objectives.gspo import GSPOConfig
from tests.objectives._helpers import inputs

TOL = dict(rtol=5e-6, atol=1e-6)


def _grad(obj, x, cfg):
  return jax.grad(lambda lp: obj.loss(x.replace(logp_BT=lp), cfg)[0])(x.logp_BT)


def test_gspo_hand_value():
  x = inputs([[-1.0, -1.0], [-2.0, 0.0]], [[1, 1], [1, 0]],
             old_logp_BT=[[-1.1, -1.3], [-2.0, 0.0]], advantages=[1.0, -1.0])
  cfg = GSPOConfig(eps_low=0.1, eps_high=0.1)
  # s_1 = exp(mean(0.1, 0.3)) = e^0.2 > 1.1: clipped, loss -1.1; s_2 = 1: loss +1.
  loss, m = OBJECTIVES["gspo"].loss(x, cfg)
  np.testing.assert_allclose(loss, (-1.1 + 1.0) / 2, **TOL)
  np.testing.assert_allclose(m["ratio_max"], math.exp(0.2), **TOL)


def test_gspo_token_equals_gspo_in_value_and_gradient():
  key1, key2, key3 = jax.random.split(jax.random.PRNGKey(0), 3)
  B, T = 6, 7
  logp = -jax.random.uniform(key1, (B, T), minval=0.1, maxval=2.0)
  old = logp + 0.15 * jax.random.normal(key2, (B, T))
  lengths = jnp.array([7, 3, 5, 1, 6, 4])
  mask = (jnp.arange(T)[None, :] < lengths[:, None]).astype(jnp.float32)
  adv = jax.random.normal(key3, (B,))
  # eps = 0.05 clips some sequences and not others; check both kinds are present.
  cfg = GSPOConfig(eps_low=0.05, eps_high=0.05)
  x = inputs(logp, mask, old_logp_BT=old, advantages=adv)
  l_seq, m_seq = OBJECTIVES["gspo"].loss(x, cfg)
  l_tok, m_tok = OBJECTIVES["gspo_token"].loss(x, cfg)
  np.testing.assert_allclose(l_tok, l_seq, **TOL)
  g_seq = _grad(OBJECTIVES["gspo"], x, cfg)
  g_tok = _grad(OBJECTIVES["gspo_token"], x, cfg)
  np.testing.assert_allclose(g_tok, g_seq, **TOL)
  clipped_rows = np.asarray(jnp.all(g_seq == 0, axis=-1))
  assert 0 < clipped_rows.sum() < B, clipped_rows
  np.testing.assert_allclose(m_tok["clipfrac_high"] + m_tok["clipfrac_low"],
                             m_seq["clipfrac_high"] + m_seq["clipfrac_low"], **TOL)


def test_cispo_passes_gradient_through_clipped_tokens():
  # Token 0: rho = e^1 > 1 + eps_high, A > 0: the PPO clip drops it, CISPO keeps it.
  x = inputs([[0.0, -1.0]], [[1, 1]], old_logp_BT=[[-1.0, -1.0]], advantages=[2.0])
  cfg = CISPOConfig(eps_low=0.2, eps_high=0.2)
  g = _grad(OBJECTIVES["cispo"], x, cfg)
  # d/dl of -sg(clip(rho)) A l / N = -clip(rho) A / N.
  np.testing.assert_allclose(g, [[-1.2 * 2.0 / 2, -1.0 * 2.0 / 2]], **TOL)
  g_ppo = _grad(OBJECTIVES["dapo"], x, OBJECTIVES["dapo"].config(filter_groups=False))
  assert float(g_ppo[0, 0]) == 0.0
  loss, m = OBJECTIVES["cispo"].loss(x, cfg)
  np.testing.assert_allclose(loss, -(1.2 * 2.0 * 0.0 + 1.0 * 2.0 * -1.0) / 2, **TOL)
  np.testing.assert_allclose(m["clipfrac_high"], 0.5)
  # Default: no lower clip, cap at rho <= 5.
  x2 = inputs([[3.0, -5.0]], [[1, 1]], old_logp_BT=[[0.0, 0.0]], advantages=[1.0])
  np.testing.assert_allclose(_grad(OBJECTIVES["cispo"], x2, CISPOConfig()),
                             [[-5.0 / 2, -math.exp(-5.0) / 2]], **TOL)


def test_gppo_clipped_token_gradients_are_bounded():
  eh, el = 0.28, 0.2
  # Tokens: (A>0, rho=e^0.5 high-clipped), (A>0, rho=1), (A<0, rho=e^-0.5 low-clipped),
  # (A<0, rho=1).
  lp = [[0.5, 0.0], [-0.5, 0.0]]
  x = inputs(lp, [[1, 1], [1, 1]], old_logp_BT=[[0.0, 0.0], [0.0, 0.0]],
             advantages=[1.5, -2.0])
  obj = OBJECTIVES["gppo"]
  cfg = obj.config()
  g = _grad(obj, x, cfg)
  want = np.array([[-(1 + eh) * 1.5, -1.5], [-(1 - el) * -2.0, 2.0]]) / 4
  np.testing.assert_allclose(g, want, **TOL)
  # Forward value is clip-higher's (DAPO's).
  loss, _ = obj.loss(x, cfg)
  want_val = (-1.5 * (1 + eh) - 1.5 + 2.0 * (1 - el) + 2.0) / 4
  np.testing.assert_allclose(loss, want_val, **TOL)
  dapo = OBJECTIVES["dapo"]
  l_dapo, _ = dapo.loss(x, dapo.config())
  np.testing.assert_allclose(loss, l_dapo, **TOL)
  g_dapo = _grad(dapo, x, dapo.config())
  np.testing.assert_allclose(g_dapo[0, 0], 0.0)
  np.testing.assert_allclose(g_dapo[1, 0], 0.0)
