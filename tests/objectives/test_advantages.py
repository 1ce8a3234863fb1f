"""Advantage functions against hand-computed values."""
import dataclasses
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


def _reinforce_pp_hand(r, mask, old, ref, coef):
  """REINFORCE++ by hand: token rewards r on the last token minus coef * (old - ref)
  (k1) on every token, reward-to-go, then whitening over the batch's tokens (Bessel
  variance, eps 1e-8), 0 off the mask."""
  tr = -coef * (old - ref) * mask
  for i in range(len(r)):
    tr[i, int(mask[i].nonzero()[0].max())] += r[i]
  rtg = np.cumsum(tr[:, ::-1], axis=1)[:, ::-1] * mask
  vals = rtg[mask > 0]
  want = np.zeros_like(rtg)
  want[mask > 0] = (vals - vals.mean()) / np.sqrt(vals.var(ddof=1) + 1e-8)
  return want


def test_reinforce_pp_objective_advantages_follow_reward_kl_coef():
  """The registry objective's prepare: reward minus coef * the per-token KL summed
  forward, globally whitened, against the hand computation; the coefficient matters."""
  old = np.array([[-1.0, -2.0, -0.5, -1.0], [-0.3, -0.7, -1.2, 0.0],
                  [-2.0, -0.1, 0.0, 0.0], [-0.4, -0.4, -0.9, -1.5]])
  ref = np.array([[-1.2, -1.0, -0.5, -2.0], [-0.3, -1.7, -0.2, 0.0],
                  [-1.0, -0.6, 0.0, 0.0], [-0.9, -0.1, -0.9, -0.5]])
  mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], np.float64)
  r = np.array([1.0, 0.0, 0.0, 1.0])
  obj = OBJECTIVES["reinforce_pp"]
  got = {}
  for coef in (0.0, 0.5):
    x = inputs(old, mask, old_logp_BT=old, ref_logp_BT=ref, rewards_B=r, group_size=2)
    got[coef] = np.asarray(obj.prepare(x, obj.config(reward_kl_coef=coef)).advantages)
    np.testing.assert_allclose(got[coef], _reinforce_pp_hand(r, mask, old, ref, coef),
                               **TOL)
  assert np.abs(got[0.5] - got[0.0]).max() > 0.1
  # The baseline variant subtracts each group's mean reward first.
  base = OBJECTIVES["reinforce_pp_baseline"]
  x = inputs(old, mask, old_logp_BT=old, ref_logp_BT=ref, rewards_B=r, group_size=2)
  got_b = base.prepare(x, base.config(reward_kl_coef=0.5)).advantages
  np.testing.assert_allclose(
      got_b, _reinforce_pp_hand(r - np.repeat(r.reshape(2, 2).mean(1), 2), mask, old,
                                ref, 0.5), **TOL)


def test_reinforce_pp_without_reference_is_an_error_not_a_silent_zero_kl():
  mask = jnp.ones((2, 3))
  old = -jnp.ones((2, 3))
  r = jnp.array([1.0, 0.0])
  with pytest.raises(ValueError, match="kl_coef=0.001 needs ref_logp_BT"):
    adv.reinforce_pp(r, mask, old, None, kl_coef=0.001)
  np.testing.assert_allclose(adv.reinforce_pp(r, mask, old, None, kl_coef=0.0),
                             adv.reinforce_pp(r, mask, old, old, kl_coef=0.3), **TOL)
  for name in ("reinforce_pp", "reinforce_pp_baseline"):
    obj = OBJECTIVES[name]
    x = inputs(old, mask, rewards_B=r, group_size=2)
    with pytest.raises(ValueError, match=r"reward_kl_coef=0.001 needs ObjectiveInputs\."
                       r"ref_logp_BT"):
      obj.prepare(x, obj.config())
    obj.prepare(x, obj.config(reward_kl_coef=0.0))  # no KL asked: no reference needed


def test_objectives_declare_their_kl_coefficients():
  """Each objective's config names the fields that need a reference; the trainer keeps
  one exactly when one of them is non-zero."""
  from reasoning_jax.objectives import reference_coefficients, reference_fields
  assert reference_fields(OBJECTIVES["reinforce_pp"].config_cls) == (
      "kl_coef", "reward_kl_coef")
  assert reference_coefficients(OBJECTIVES["reinforce_pp"].config()) == {
      "reward_kl_coef": 0.001}
  assert reference_coefficients(OBJECTIVES["reinforce_pp_baseline"].config(
      reward_kl_coef=0.0, kl_coef=0.02)) == {"kl_coef": 0.02}
  assert reference_coefficients(OBJECTIVES["grpo"].config()) == {"kl_coef": 0.04}
  assert reference_coefficients(OBJECTIVES["garl"].config()) == {}
  for name, obj in OBJECTIVES.items():
    fields = {f.name for f in dataclasses.fields(obj.config_cls)}
    kl_like = {f for f in fields if "kl_coef" in f or f in ("beta", "kl_beta")}
    assert kl_like == set(reference_fields(obj.config_cls)), name


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
