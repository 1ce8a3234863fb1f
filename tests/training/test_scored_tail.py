"""The RL update and scoring with `scored_tail` (logits only over the completion
layout's sampled columns) give the results of the full path: same loss, metrics,
gradient norm and updated params, same scores where any loss mask can be."""
import jax
import numpy as np
import pytest

from reasoning_jax import model as rjm
from reasoning_jax.objectives import ObjectiveInputs
from reasoning_jax.objectives.registry import get_objective
from reasoning_jax.training.steps import SeqBatch, jit_steps, make_optimizer


def _batch(cfg, B=4, P=6, N=5):
  """Completion layout: prompts of 6, 4, 6, 3 tokens left-padded to P columns, then N
  sampled columns with rows ending at lengths 5, 3, 5, 1."""
  rng = np.random.default_rng(0)
  T = P + N
  tokens = rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32)
  plen, lens = np.array([6, 4, 6, 3]), np.array([5, 3, 5, 1])
  pos = np.arange(T)[None] - (P - plen)[:, None]
  pos = np.where(pos < 0, -1, pos).astype(np.int32)
  mask = ((np.arange(T)[None] >= P) & (np.arange(T)[None] < P + lens[:, None])
          ).astype(np.float32)
  samp = np.where(mask > 0, -rng.uniform(0.5, 3.0, (B, T)), 0).astype(np.float32)
  inputs = ObjectiveInputs(logp_BT=np.zeros((B, T), np.float32), mask_BT=mask,
                           rewards_B=np.array([1.0, 0.0, 0.5, 0.0], np.float32),
                           group_size=2)
  return SeqBatch(tokens, pos, inputs, samp), N


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_scored_tail_update_equals_the_full_update(micro_batches):
  """GRPO with a KL reference (scored by the same program), one AdamW update. Budget
  1e-6 absolute on log-probabilities and losses: the same float32 ops over fewer rows
  (XLA may block the vocabulary matmul differently); updated params to 1e-7 (an Adam
  step of lr 1e-3 moves each by ~1e-3, so a different gradient would show ~1e-4)."""
  cfg = rjm.preset("tiny", vocab_size=64, d_model=32, n_layers=2, n_heads=2,
                   n_kv_heads=1, head_dim=16, ffw_dim=64)
  params = rjm.init_params(cfg, jax.random.key(0))
  ref = jax.tree.map(lambda x: x * 1.01, params)
  tx = make_optimizer(1e-3, total_steps=10)
  obj = get_objective("grpo")
  ocfg = obj.config_cls(kl_coef=0.04)
  batch, N = _batch(cfg)
  out = {}
  for tail in (0, N):
    _, rl, score = jit_steps(cfg, tx, obj, ocfg, micro_batches, chunk=4, scored_tail=tail)
    ref_logp, ent = score(ref, batch, 1.0)
    inputs = obj.prepare(batch.inputs.replace(ref_logp_BT=ref_logp), ocfg, None)
    p = jax.tree.map(lambda x: x.copy(), params)
    new, _, m = rl(p, tx.init(p), SeqBatch(batch.tokens_BT, batch.positions_BT, inputs,
                                           batch.sampler_logp_BT), 1.0)
    out[tail] = (np.asarray(ref_logp), np.asarray(ent), jax.tree.map(np.asarray, new), m)
  (lp0, e0, p0, m0), (lp1, e1, p1, m1) = out[0], out[N]
  T = lp0.shape[1]
  assert np.all(lp1[:, :T - N] == 0) and np.all(e1[:, :T - N] == 0)
  assert np.abs(lp0[:, :T - N]).max() > 0.1  # the full path did score the prompt
  np.testing.assert_allclose(lp1[:, T - N:], lp0[:, T - N:], atol=1e-6, rtol=0)
  np.testing.assert_allclose(e1[:, T - N:], e0[:, T - N:], atol=1e-6, rtol=0)
  assert m0["loss/finite"] == 1.0 and abs(float(m0["loss/total"])) > 0
  for k in m0:
    np.testing.assert_allclose(m1[k], m0[k], atol=1e-6, rtol=1e-5, err_msg=k)
  moved = max(np.abs(a - np.asarray(b)).max()
              for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(params)))
  assert moved > 1e-4
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p0)):
    np.testing.assert_allclose(a, b, atol=1e-7, rtol=0)
