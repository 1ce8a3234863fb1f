"""On-policy distillation and its GRPO / GARL mixes against closed forms and hand values.

The toy: one token from a categorical over a vocabulary of 4. Enumerating every token
with the student's probability as its weight turns the sampled-token estimator into its
exact expectation, which must equal the reverse KL and its gradient in closed form.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax.objectives import OBJECTIVES, ObjectiveInputs
from tests.objectives._helpers import inputs, x64

DISTILL, GRPO_DISTILL, GARL_DISTILL = (OBJECTIVES[n] for n in
                                       ("distill", "grpo_distill", "garl_distill"))
# float32 budget of the hand-computed batches: a few ulps of values of order 1.
TOL = dict(rtol=5e-6, atol=1e-6)
P_S = [0.5, 0.25, 0.125, 0.125]  # student
P_T = [0.25, 0.25, 0.25, 0.25]   # teacher
# KL(s || t) = 0.5 ln 2 + 0.25 ln 1 + 2 * 0.125 ln 0.5 = 0.25 ln 2
KL_ST = 0.25 * math.log(2.0)


def _expected_loss_and_grad(z_V, log_pt_V, obj=DISTILL, cfg=None):
  """E_{v ~ softmax(z)}[loss(v)] and E[grad_z loss(v)], each token one batch of one
  row, the sampling weights held fixed (what sampling estimates)."""
  def loss_of(z, v):
    logp = jax.nn.log_softmax(z)[v]
    x = ObjectiveInputs(logp_BT=logp.reshape(1, 1), mask_BT=jnp.ones((1, 1), z.dtype),
                        teacher_logp_BT=log_pt_V[v].reshape(1, 1))
    return obj.loss(x, cfg)[0]

  p = jax.lax.stop_gradient(jax.nn.softmax(z_V))
  vs = jnp.arange(z_V.shape[0])
  losses = jax.vmap(loss_of, (None, 0))(z_V, vs)
  grads = jax.vmap(jax.grad(loss_of), (None, 0))(z_V, vs)
  return jnp.sum(p * losses), jnp.sum(p[:, None] * grads, axis=0)


def _kl(z_V, log_pt_V):
  logp = jax.nn.log_softmax(z_V)
  return jnp.sum(jnp.exp(logp) * (logp - log_pt_V))


def test_expected_loss_is_the_reverse_kl_by_hand():
  with x64():
    z = jnp.log(jnp.asarray(P_S, jnp.float64))
    log_pt = jnp.log(jnp.asarray(P_T, jnp.float64))
    value, _ = _expected_loss_and_grad(z, log_pt)
    # f64: the log/exp round trips cost a few 1e-16.
    np.testing.assert_allclose(float(value), KL_ST, rtol=0, atol=1e-14)


def test_expected_gradient_is_the_reverse_kl_gradient():
  """Closed form dKL/dz_j = p_j (log(p_j / q_j) - KL), jax.grad of the closed-form KL,
  and central finite differences of it all equal the estimator's expected gradient."""
  with x64():
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.standard_normal(5))
    log_pt = jax.nn.log_softmax(jnp.asarray(rng.standard_normal(5)))
    value, grad = _expected_loss_and_grad(z, log_pt)
    p = jax.nn.softmax(z)
    kl = _kl(z, log_pt)
    np.testing.assert_allclose(float(value), float(kl), rtol=0, atol=1e-14)
    closed = p * (jnp.log(p) - log_pt - kl)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(closed), rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(jax.grad(_kl)(z, log_pt)),
                               rtol=0, atol=1e-14)
    h = 1e-6  # central differences: truncation O(h^2) ~ 1e-12, rounding ~ 1e-16 / h
    fd = [(_kl(z.at[j].add(h), log_pt) - _kl(z.at[j].add(-h), log_pt)) / (2 * h)
          for j in range(5)]
    np.testing.assert_allclose(np.asarray(grad), np.asarray(fd), rtol=0, atol=1e-9)


def test_student_equal_to_teacher_has_zero_loss_and_gradient():
  with x64():
    z = jnp.asarray([0.3, -1.0, 2.0])
    value, grad = _expected_loss_and_grad(z, jax.nn.log_softmax(z))
    assert abs(float(value)) < 1e-15 and float(jnp.max(jnp.abs(grad))) < 1e-15


# A hand-checked batch: two rows, the second padded (garbage past its mask).
LOGP = [[-1.0, -0.5, -2.0], [-0.2, -1.5, 40.0]]
TEACH = [[-0.4, -0.9, -2.5], [-1.2, -0.3, 9.0]]
MASK = [[1, 1, 1], [1, 1, 0]]


def test_distill_loss_and_metrics_by_hand():
  x = inputs(LOGP, MASK, teacher_logp_BT=TEACH)
  loss, m = DISTILL.loss(x)
  d = [-1.0 + 0.4, -0.5 + 0.9, -2.0 + 2.5, -0.2 + 1.2, -1.5 + 0.3]  # l - l^T on-policy
  np.testing.assert_allclose(loss, sum(d) / 5, **TOL)
  np.testing.assert_allclose(m["distill_kl"], sum(d) / 5, **TOL)
  np.testing.assert_allclose(m["teacher_nll"], (0.4 + 0.9 + 2.5 + 1.2 + 0.3) / 5, **TOL)
  # The gradient w.r.t. each token's log-prob is (l - l^T) / #tokens, 0 on padding.
  g = jax.grad(lambda lp: DISTILL.loss(x.replace(logp_BT=lp))[0])(x.logp_BT)
  np.testing.assert_allclose(g, np.asarray([d[:3], d[3:] + [0.0]]) / 5, **TOL)


def test_distill_off_policy_uses_the_old_advantage_and_the_clip():
  old = [[-1.0, -0.2, -2.0], [-0.3, -1.5, 0.0]]
  x = inputs(LOGP, MASK, teacher_logp_BT=TEACH, old_logp_BT=old)
  loss, m = DISTILL.loss(x)
  want = []
  for lp, lo, lt in [(-1.0, -1.0, -0.4), (-0.5, -0.2, -0.9), (-2.0, -2.0, -2.5),
                     (-0.2, -0.3, -1.2), (-1.5, -1.5, -0.3)]:
    a, rho = lt - lo, math.exp(lp - lo)
    want.append(max(-a * rho, -a * min(max(rho, 0.8), 1.2)))
  np.testing.assert_allclose(loss, sum(want) / 5, **TOL)
  # Row 0 token 1: A = -0.7 < 0 and rho = e^-0.3 < 0.8: the lower clip holds it.
  np.testing.assert_allclose(m["clipfrac_low"], 1 / 5, **TOL)


def test_grpo_distill_is_grpo_plus_the_weighted_term_in_grpos_aggregation():
  rewards = [1.0, 0.0]
  x = inputs(LOGP, MASK, teacher_logp_BT=TEACH, rewards_B=rewards, group_size=2)
  c = 0.3
  cfg = GRPO_DISTILL.config(distill_coef=c)
  grpo = OBJECTIVES["grpo"]
  gcfg = grpo.config(kl_coef=0.0)
  base, _ = grpo.loss(grpo.prepare(x, gcfg), gcfg)
  loss, m = GRPO_DISTILL.loss(GRPO_DISTILL.prepare(x, cfg), cfg)
  # seq-mean-token-mean of l - l^T: row means 0.3 / 3 and -0.2 / 2.
  d = ((-0.6 + 0.4 + 0.5) / 3 + (1.0 - 1.2) / 2) / 2
  np.testing.assert_allclose(loss, float(base) + c * d, **TOL)
  np.testing.assert_allclose(m["distill_loss"], d, **TOL)


def test_garl_distill_adds_the_term_on_rationale_tokens_only():
  rat = [[1, 1, 0], [1, 0, 0]]
  ans = [[0, 0, 1], [0, 1, 0]]
  x = inputs(LOGP, MASK, teacher_logp_BT=TEACH, rationale_mask_BT=rat,
             answer_mask_BT=ans, group_size=2)
  c = 2.0
  garl = OBJECTIVES["garl"]
  base, _ = garl.loss(x, garl.config())
  loss, m = GARL_DISTILL.loss(x, GARL_DISTILL.config(distill_coef=c))
  d = ((-0.6 + 0.4) + 1.0) / 2  # per-row rationale sums of l - l^T, mean over rows
  np.testing.assert_allclose(loss, float(base) + c * d, **TOL)
  np.testing.assert_allclose(m["distill_kl"], (-0.6 + 0.4 + 1.0) / 3, **TOL)
  # distill_coef = 0 is GARL exactly, value and gradient.
  zero = GARL_DISTILL.config(distill_coef=0.0)
  f = lambda obj, cfg: jax.value_and_grad(  # noqa: E731
      lambda lp: obj.loss(x.replace(logp_BT=lp), cfg)[0])(x.logp_BT)
  (v0, g0), (v1, g1) = f(garl, garl.config()), f(GARL_DISTILL, zero)
  np.testing.assert_allclose(v1, v0, rtol=0, atol=0)
  np.testing.assert_allclose(g1, g0, rtol=0, atol=0)


def test_clear_errors():
  with pytest.raises(ValueError, match=r"distill needs ObjectiveInputs\.teacher_logp_BT"):
    DISTILL.loss(inputs(LOGP, MASK))
  with pytest.raises(ValueError, match="teacher_logp_BT has shape"):
    DISTILL.loss(inputs(LOGP, MASK, teacher_logp_BT=[[0.0, 0.0]]))
  with pytest.raises(ValueError, match="distill_coef must be >= 0"):
    GRPO_DISTILL.config(distill_coef=-1.0)
  with pytest.raises(ValueError, match="distill_coef must be >= 0"):
    GARL_DISTILL.config(distill_coef=float("nan"))
