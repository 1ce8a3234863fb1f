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
