"""`cpu_matvec.rms_norm`, `rope` and `rope_qkv` (`model/_cpu_glue.py`) against float64 references
with the model's bf16 roundings; their wiring into the decode step is checked in
`test_cpu_matvec.test_kernel_decode_at_batch_4_matches_xla`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax.model import cpu_matvec

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not cpu_matvec.available(),
    reason="the numba CPU kernels run on CPU only, where numba loads")


def _bf16(x64):
  """float64 values rounded to bf16 (nearest even), back as float64."""
  return np.asarray(np.asarray(x64, np.float32).astype(jnp.bfloat16), np.float64)


def _rand_bf16(rng, shape, scale=1.0):
  return jnp.asarray(rng.standard_normal(shape) * scale, jnp.bfloat16)


def _assert_bf16_of(got, exact, bound):
  """`got` (bf16) is `exact`'s bf16 rounding, except where `exact` lies within `bound`
  (the float32 computation's error) of the midpoint between two bf16 neighbours."""
  got = np.asarray(got, np.float64)
  want = _bf16(exact)
  off = got != want
  assert off.mean() < 0.01, off.mean()
  mid = (got[off] + want[off]) / 2
  np.testing.assert_array_less(np.abs(exact[off] - mid), np.broadcast_to(bound, off.shape)[off])


@pytest.mark.parametrize("m, d", [(1, 64), (16, 576)])
def test_rms_norm_rounds_as_the_model(m, d):
  """x = bf16(bf16(h / rms(h)) * w), rms from the float32 mean of squares plus eps;
  with a residual, first h = bf16(h + bf16(y)) (exact in float32: two bf16 values)."""
  rng = np.random.default_rng(d)
  h = _rand_bf16(rng, (m, d), 3.0)
  w = _rand_bf16(rng, (d,))
  y = jnp.asarray(rng.standard_normal((m, d)), jnp.float32)
  eps = 1e-5
  new_h, x_add = jax.jit(cpu_matvec.rms_norm, static_argnums=2)(h, w, eps, y)
  h64 = np.asarray(h, np.float64)
  want_h = _bf16(h64 + _bf16(np.asarray(y, np.float64)))
  np.testing.assert_array_equal(np.asarray(new_h, np.float64), want_h)
  for hh, got in ((h64, cpu_matvec.rms_norm(h, w, eps)), (want_h, x_add)):
    r = 1 / np.sqrt((hh * hh).mean(-1, keepdims=True) + eps)
    # float32's sum of squares and rsqrt: a few ulps of the scaled value.
    y1 = _bf16(hh * r)
    _assert_bf16_of(got, y1 * np.asarray(w, np.float64), 2.0 ** -24 * np.abs(y1))
  assert got.dtype == jnp.bfloat16 and got.shape == (m, d)


def test_rope_rounds_as_the_model():
  """Each value rounded to bf16, then x1 c - x2 s and x2 c + x1 s per half in float32
  (error below 2^-23 of |x1 c| + |x2 s|), rounded to bf16."""
  rng = np.random.default_rng(3)
  M, n, H = 5, 3, 64
  x = jnp.asarray(rng.standard_normal((M, n, H)) * 4, jnp.float32)
  ang = rng.uniform(0, 50, (M, H // 2))
  cos = jnp.asarray(np.cos(np.concatenate([ang, ang], -1)), jnp.float32)
  sin = jnp.asarray(np.sin(np.concatenate([ang, ang], -1)), jnp.float32)
  got = jax.jit(cpu_matvec.rope)(x, cos, sin)
  assert got.dtype == jnp.bfloat16 and got.shape == (M, n, H)
  xb = _bf16(np.asarray(x, np.float64))
  c, s = (np.asarray(a, np.float64)[:, None] for a in (cos, sin))
  x1, x2 = xb[..., :H // 2], xb[..., H // 2:]
  terms = [(x1 * c[..., :H // 2], -x2 * s[..., :H // 2]),
           (x2 * c[..., H // 2:], x1 * s[..., H // 2:])]
  exact = np.concatenate([a + b for a, b in terms], -1)
  bound = np.concatenate([2.0 ** -23 * (np.abs(a) + np.abs(b)) for a, b in terms], -1)
  _assert_bf16_of(got, exact, bound)


def test_rope_qkv_is_rope_of_the_fused_products_heads():
  """`rope_qkv` of a fused `[M, (n_q + 2 n_kv) H]` product: q and k are `rope` of their
  column ranges bit for bit, v those columns rounded to bf16."""
  rng = np.random.default_rng(4)
  M, nq, nk, H = 4, 3, 1, 32
  qkv = jnp.asarray(rng.standard_normal((M, (nq + 2 * nk) * H)) * 4, jnp.float32)
  ang = rng.uniform(0, 50, (M, H // 2))
  cos = jnp.asarray(np.cos(np.concatenate([ang, ang], -1)), jnp.float32)
  sin = jnp.asarray(np.sin(np.concatenate([ang, ang], -1)), jnp.float32)
  q, k, v = jax.jit(cpu_matvec.rope_qkv, static_argnums=(3, 4))(qkv, cos, sin, nq, nk)
  assert [(a.shape, a.dtype) for a in (q, k, v)] == [
      ((M, nq, H), jnp.bfloat16), ((M, nk, H), jnp.bfloat16), ((M, nk, H), jnp.bfloat16)]
  cols = np.split(np.asarray(qkv), [nq * H, (nq + nk) * H], -1)
  bits = lambda a: np.asarray(a).view(np.uint16)  # noqa: E731
  for got, x, n in ((q, cols[0], nq), (k, cols[1], nk)):
    np.testing.assert_array_equal(bits(got), bits(cpu_matvec.rope(
        jnp.asarray(x.reshape(M, n, H)), cos, sin)))
  np.testing.assert_array_equal(bits(v), bits(jnp.asarray(cols[2]).astype(jnp.bfloat16)
                                              .reshape(M, nk, H)))
  with pytest.raises(ValueError, match=r"\(n_q \+ 2 n_kv\) H\] for n_q=3, n_kv=2"):
    cpu_matvec.rope_qkv(qkv, cos, sin, nq, 2)


def test_glue_rejects_bad_shapes():
  h = jnp.zeros((2, 8), jnp.bfloat16)
  with pytest.raises(ValueError, match=r"bf16 \[M, D\]"):
    cpu_matvec.rms_norm(h.astype(jnp.float32), jnp.zeros(8), 1e-6)
  with pytest.raises(ValueError, match=r"bf16 \[M, D\]"):
    cpu_matvec.rms_norm(h, jnp.zeros(8), 1e-6, jnp.zeros((2, 7)))
  with pytest.raises(ValueError, match=r"\[M, n, H\] with H even"):
    cpu_matvec.rope(jnp.zeros((2, 3, 5)), jnp.zeros((2, 5)), jnp.zeros((2, 5)))
