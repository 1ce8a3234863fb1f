"""The CPU bf16 matrix-vector kernel (`model.cpu_matvec`) and the decode step it runs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax import model as rjm
from reasoning_jax.model import cpu_matvec
from reasoning_jax.model.cache import load

from tests.model.test_forward import MIXED, _params

pytestmark = pytest.mark.skipif(not cpu_matvec.available(),
                                reason="numba kernel unavailable")


def _bf16_bits(rng, shape):
  """Random bf16 values (as uint16 bits) of mixed sign and magnitude."""
  x = rng.standard_normal(shape).astype(np.float32) * np.exp2(rng.integers(-4, 4, shape))
  return np.asarray(jnp.asarray(x, jnp.bfloat16).view(jnp.uint16))


def _as_f64(bits):
  return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def _check(y, x, w):
  """y equals float64 x @ w up to float32 summation: every product of a bf16 pair is
  exact in float32, so |error| <= K * 2^-24 * sum_k |x_k w_kn| (a rigorous bound)."""
  exact = x @ w
  bound = x.shape[1] * 2.0 ** -24 * (np.abs(x) @ np.abs(w))
  assert y.dtype == np.float32 and y.shape == exact.shape
  assert np.all(np.abs(y - exact) <= bound), np.max(np.abs(y - exact) - bound)
  assert np.abs(exact).max() > 1


# K not a multiple of the vector width; 4100 x 1100 x 2 bytes is over two 4 MB chunks,
# so the work is split between the calling thread and XLA's pool.
@pytest.mark.parametrize("m,k,n", [(1, 37, 5), (3, 37, 129), (1, 1100, 4100),
                                   (2, 4100, 1100)])
@pytest.mark.parametrize("transposed", [False, True])
def test_matvec_equals_float64(m, k, n, transposed):
  rng = np.random.default_rng(m * k + n)
  L, layer = 3, 1
  w = _bf16_bits(rng, (L, n, k) if transposed else (L, k, n))
  x = _bf16_bits(rng, (m, k))
  fn = cpu_matvec.matvec_t if transposed else cpu_matvec.matvec
  y = jax.jit(fn)(jnp.asarray(x).view(jnp.bfloat16), jnp.asarray(w), jnp.int32(layer))
  wl = _as_f64(w[layer])
  _check(np.asarray(y), _as_f64(x), wl.T if transposed else wl)
  # bf16 weights are read as they are (no bits needed), to the same bits.
  y16 = jax.jit(fn)(jnp.asarray(x).view(jnp.bfloat16), jnp.asarray(w).view(jnp.bfloat16),
                    layer)
  np.testing.assert_array_equal(np.asarray(y16), np.asarray(y))


def test_matvec_in_a_loop_reads_each_layer_and_clamps_the_index():
  rng = np.random.default_rng(0)
  L, K, N = 4, 24, 40
  w = _bf16_bits(rng, (L, K, N))
  x = _bf16_bits(rng, (1, K))
  xs = jnp.asarray(x).view(jnp.bfloat16)

  def body(_, l):
    return None, cpu_matvec.matvec(xs, jnp.asarray(w), l)[0]

  _, ys = jax.jit(lambda: jax.lax.scan(body, None, jnp.arange(L + 2)))()
  for i, y in enumerate(np.asarray(ys)):
    _check(y[None], _as_f64(x), _as_f64(w[min(i, L - 1)]))  # L, L+1 clamp to L-1


def test_bad_input_names_the_problem():
  x = jnp.zeros((1, 8), jnp.float32)
  with pytest.raises(ValueError, match="same K"):
    cpu_matvec.matvec(x, jnp.zeros((2, 9, 4), jnp.uint16), 0)
  with pytest.raises(ValueError, match=r"\[L, N, K\]"):
    cpu_matvec.matvec_t(x, jnp.zeros((2, 8, 4), jnp.uint16), 0)
  with pytest.raises(ValueError, match="bfloat16"):
    cpu_matvec.matvec(x, jnp.zeros((2, 8, 4), jnp.float32), 0)


def _decode_logits(params, cfg, cpu):
  """Prefill 5 tokens of one row, then one decode step; that step's logits."""
  tokens = jax.random.randint(jax.random.key(4), (1, 6), 0, cfg.vocab_size)
  pos = jnp.arange(6, dtype=jnp.int32)[None]
  step = jax.jit(rjm.forward, static_argnums=3, static_argnames="cpu_matvec")
  cache = rjm.init_cache(cfg, batch=1, length=8)
  _, cache = step(params, tokens[:, :5], pos[:, :5], cfg, cache, cpu_matvec=cpu)
  return np.asarray(step(params, tokens[:, 5:], pos[:, 5:], cfg, cache,
                         cpu_matvec=cpu)[0])


def test_kernel_decode_step_computes_the_layer_loop(monkeypatch):
  """With `cpu_matvec`, every layer product and the head go through the kernel's
  entry points with the right stack, layer, layout and bias. Checked exactly by
  standing in for the kernel with XLA's own product of the same operands (the forward
  without the kernel computes the same einsums)."""
  cfg = MIXED.replace(dtype="bfloat16")  # untied head, q/k/v biases, post norms
  params = rjm.decode_params(_params(MIXED), cfg, cpu_matvec=True)
  assert params["head_t"].shape == (1, cfg.vocab_size, cfg.d_model)
  want = _decode_logits(params, cfg, cpu=False)
  calls = []

  def xla(x, w, layer, transposed):
    calls.append(transposed)
    w = load(w)[layer]
    eq = "mk,nk->mn" if transposed else "mk,kn->mn"
    return jnp.einsum(eq, x, w.reshape(w.shape[0], -1) if not transposed else w,
                      preferred_element_type=jnp.float32)

  monkeypatch.setattr(cpu_matvec, "matvec", lambda x, w, l: xla(x, w, l, False))
  monkeypatch.setattr(cpu_matvec, "matvec_t", lambda x, w, l: xla(x, w, l, True))
  got = _decode_logits(params, cfg, cpu=True)
  # Traced once: 7 layer products (q, k, v, o, gate, up, down) and the head.
  assert sorted(calls) == [False] * 7 + [True]
  # Every bf16 activation is identical; the float32 logits differ by at most a few
  # ulps (measured 2 ulps: XLA fuses the head's [1, D] and [1, 1, D] products and the
  # soft cap differently). A wrong layer, layout or bias moves them by ~1e-1.
  np.testing.assert_allclose(got, want, rtol=2.0 ** -21, atol=0)
  assert np.abs(want).max() > 1
