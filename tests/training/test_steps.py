"""The optimizer's global-norm clipping (`steps.global_norm`, `steps.clip_by_global_norm`)
against optax's and a float64 reference, and the jitted parameter init of a run."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from reasoning_jax.training.steps import clip_by_global_norm, global_norm


def _tree(seed, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  shapes = {"embed": (48, 32), "layers": {"wq": (2, 32, 2, 16), "norm": (2, 32)},
            "final_norm": (32,), "scalar": ()}
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), dtype), shapes,
                      is_leaf=lambda s: isinstance(s, tuple))


def _norm64(tree):
  return np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(tree)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_global_norm_is_the_float64_norm(dtype):
  tree = _tree(0, dtype)
  got = jax.jit(global_norm)(tree)
  assert got.dtype == jnp.float32 and got.shape == ()
  # Squares of bf16 values are exact in float32; only the float32 sums round.
  np.testing.assert_allclose(float(got), _norm64(tree), rtol=2e-7)
  if dtype == jnp.float32:
    np.testing.assert_allclose(float(got), float(optax.tree.norm(tree)), rtol=2e-6)


@pytest.mark.parametrize("max_norm", [0.5, 1e4])  # clipped, and passed unchanged
def test_clip_equals_optax_clip_by_global_norm(max_norm):
  tree = _tree(1)
  ours, state = jax.jit(clip_by_global_norm(max_norm).update)(tree, optax.EmptyState())
  want, _ = optax.clip_by_global_norm(max_norm).update(tree, optax.EmptyState())
  assert state == optax.EmptyState()
  for a, b, x in zip(jax.tree.leaves(ours), jax.tree.leaves(want), jax.tree.leaves(tree)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=0)
    if max_norm > 1e3:
      np.testing.assert_array_equal(np.asarray(a), np.asarray(x))
  if max_norm < 1:
    np.testing.assert_allclose(_norm64(ours), max_norm, rtol=2e-6)


@pytest.mark.parametrize("mode", ["fast", "optimized"])
def test_jitted_init_gives_the_eager_init_bits(mode):
  from reasoning_jax import model as rjm
  from reasoning_jax.training.setup import init_params
  cfg = rjm.preset("tiny", vocab_size=40)
  key = jax.random.key(3)
  got, want = init_params(cfg, key, mode), rjm.init_params(cfg, key)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
