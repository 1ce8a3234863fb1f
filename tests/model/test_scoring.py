"""Chunked token log-probabilities equal the log-softmax of full logits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax import model as rjm


@pytest.mark.parametrize("chunk", [1, 4, 7, 64])
def test_chunked_logprobs_equal_full_log_softmax(chunk):
  cfg = rjm.preset("tiny").replace(final_softcap=10.0)
  params = rjm.init_params(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (3, 13), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(13, dtype=jnp.int32)[None], (3, 13))
  logits = rjm.forward(params, tokens, pos, cfg)[0] / 0.7
  logp_full = jax.nn.log_softmax(logits, -1)
  want = jnp.take_along_axis(logp_full[:, :-1], tokens[:, 1:, None], -1)[..., 0]
  want_ent = -jnp.sum(jnp.exp(logp_full) * logp_full, -1)[:, :-1]
  logp, ent = jax.jit(lambda p, t, q: rjm.token_logprobs(p, cfg, t, q, chunk=chunk,
                                                          temperature=0.7))(params, tokens, pos)
  assert logp.shape == (3, 13) and np.all(np.asarray(logp[:, 0]) == 0)
  np.testing.assert_allclose(logp[:, 1:], want, atol=1e-5, rtol=0)
  np.testing.assert_allclose(ent[:, 1:], want_ent, atol=1e-5, rtol=0)
  only, none = rjm.token_logprobs(params, cfg, tokens, pos, chunk=chunk, temperature=0.7,
                                  with_entropy=False)
  assert none is None
  # Without the entropy the program fuses differently. XLA:CPU keeps the float32 sums'
  # order (equal to ~1 ulp); a GPU reorders them: 1.4e-6 near -7.2 on an H200
  # (docs/benchmarks.md), inside the 1e-5 against the full log-softmax above.
  atol = 1e-6 if jax.default_backend() == "cpu" else 1e-5
  np.testing.assert_allclose(only, logp, atol=atol, rtol=0)


@pytest.mark.parametrize("chunk", [3, 64])
def test_gradient_equals_autodiff_of_full_log_softmax(chunk):
  """The hand-written backward of the log-softmax statistics (log-probabilities and
  entropies, at a temperature, through a final soft cap), chunked with recompute (3)
  or in one chunk that keeps its logits (64), equals plain autodiff of the same loss
  written on the full logits."""
  cfg = rjm.preset("tiny").replace(final_softcap=10.0)
  params = rjm.init_params(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(2), (2, 9), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(9, dtype=jnp.int32)[None], (2, 9))
  w_lp = jax.random.normal(jax.random.key(3), (2, 8))
  w_ent = jax.random.normal(jax.random.key(4), (2, 8))

  def loss(p):
    logp, ent = rjm.token_logprobs(p, cfg, tokens, pos, chunk=chunk, temperature=0.7)
    return jnp.sum(logp[:, 1:] * w_lp) + jnp.sum(ent[:, 1:] * w_ent)

  def reference(p):
    logp_full = jax.nn.log_softmax(rjm.forward(p, tokens, pos, cfg)[0] / 0.7, -1)[:, :-1]
    logp = jnp.take_along_axis(logp_full, tokens[:, 1:, None], -1)[..., 0]
    ent = -jnp.sum(jnp.exp(logp_full) * logp_full, -1)
    return jnp.sum(logp * w_lp) + jnp.sum(ent * w_ent)

  got, want = jax.grad(loss)(params), jax.grad(reference)(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert np.abs(b).max() > 0
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk", [3, 64])
def test_first_scores_only_the_tail_and_equals_the_full_path(chunk):
  """`first` (the RL completion layout: left-padded prompt columns, then the scored
  ones) gives exact zeros before it and, from it on, the full path's log-probabilities,
  entropies and gradients: the hidden states still run over the whole sequence, only
  the vocabulary projection and softmax skip the prompt. Tolerance 1e-6: the same
  float32 ops over fewer rows, which XLA may block differently (a few ulps of |logp|
  ~ 7), far below any masked-vs-unmasked difference (a dropped prompt token moves
  these by ~1e-1)."""
  cfg = rjm.preset("tiny").replace(final_softcap=10.0)
  params = rjm.init_params(cfg, jax.random.key(0))
  B, T, first = 3, 12, 5
  tokens = jax.random.randint(jax.random.key(5), (B, T), 0, cfg.vocab_size)
  n = np.array([5, 3, 4])  # prompt lengths, left-padded to 5 columns
  pos = np.arange(T)[None] - (5 - n)[:, None]
  pos = jnp.asarray(np.where(pos < 0, -1, pos), jnp.int32)
  w = jax.random.normal(jax.random.key(6), (B, T)) * (jnp.arange(T)[None] >= first)

  def run(p, f):
    return rjm.token_logprobs(p, cfg, tokens, pos, chunk=chunk, temperature=0.7, first=f)

  (lp0, e0), (lp1, e1) = run(params, 0), run(params, first)
  assert lp1.shape == (B, T) and e1.shape == (B, T)
  assert np.all(np.asarray(lp1[:, :first]) == 0) and np.all(np.asarray(e1[:, :first]) == 0)
  np.testing.assert_allclose(lp1[:, first:], lp0[:, first:], atol=1e-6, rtol=0)
  np.testing.assert_allclose(e1[:, first:], e0[:, first:], atol=1e-6, rtol=0)

  def loss(p, f):
    lp, ent = run(p, f)
    return jnp.sum(lp * w) + 0.1 * jnp.sum(ent * w)

  g0, g1 = jax.grad(loss)(params, 0), jax.grad(loss)(params, first)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    assert np.abs(b).max() > 0
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
