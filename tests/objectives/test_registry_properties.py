"""Every registry objective: padding invariance (hypothesis), exact micro-batch
accumulation, jit, and clear errors on bad input."""
import dataclasses

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax.objectives import (OBJECTIVES, ObjectiveInputs, accumulate_value_and_grad,
                                      get_objective)
from reasoning_jax.objectives.types import metric_values

REQUIRED = ("grpo", "dr_grpo", "dapo", "gspo", "cispo", "gppo", "rloo", "reinforce_pp", "nsr",
            "w_reinforce", "garl", "paft", "sft")
NAMES = sorted(OBJECTIVES)
G = 2
# Configs chosen so every optional term is exercised (KL, entropy) and clips can trigger.
OVERRIDES = {"grpo": dict(entropy_coef=0.01), "dr_grpo": dict(norm_const=16),
             "gspo": dict(eps_low=0.05, eps_high=0.05), "garl": dict(q=0.5),
             "paft": dict(q=0.5), "dapo": dict(kl_coef=0.01)}


def make_batch(num_groups: int, T: int, seed: int = 0) -> ObjectiveInputs:
  rng = np.random.default_rng(seed)
  B = num_groups * G
  lengths = rng.integers(2, T + 1, size=B)
  mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)
  rat = mask * (np.arange(T)[None, :] < (lengths[:, None] // 2)).astype(np.float32)
  logp = -rng.uniform(0.05, 2.0, (B, T)).astype(np.float32)
  rewards = np.tile(np.array([1.0, 0.0], np.float32), num_groups)
  rewards[-2:] = 1.0  # last group all correct (zero variance)
  return ObjectiveInputs(
      logp_BT=jnp.asarray(logp), mask_BT=jnp.asarray(mask),
      old_logp_BT=jnp.asarray(logp + 0.2 * rng.standard_normal((B, T)).astype(np.float32)),
      ref_logp_BT=jnp.asarray(logp + 0.1 * rng.standard_normal((B, T)).astype(np.float32)),
      teacher_logp_BT=jnp.asarray(logp - rng.uniform(0.0, 1.0, (B, T)).astype(np.float32)),
      entropy_BT=jnp.asarray(rng.uniform(0.0, 2.0, (B, T)).astype(np.float32)),
      rewards_B=jnp.asarray(rewards), rationale_mask_BT=jnp.asarray(rat),
      answer_mask_BT=jnp.asarray(mask - rat), group_size=G)


def cfg_for(name):
  return OBJECTIVES[name].config(**OVERRIDES.get(name, {}))


def prepared(name, x, key=jax.random.PRNGKey(7)):
  return OBJECTIVES[name].prepare(x, cfg_for(name), key)


def test_registry_has_required_names():
  assert set(REQUIRED) <= set(OBJECTIVES)
  for name, obj in OBJECTIVES.items():
    assert obj.name == name and obj.description
    hash(obj.config())  # static under jit
  with pytest.raises(ValueError, match="unknown objective"):
    get_objective("ppo2")


def _pad(x: ObjectiveInputs, extra_T: int, extra_groups: int, junk: float) -> ObjectiveInputs:
  """Pads tokens and whole groups; padded entries hold junk (logp: -inf / junk)."""
  def pad2(a, val):
    if a is None:
      return None
    a = jnp.pad(a, ((0, 0), (0, extra_T)), constant_values=val)
    return jnp.pad(a, ((0, extra_groups * G), (0, 0)), constant_values=val)

  def pad1(a, val):
    return None if a is None else jnp.pad(a, (0, extra_groups * G), constant_values=val)

  adv = x.advantages
  adv = (pad1(adv, junk) if adv is not None and adv.ndim == 1 else pad2(adv, junk))
  return x.replace(
      logp_BT=pad2(x.logp_BT, -jnp.inf), mask_BT=pad2(x.mask_BT, 0.0),
      old_logp_BT=pad2(x.old_logp_BT, junk), ref_logp_BT=pad2(x.ref_logp_BT, -junk),
      teacher_logp_BT=pad2(x.teacher_logp_BT, junk),
      entropy_BT=pad2(x.entropy_BT, junk), rationale_mask_BT=pad2(x.rationale_mask_BT, 0.0),
      answer_mask_BT=pad2(x.answer_mask_BT, 0.0), rewards_B=pad1(x.rewards_B, 1.0),
      advantages=adv, resample_counts_B=pad1(x.resample_counts_B, 3.0))


def _value_and_grad(name, x):
  obj, cfg = OBJECTIVES[name], cfg_for(name)
  return jax.value_and_grad(lambda lp: obj.loss(x.replace(logp_BT=lp), cfg)[0])(x.logp_BT)


@pytest.mark.parametrize("name", NAMES)
@hypothesis.settings(max_examples=2, deadline=None, derandomize=True)
@hypothesis.example(extra_T=1, extra_groups=1, junk=jnp.inf)  # inf on every padded slot
@hypothesis.given(extra_T=st.sampled_from([1, 3]), extra_groups=st.integers(0, 1),
                  junk=st.sampled_from([0.0, 3.5, -1e4, 1e30, jnp.inf]))
def test_padding_never_changes_a_loss(name, extra_T, extra_groups, junk):
  x = make_batch(2, 5)
  base = prepared(name, x)
  l0, g0 = _value_and_grad(name, base)
  # Padding after prepare (row padding changes PAFT's random draws, so pad after it).
  padded = _pad(base, extra_T, extra_groups, junk)
  l1, g1 = _value_and_grad(name, padded)
  np.testing.assert_allclose(l1, l0, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(g1[:4, :5], g0, rtol=1e-6, atol=1e-7)
  assert np.all(np.asarray(g1)[:, 5:] == 0) and np.all(np.asarray(g1)[4:] == 0)
  # Token padding before prepare: advantages / counts / filters are unchanged too.
  pre = prepared(name, _pad(x, extra_T, 0, junk))
  l2, _ = _value_and_grad(name, pre)
  np.testing.assert_allclose(l2, l0, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_micro_batch_accumulation_is_exact_and_jit_matches(name):
  num_groups, T = 4, 6
  x = prepared(name, make_batch(num_groups, T, seed=1))
  obj, cfg = OBJECTIVES[name], cfg_for(name)
  feats = jnp.asarray(np.random.default_rng(2).standard_normal((num_groups * G, T)),
                      jnp.float32)
  params = jnp.full((T,), 0.1, jnp.float32)

  def fn(p, mb):
    xb, fb = mb
    # logp depends on shared params through per-row features (a stand-in forward pass).
    return obj.loss_terms(xb.replace(logp_BT=xb.logp_BT + 0.3 * jnp.tanh(fb * p[None, :])),
                          cfg)

  full_loss, full_m, full_g = accumulate_value_and_grad(fn, params, [(x, feats)])
  direct = jax.grad(lambda p: fn(p, (x, feats))[0].value)(params)
  np.testing.assert_allclose(full_g, direct, rtol=1e-5, atol=1e-7)
  for k in (2, 4):
    rows = num_groups * G // k
    mbs = [(jax.tree.map(lambda a, i=i: a[i * rows:(i + 1) * rows], x),
            feats[i * rows:(i + 1) * rows]) for i in range(k)]
    loss, mets, grads = accumulate_value_and_grad(fn, params, mbs)
    np.testing.assert_allclose(loss, full_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads, full_g, rtol=1e-5, atol=1e-7)
    mv, fv = metric_values(mets), metric_values(full_m)
    assert mv.keys() == fv.keys()
    for key in fv:
      np.testing.assert_allclose(mv[key], fv[key], rtol=1e-5, atol=1e-6, err_msg=key)
  jitted = jax.jit(obj.loss, static_argnums=1)(x, cfg)
  eager = obj.loss(x, cfg)
  np.testing.assert_allclose(jitted[0], eager[0], rtol=1e-6, atol=1e-7)


def test_clear_errors():
  x = make_batch(2, 5)
  grpo = OBJECTIVES["grpo"]
  with pytest.raises(ValueError, match="mask_BT has shape"):
    grpo.prepare(x.replace(mask_BT=x.mask_BT[:, :4]))
  with pytest.raises(ValueError, match="does not divide"):
    grpo.prepare(dataclasses.replace(x, group_size=3))
  with pytest.raises(ValueError, match="needs ObjectiveInputs.advantages"):
    grpo.loss(x)
  with pytest.raises(ValueError, match=r"advantages must have shape"):
    grpo.loss(x.replace(advantages=jnp.zeros(3)))
  with pytest.raises(TypeError, match="takes a GRPOConfig"):
    grpo.loss(x, OBJECTIVES["dapo"].config())
  with pytest.raises(TypeError, match="floating"):
    grpo.loss(x.replace(logp_BT=jnp.zeros((4, 5), jnp.int32), advantages=jnp.zeros(4)))
  with pytest.raises(ValueError, match="group_size"):
    OBJECTIVES["garl"].loss(dataclasses.replace(x, group_size=None))
  with pytest.raises(ValueError, match="does not divide"):
    OBJECTIVES["garl"].loss(dataclasses.replace(x, group_size=3))
  with pytest.raises(ValueError, match="q must lie"):
    OBJECTIVES["garl"].config(q=1.2)
  with pytest.raises(ValueError, match="unknown loss aggregation"):
    grpo.config(agg="sum")
  with pytest.raises(ValueError, match="needs ObjectiveInputs.rewards_B"):
    grpo.prepare(x.replace(rewards_B=None))
  # bf16 log-probs are upcast to float32 inside.
  xb = grpo.prepare(x)
  loss, _ = grpo.loss(xb.replace(logp_BT=xb.logp_BT.astype(jnp.bfloat16)))
  assert loss.dtype == jnp.float32
