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
  np.testing.assert_allclose(only, logp, atol=1e-6, rtol=0)


def test_chunked_gradient_equals_full_gradient():
  cfg = rjm.preset("tiny")
  params = rjm.init_params(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(2), (2, 9), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(9, dtype=jnp.int32)[None], (2, 9))

  def loss(p, chunk):
    return rjm.token_logprobs(p, cfg, tokens, pos, chunk=chunk)[0].sum()

  g1 = jax.grad(loss)(params, 3)
  g2 = jax.grad(loss)(params, 64)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
