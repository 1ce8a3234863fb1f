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


def _sgd_steps(tx, params, grads_seq):
  state = tx.init(params)
  for g in grads_seq:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_sgd_momentum_steps_are_the_closed_form():
  # Heavy ball: m1 = g1, p1 = p0 - lr g1; m2 = g2 + mu m1, p2 = p1 - lr m2.
  # Gradients are far below the clip norm, so clipping passes them unchanged.
  from reasoning_jax.training.steps import make_optimizer
  p0, g1, g2 = _tree(2), _tree(3), _tree(4)
  lr, mu = 0.05, 0.9
  tx = make_optimizer(lr, total_steps=10, optimizer="sgd", momentum=mu, grad_clip=1e6)
  p1 = jax.jit(lambda p, g: _sgd_steps(tx, p, [g]))(p0, g1)
  p2 = jax.jit(lambda p, a, b: _sgd_steps(tx, p, [a, b]))(p0, g1, g2)
  f64 = lambda t: jax.tree.map(lambda x: np.asarray(x, np.float64), t)  # noqa: E731
  P0, G1, G2 = f64(p0), f64(g1), f64(g2)
  want1 = jax.tree.map(lambda p, g: p - lr * g, P0, G1)
  want2 = jax.tree.map(lambda p, a, b: p - lr * a - lr * (b + mu * a), P0, G1, G2)
  # float32 rounding of a few multiply-adds on O(1) values: a few ulp of ~4.
  for got, want in ((p1, want1), (p2, want2)):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=0, atol=4e-6)


def test_sgd_keeps_the_gradient_scale_adam_removes():
  # The reason the Tsallis study runs SGD: scaling every gradient by c scales SGD's
  # step by c, while Adam's first step is lr * sign(g) whatever c (eps aside).
  from reasoning_jax.training.steps import make_optimizer
  p0 = _tree(5)
  g = jax.tree.map(lambda x: jnp.sign(x) * (1.0 + jnp.abs(x)), _tree(6))  # |g| >= 1
  sgd = make_optimizer(0.1, total_steps=1, optimizer="sgd", grad_clip=0.0)
  adam = make_optimizer(0.1, total_steps=1, grad_clip=0.0)
  def step(tx, c):  # the first update itself (no cancellation against p0)
    return tx.update(jax.tree.map(lambda x: c * x, g), tx.init(p0), p0)[0]
  for a, b in zip(jax.tree.leaves(step(sgd, 1e-3)), jax.tree.leaves(step(sgd, 1.0))):
    np.testing.assert_allclose(np.asarray(a) * 1e3, np.asarray(b), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(step(adam, 1e-3)), jax.tree.leaves(step(adam, 1.0))):
    # Adam's first step is lr g / (|g| + eps): eps / |c g| <= 1e-5 here.
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5)


def test_sgd_clips_by_global_norm_first():
  from reasoning_jax.training.steps import make_optimizer
  p0, g = _tree(7), _tree(8)
  norm = _norm64(g)
  tx = make_optimizer(1.0, total_steps=1, optimizer="sgd", grad_clip=1.0)
  delta = tx.update(g, tx.init(p0), p0)[0]
  np.testing.assert_allclose(_norm64(delta), 1.0, rtol=1e-5)  # lr 1 x the clipped norm
  with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
    make_optimizer(1.0, total_steps=1, optimizer="lion")
