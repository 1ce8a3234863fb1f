"""GRPO, Dr. GRPO, DAPO, REINFORCE, RLOO against a scalar reference written by hand."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax.objectives import OBJECTIVES
from reasoning_jax.objectives.dapo import (DAPOConfig, dynamic_sampling_keep,
                                           overlong_reward_shaping)
from reasoning_jax.objectives.grpo import DrGRPOConfig, GRPOConfig
from tests.objectives._helpers import inputs

TOL = dict(rtol=5e-6, atol=1e-6)
# Rows: two groups of G = 2; rows 1-3 padded; padding holds garbage on purpose.
LOGP = [[-1.0, -0.7, -2.0], [-0.9, -1.6, 50.0], [-0.3, -0.2, -0.1], [-1.2, -30.0, 80.0]]
OLD = [[-1.0, -1.0, -1.9], [-0.5, -1.6, 0.0], [-0.4, -0.2, -0.1], [-1.0, 0.0, 0.0]]
REF = [[-1.1, -0.8, -2.0], [-0.9, -1.0, 3.0], [-0.3, -0.5, -0.2], [-1.2, 0.0, 0.0]]
MASK = [[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]]
REWARDS = [1.0, 0.0, 1.0, 1.0]  # one mixed group, one all-correct group


def ref_token(lp, old, ref, a, el, eh, beta, dual=None):
  rho = math.exp(lp - old)
  loss = max(-a * rho, -a * min(max(rho, 1 - el), 1 + eh))
  if dual is not None and a < 0:
    loss = min(loss, -a * dual)
  lr = ref - lp
  return loss + beta * (math.exp(lr) - 1 - lr)


def batch():
  return inputs(LOGP, MASK, old_logp_BT=OLD, ref_logp_BT=REF, rewards_B=REWARDS,
                group_size=2)


def test_grpo_hand_value_and_metrics():
  a1 = 0.5 / (math.sqrt(0.5) + 1e-6)
  adv = [a1, -a1, 0.0, 0.0]
  rows = []
  for i in range(4):
    toks = [ref_token(LOGP[i][t], OLD[i][t], REF[i][t], adv[i], 0.2, 0.2, 0.04)
            for t in range(3) if MASK[i][t]]
    rows.append(sum(toks) / len(toks))
  want = sum(rows) / 4
  obj = OBJECTIVES["grpo"]
  x = obj.prepare(batch(), GRPOConfig())
  np.testing.assert_allclose(x.advantages, adv, **TOL)
  loss, m = obj.loss(x, GRPOConfig())
  np.testing.assert_allclose(loss, want, **TOL)
  # Row 0 token 1: rho = e^0.3 > 1.2 with A > 0 (high clip); row 1 token 0: rho = e^-0.4
  # < 0.8 with A < 0 (low clip). 9 valid tokens.
  np.testing.assert_allclose(m["clipfrac_high"], 1 / 9, **TOL)
  np.testing.assert_allclose(m["clipfrac_low"], 1 / 9, **TOL)
  np.testing.assert_allclose(m["zero_var_group_frac"], 0.5)
  np.testing.assert_allclose(m["ratio_max"], math.exp(0.3), **TOL)
  np.testing.assert_allclose(m["ratio_min"], math.exp(-0.4), **TOL)
  lrs = [LOGP[i][t] - OLD[i][t] for i in range(4) for t in range(3) if MASK[i][t]]
  np.testing.assert_allclose(m["approx_kl"], np.mean([math.exp(v) - 1 - v for v in lrs]),
                             **TOL)
  np.testing.assert_allclose(m["adv_max"], a1, **TOL)
  np.testing.assert_allclose(m["adv_min"], -a1, **TOL)


def test_dr_grpo_hand_value():
  adv = [0.5, -0.5, 0.0, 0.0]
  total = sum(ref_token(LOGP[i][t], OLD[i][t], REF[i][t], adv[i], 0.2, 0.2, 0.0)
              for i in range(4) for t in range(3) if MASK[i][t])
  cfg = DrGRPOConfig(norm_const=5)
  obj = OBJECTIVES["dr_grpo"]
  loss, _ = obj.loss(obj.prepare(batch(), cfg), cfg)
  np.testing.assert_allclose(loss, total / (4 * 5), **TOL)


def test_dapo_hand_value_filter_and_shaping():
  cfg = DAPOConfig(overlong_max_len=4, overlong_cache_len=2)
  obj = OBJECTIVES["dapo"]
  x = obj.prepare(batch(), cfg)
  # Lengths [3, 2]: shaped rewards [1 - 0.5, 0] -> A = +-1/sqrt(2) (difference 0.5).
  a1 = 0.25 / (math.sqrt(0.125) + 1e-6)
  np.testing.assert_allclose(x.advantages[:2], [a1, -a1], **TOL)
  # The all-correct group leaves the batch: only the 5 tokens of group 1 count.
  np.testing.assert_array_equal(x.mask_BT[2:], 0.0)
  toks = [ref_token(LOGP[i][t], OLD[i][t], REF[i][t], [a1, -a1][i], 0.2, 0.28, 0.0)
          for i in range(2) for t in range(3) if MASK[i][t]]
  loss, _ = obj.loss(x, cfg)
  np.testing.assert_allclose(loss, sum(toks) / 5, **TOL)


def test_overlong_shaping_and_dynamic_sampling():
  got = overlong_reward_shaping(jnp.array([10, 16384, 18432, 20480, 20481]), 20480, 4096)
  np.testing.assert_allclose(got, [0.0, 0.0, -0.5, -1.0, -1.0], **TOL)
  keep = dynamic_sampling_keep(jnp.array([1.0, 1.0, 0.0, 1.0, -1.0, -1.0]), 2)
  np.testing.assert_array_equal(keep, [False, True, False])
  with pytest.raises(ValueError, match="overlong_cache_len"):
    overlong_reward_shaping(jnp.array([1]), 10, 20)


def test_dual_clip_and_regularisers():
  # A = -1, rho = e^2 > c = 3: dual clip caps the loss at 3 and zeroes the gradient.
  x = inputs([[0.0, -1.0]], [[1, 1]], old_logp_BT=[[-2.0, -1.0]], advantages=[-1.0],
             ref_logp_BT=[[-0.5, -1.5]], entropy_BT=[[0.7, 0.2]])
  obj = OBJECTIVES["gppo"]  # dual_clip_c = 3 by default
  cfg = obj.config()
  loss, m = obj.loss(x, cfg)
  np.testing.assert_allclose(loss, (3.0 + 1.0) / 2, **TOL)
  np.testing.assert_allclose(m["dual_clipfrac"], 0.5)
  g = jax.grad(lambda lp: obj.loss(x.replace(logp_BT=lp), cfg)[0])(x.logp_BT)
  np.testing.assert_allclose(g, [[0.0, 0.5]], **TOL)  # unclipped token: -A rho / 2
  # KL (k2) and entropy terms share the aggregation.
  grpo = OBJECTIVES["grpo"]
  c2 = GRPOConfig(kl_coef=0.1, kl_estimator="k2", entropy_coef=0.01, agg="token-mean")
  base = GRPOConfig(kl_coef=0.0, agg="token-mean")
  l_reg, m2 = grpo.loss(x, c2)
  l_base, _ = grpo.loss(x, base)
  np.testing.assert_allclose(l_reg - l_base,
                             (0.1 * (0.5 * 0.25 + 0.5 * 0.25) - 0.01 * 0.9) / 2, **TOL)
  np.testing.assert_allclose(m2["entropy"], 0.45, **TOL)
  with pytest.raises(ValueError, match="entropy_BT"):
    grpo.loss(x.replace(entropy_BT=None), c2)
  with pytest.raises(ValueError, match="ref_logp_BT"):
    grpo.loss(x.replace(ref_logp_BT=None), GRPOConfig())


def test_reinforce_and_rloo():
  x = inputs([[-1.0, -2.0], [-0.5, 0.0], [-3.0, -1.0]], [[1, 1], [1, 0], [1, 1]],
             rewards_B=[1.0, 0.0, 2.0], group_size=3)
  obj = OBJECTIVES["reinforce"]
  loss, _ = obj.loss(obj.prepare(x))
  np.testing.assert_allclose(loss, -(1.0 * -3.0 + 0.0 + 2.0 * -4.0) / 3, **TOL)
  rl = OBJECTIVES["rloo"]
  loss, _ = rl.loss(rl.prepare(x))
  adv = [1.0 - 1.0, 0.0 - 1.5, 2.0 - 0.5]
  # On-policy: ratio 1, the PPO clip is inactive: -A * (token count) per sequence.
  np.testing.assert_allclose(loss, -(adv[0] * 2 + adv[1] * 1 + adv[2] * 2) / 3, **TOL)
