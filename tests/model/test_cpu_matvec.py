"""The CPU bf16 matrix-vector kernel (`model.cpu_matvec`) and the decode step it runs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax import model as rjm
from reasoning_jax.model import cpu_matvec
from reasoning_jax.model.cache import load

from tests.model.test_forward import MIXED, _params

# The kernel is an XLA:CPU custom call: it exists only for arrays on the CPU backend
# (on a GPU host `decode_plan` never chooses it; under JAX_PLATFORMS=cuda there is no
# CPU backend to place these tests' arrays on).
pytestmark = [
    pytest.mark.skipif(not cpu_matvec.available(), reason="numba kernel unavailable"),
    pytest.mark.skipif(jax.default_backend() != "cpu",
                       reason="a CPU custom call: the default backend is not the CPU"),
]


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


def test_concurrent_products_are_right():
  """Two programs multiplying at once from two threads: one owns the mailbox (and its
  spinning helpers), the other runs alone on its own job; both stay exact."""
  import threading  # noqa: PLC0415
  rng = np.random.default_rng(7)
  L, K, N = 4, 1100, 2100  # 4.6 MB a layer: more than one chunk
  w = [_bf16_bits(rng, (L, K, N)), _bf16_bits(rng, (L, N, K))]
  x = [_bf16_bits(rng, (1, K)), _bf16_bits(rng, (1, K))]

  def run(fn, w, x):
    def body(_, l):
      return None, fn(x, w, l)
    return jax.lax.scan(body, None, jnp.arange(L))[1]

  progs = [jax.jit(lambda w, x: run(cpu_matvec.matvec, w, x)),
           jax.jit(lambda w, x: run(cpu_matvec.matvec_t, w, x))]
  args = [(jnp.asarray(w[i]), jnp.asarray(x[i]).view(jnp.bfloat16)) for i in range(2)]
  for prog, a in zip(progs, args):
    jax.block_until_ready(prog(*a))  # compiled before the race
  results = [[], []]

  def worker(i):
    for _ in range(15):
      results[i].append(np.asarray(progs[i](*args[i])))

  threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  for i, transposed in enumerate((False, True)):
    assert len(results[i]) == 15
    for ys in results[i]:
      for layer in range(L):
        wl = _as_f64(w[i][layer])
        _check(ys[layer], _as_f64(x[i]), wl.T if transposed else wl)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.uint16, jnp.float16])
def test_take_copies_rows_bit_for_bit_and_clamps(dtype):
  rng = np.random.default_rng(1)
  table = jnp.asarray(_bf16_bits(rng, (5, 3, 4))).view(dtype)
  take = jax.jit(cpu_matvec.take)
  got = take(table, jnp.int32(2))
  assert got.dtype == dtype and got.shape == (3, 4)
  np.testing.assert_array_equal(np.asarray(got).view(np.uint16),
                                np.asarray(table[2]).view(np.uint16))
  idx = jnp.asarray([4, 0, 9, -3, 1])
  got = take(table, idx)
  assert got.shape == (5, 3, 4)
  np.testing.assert_array_equal(np.asarray(got).view(np.uint16),
                                np.asarray(table)[[4, 0, 4, 0, 1]].view(np.uint16))


def test_take_bad_input_names_the_problem():
  with pytest.raises(ValueError, match="16-bit"):
    cpu_matvec.take(jnp.zeros((4, 2), jnp.float32), 0)
  with pytest.raises(ValueError, match="integer"):
    cpu_matvec.take(jnp.zeros((4, 2), jnp.bfloat16), jnp.zeros((2, 2), jnp.int32))
  with pytest.raises(ValueError, match="integer"):
    cpu_matvec.take(jnp.zeros((4, 2), jnp.bfloat16), 1.0)


def test_prefill_takes_bf16_layers_in_the_loop_to_the_same_bits(monkeypatch):
  """With `cpu_matvec`, a prefill (more rows than the kernel takes) reads its layer
  matrices and embedding rows through `take` from the bf16 stacks, and computes the
  same bits as the prefill over the stored bits with XLA's own slicing."""
  cfg = MIXED.replace(dtype="bfloat16")
  raw = _params(MIXED)
  tokens = jax.random.randint(jax.random.key(5), (2, 5), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(5, dtype=jnp.int32), (2, 5))
  taken = []
  real_take = cpu_matvec.take
  # 10 rows: a prefill only where the kernel takes one row (no AVX-512 BF16).
  monkeypatch.setattr(cpu_matvec, "max_rows", lambda: 1)
  monkeypatch.setattr(cpu_matvec, "take",
                      lambda t, i: taken.append(t.shape) or real_take(t, i))

  def prefill(params, cpu):
    cache = rjm.init_cache(cfg, batch=2, length=8)
    return rjm.forward_hidden(params, tokens, pos, cfg, cache, cpu_matvec=cpu)

  h1, c1 = jax.jit(prefill, static_argnums=1)(
      rjm.decode_params(raw, cfg, cpu_matvec=True), True)
  h0, c0 = jax.jit(prefill, static_argnums=1)(rjm.decode_params(raw, cfg), False)
  # The embedding and the 7 layer matrices (q, k, v, o, gate, up, down).
  assert len(taken) == 8 and taken[0] == (cfg.vocab_size, cfg.d_model)
  for a, b in [(h1, h0), (c1.k_LBKSH, c0.k_LBKSH), (c1.v_LBKSH, c0.v_LBKSH)]:
    np.testing.assert_array_equal(np.asarray(a).view(np.uint16),
                                  np.asarray(b).view(np.uint16))
  assert np.abs(np.asarray(h0, np.float32)).max() > 0.1


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
  # One row per product (the prefill through `take`), as without AVX-512 BF16; the
  # GEMM kernels' path is `test_kernel_decode_at_batch_4_matches_xla`.
  monkeypatch.setattr(cpu_matvec, "max_rows", lambda: 1)
  got = _decode_logits(params, cfg, cpu=True)
  # Traced once: 7 layer products (q, k, v, o, gate, up, down) and the head.
  assert sorted(calls) == [False] * 7 + [True]
  # Every bf16 activation is identical; the float32 logits differ by at most a few
  # ulps (measured 2 ulps: XLA fuses the head's [1, D] and [1, 1, D] products and the
  # soft cap differently). A wrong layer, layout or bias moves them by ~1e-1.
  np.testing.assert_allclose(got, want, rtol=2.0 ** -21, atol=0)
  assert np.abs(want).max() > 1


needs_gemm = pytest.mark.skipif(
    not cpu_matvec.available() or cpu_matvec.max_rows() < 2,
    reason="the AVX-512 BF16 GEMM kernels do not run on this CPU")


# Row counts that are and are not whole row blocks (8 and 4), shapes the kernels take
# (K even / a multiple of 32, N a multiple of 32 / 4), products split over threads.
@needs_gemm
@pytest.mark.parametrize("m,k,n", [(2, 64, 96), (16, 576, 1536), (19, 96, 128),
                                   (64, 1536, 576)])
@pytest.mark.parametrize("transposed", [False, True])
def test_gemm_kernels_equal_float64(m, k, n, transposed):
  """More than one row runs `_gemm_ir`'s vdpbf16ps kernels: still exact bf16 products
  summed in float32 (the rigorous bound of `_check`)."""
  assert cpu_matvec.max_rows() == cpu_matvec.GEMM_MAX_ROWS
  rng = np.random.default_rng(m + k + n)
  w = _bf16_bits(rng, (2, n, k) if transposed else (2, k, n))
  x = _bf16_bits(rng, (m, k))
  fn = cpu_matvec.matvec_t if transposed else cpu_matvec.matvec
  y = jax.jit(fn)(jnp.asarray(x).view(jnp.bfloat16), jnp.asarray(w), jnp.int32(1))
  _check(np.asarray(y), _as_f64(x), _as_f64(w[1]).T if transposed else _as_f64(w[1]))


# One and several row blocks of each kp kernel (8 and 16 rows), rows padded to one,
# one strip (N = 16) to many, products split over threads.
@needs_gemm
@pytest.mark.parametrize("m", [1, 2, 8, 9, 16, 64])
@pytest.mark.parametrize("k,n", [(64, 96), (576, 1536), (96, 16)])
def test_packed_products_equal_the_stacks_bit_for_bit(m, k, n):
  """`pack` lays each layer out as `[N / 16, K / 2, 16, 2]` (element [s, j, c, t] is
  w[2j + t, 16s + c]), and `matvec` on it gives exact bf16 products summed in float32
  (`_check`'s bound), above one row bit for bit the kn kernel's on the stack (the same
  vdpbf16ps sums in the same order, from another layout)."""
  rng = np.random.default_rng(7 * m + k + n)
  w = _bf16_bits(rng, (2, k, n))
  x = jnp.asarray(_bf16_bits(rng, (m, k))).view(jnp.bfloat16)
  wp = jax.jit(cpu_matvec.pack)(jnp.asarray(w).view(jnp.bfloat16))
  layout = w.reshape(2, k // 2, 2, n // 16, 16).transpose(0, 3, 1, 4, 2)
  np.testing.assert_array_equal(np.asarray(wp).view(np.uint16), layout)
  y = np.asarray(jax.jit(cpu_matvec.matvec)(x, wp, jnp.int32(1)))
  _check(y, _as_f64(np.asarray(x).view(np.uint16)), _as_f64(w[1]))
  if m > 1 and n % 32 == 0:  # the stack's kn kernel takes whole strips of 32
    stacked = jax.jit(cpu_matvec.matvec)(x, jnp.asarray(w), jnp.int32(1))
    np.testing.assert_array_equal(y, np.asarray(stacked))


@needs_gemm
@pytest.mark.parametrize("m", [5, 40, 512])
def test_packed_product_of_kept_rows_only(m):
  """With `keep_M`, the kept rows are the full product's bit for bit (gathered into
  whole row blocks, multiplied, scattered back) and the others exactly 0; none kept
  gives all zeros."""
  rng = np.random.default_rng(m)
  w = jnp.asarray(_bf16_bits(rng, (2, 64, 96))).view(jnp.bfloat16)
  wp = cpu_matvec.pack(w)
  x = jnp.asarray(_bf16_bits(rng, (m, 64))).view(jnp.bfloat16)
  keep = rng.random(m) < 0.6
  full = np.asarray(jax.jit(cpu_matvec.matvec)(x, wp, jnp.int32(1)))
  got = np.asarray(jax.jit(cpu_matvec.matvec)(x, wp, jnp.int32(1), jnp.asarray(keep)))
  np.testing.assert_array_equal(got[keep], full[keep])
  np.testing.assert_array_equal(got[~keep], 0.0)
  assert np.abs(full[~keep]).min() > 0 or not (~keep).any()
  none = cpu_matvec.matvec(x, wp, 1, jnp.zeros(m, bool))
  np.testing.assert_array_equal(np.asarray(none), 0.0)
  with pytest.raises(ValueError, match="keep_M"):
    cpu_matvec.matvec(x, wp, 1, jnp.ones(m + 1, bool))
  with pytest.raises(ValueError, match="keep_M"):
    cpu_matvec.matvec(x, w, 1, jnp.ones(m, bool))  # not packed


@needs_gemm
def test_pack_bad_input_names_the_problem():
  w = jnp.zeros((2, 64, 48), jnp.bfloat16)
  for bad in (jnp.zeros((2, 64, 40), jnp.bfloat16), jnp.zeros((2, 63, 48), jnp.bfloat16),
              jnp.zeros((2, 64, 48), jnp.float32)):
    with pytest.raises(ValueError, match="multiple of 16"):
      cpu_matvec.pack(bad)
  wp = cpu_matvec.pack(w)
  with pytest.raises(ValueError, match="packed w"):
    cpu_matvec.matvec(jnp.zeros((4, 62)), wp, 0)  # K of x is not the matrix's
  with pytest.raises(ValueError, match="packed w"):
    cpu_matvec.matvec(jnp.zeros((4, 64)), wp.reshape(2, 3, 32, 32, 1), 0)


@pytest.mark.parametrize("m,v", [(1, 37), (3, 1000), (16, 49152), (5, 49157)])
def test_logsumexp_equals_float64(m, v):
  rng = np.random.default_rng(v)
  x = (rng.standard_normal((m, v)) * rng.uniform(0.5, 8, (m, 1))
       + rng.uniform(-30, 30, (m, 1))).astype(np.float32)
  y = np.asarray(jax.jit(cpu_matvec.logsumexp)(x))
  x64 = x.astype(np.float64)
  top = x64.max(-1)
  exact = top + np.log(np.exp(x64 - top[:, None]).sum(-1))
  # lse = max + log(sum): rounding the log and then the add in float32 costs up to
  # 2^-24 (log(sum) + |lse|); the float32 sum of exps (and the polynomial exp) add
  # ~2e-7 relative to the sum, i.e. ~2e-7 in the log.
  assert y.dtype == np.float32 and y.shape == (m,)
  rounding = 2.0 ** -24 * ((exact - top) + np.abs(exact))
  np.testing.assert_array_less(np.abs(y - exact), rounding + 5e-7)


def test_logsumexp_of_rows_with_infinities_and_nans_is_xlas():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((6, 100)).astype(np.float32)
  x[0] = -np.inf                      # an empty row: -inf
  x[1, 5] = np.inf                    # +inf wins
  x[2, 7] = np.nan                    # NaN propagates
  x[3, ::2] = -np.inf                 # masked-out half: finite
  x[4, 3], x[4, 9] = np.inf, np.nan   # NaN beats +inf
  x[5, 1], x[5, 2] = np.inf, -np.inf
  y = np.asarray(jax.jit(cpu_matvec.logsumexp)(x))
  np.testing.assert_array_equal(y[[0, 1, 2, 4, 5]], [-np.inf, np.inf, np.nan, np.nan, np.inf])
  np.testing.assert_allclose(y, np.asarray(jax.nn.logsumexp(x, axis=-1)), rtol=3e-7)
  with pytest.raises(ValueError, match=r"must be \[M, V\]"):
    cpu_matvec.logsumexp(jnp.zeros((2, 3, 4)))


def _bf16_as_f64(x):
  return np.asarray(jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32), np.float64)


@pytest.mark.parametrize("m, f", [(1, 40), (5, 1000), (16, 1536)])
def test_silu_mul_is_the_bf16_rounding_of_float64(m, f):
  """bf16(silu(g) * u) of the bf16-rounded inputs: the kernel's float32 value is within
  5e-7 relative of the float64 one (exp polynomial 2e-7, a division and two products
  at 2^-24 each), so its bf16 rounding is float64's except where float64's value lies
  that close to the midpoint between two bf16 neighbours."""
  rng = np.random.default_rng(f + m)
  g = (rng.standard_normal((m, f)) * rng.uniform(0.1, 30, (m, 1))).astype(np.float32)
  u = rng.standard_normal((m, f)).astype(np.float32)
  y = np.asarray(jax.jit(cpu_matvec.silu_mul)(g, u))
  assert y.dtype == jnp.bfloat16 and y.shape == (m, f)
  gb, ub = _bf16_as_f64(g), _bf16_as_f64(u)
  exact = gb / (1 + np.exp(-gb)) * ub
  want = _bf16_as_f64(exact.astype(np.float32))  # float32 first: exact in range here
  got = y.astype(np.float64)
  # Below ~1e-30 (gates under -60): float32's exp underflows; the kernel gives ~0.
  tiny = np.abs(exact) < 1e-30
  assert (np.abs(got[tiny]) < 1e-30).all()
  off = (got != want) & ~tiny
  assert off.mean() < 0.01, off.mean()
  mid = (got[off] + want[off]) / 2  # adjacent bf16 values: the rounding boundary
  np.testing.assert_array_less(np.abs(exact[off] - mid), 5e-7 * np.abs(exact[off]) + 1e-38)


def test_silu_mul_propagates_nan_and_rejects_bad_shapes():
  g = np.array([[np.nan, np.inf, 3.0, -2.0, 0.0, -100.0]], np.float32)
  u = np.array([[1.0, 2.0, np.nan, 1.5, 4.0, 1.0]], np.float32)
  y = np.asarray(cpu_matvec.silu_mul(g, u)).astype(np.float64)
  ref = np.asarray(jax.nn.silu(g.astype(np.float64)) * u)
  np.testing.assert_array_equal(y[0, [0, 1, 2, 5]], [np.nan, np.inf, np.nan, 0.0])
  np.testing.assert_allclose(y[0, 3:5], ref[0, 3:5], rtol=2.0 ** -8)
  with pytest.raises(ValueError, match=r"must both be \[M, F\]"):
    cpu_matvec.silu_mul(jnp.zeros((2, 3)), jnp.zeros((3, 2)))
  with pytest.raises(ValueError, match=r"fused gate/up \[M, 2F\] alone"):
    cpu_matvec.silu_mul(jnp.zeros((2, 7)))


@pytest.mark.parametrize("m, f", [(1, 40), (16, 1536)])
def test_silu_mul_of_a_fused_product_reads_gate_then_up(m, f):
  """One fused `[M, 2F]` gate/up product (rows 2F apart) gives the two-operand call's
  bits, and swapping its halves changes them (gate and up are not mixed up)."""
  rng = np.random.default_rng(m)
  g, u = (rng.standard_normal((m, f)).astype(np.float32) * 3 for _ in range(2))
  fused = jnp.asarray(np.concatenate([g, u], -1))
  got = np.asarray(jax.jit(cpu_matvec.silu_mul)(fused)).view(np.uint16)
  np.testing.assert_array_equal(got, np.asarray(cpu_matvec.silu_mul(g, u)).view(np.uint16))
  swapped = np.asarray(cpu_matvec.silu_mul(u, g)).view(np.uint16)
  assert (got != swapped).mean() > 0.5


@needs_gemm
@pytest.mark.parametrize("cap", [0.0, 2.0])
def test_attend_equals_float64_attention(cap):
  """Decode attention over a layer of a bf16 cache: the float64 softmax of the scaled,
  capped, masked scores, weighted sum of values. The kernel rounds the probabilities
  to bf16 (as the model's attention does), so each output may move by 2^-8 of
  sum_s p_s |v_s| on top of float32 rounding; a row with no slot left is uniform, as
  XLA's softmax over all-MASKED scores is."""
  rng = np.random.default_rng(7)
  B, K, G, H, S, L, scale = 3, 2, 3, 32, 12, 2, 0.4
  q = _bf16_bits(rng, (B, K * G, H))
  k, v = _bf16_bits(rng, (L, B, K, S, H)), _bf16_bits(rng, (L, B, K, S, H))
  mask = rng.random((B, S)) < 0.6
  mask[2] = False
  # Row 1's slots after its last unmasked one (6), past the kernels' unit of 4, are
  # not read: NaN there (0 x NaN would be NaN) leaves its output finite.
  mask[1, 6:] = [True] + [False] * (S - 7)
  k, v = k.copy(), v.copy()
  k[1, 1, :, 8:] = v[1, 1, :, 8:] = 0x7FC0
  q16 = jnp.asarray(q).view(jnp.bfloat16)
  out = cpu_matvec.attend(q16.astype(jnp.float32), jnp.asarray(k), jnp.asarray(v),
                          jnp.int32(5), mask, scale, cap)  # layer 5 is clamped to 1
  qf, kf, vf = (_as_f64(q).reshape(B, K, G, H), np.nan_to_num(_as_f64(k[1])),
                np.nan_to_num(_as_f64(v[1])))
  s = np.einsum("bkgh,bksh->bkgs", qf, kf) * scale
  if cap:
    s = np.tanh(s / cap) * cap
  s = np.where(mask[:, None, None], s, -1e30)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  want = np.einsum("bkgs,bksh->bkgh", p, vf).reshape(B, K * G, H)
  bound = ((2.0 ** -8 + S * 2.0 ** -23) * np.einsum("bkgs,bksh->bkgh", p, np.abs(vf))
           ).reshape(B, K * G, H) + 1e-6
  got = np.asarray(out)
  assert got.shape == (B, K * G, H) and got.dtype == np.float32
  assert np.all(np.abs(got - want) <= bound), np.max(np.abs(got - want) - bound)
  uniform = float(jnp.asarray(1 / S, jnp.bfloat16))  # 1/12 rounded to bf16, as XLA's
  np.testing.assert_allclose(got[2], uniform * vf[2].sum(1).repeat(G, 0), rtol=0,
                             atol=1e-6)
  # bf16 queries: the same sums, rounded to bf16 in the kernel (no conversion ops).
  out16 = jax.jit(cpu_matvec.attend, static_argnums=(5, 6))(
      q16, jnp.asarray(k), jnp.asarray(v), jnp.int32(5), mask, scale, cap)
  assert out16.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out16).view(np.uint16),
                                np.asarray(out.astype(jnp.bfloat16)).view(np.uint16))
  with pytest.raises(ValueError, match="do not fit"):
    cpu_matvec.attend(jnp.asarray(q[:, :5]).view(jnp.bfloat16), jnp.asarray(k),
                      jnp.asarray(v), 0, mask, scale)


# MIXED with widths the kernels take (multiples of 32): local and global layers,
# soft caps, q/k/v biases and norms all on the kernel path.
WIDE = MIXED.replace(vocab_size=128, d_model=64, head_dim=32, ffw_dim=96, dtype="bfloat16")
# Llama's norms and SiLU (with q/k/v biases): the step's norms, residual adds, RoPE and
# activation run in `cpu_matvec` too.
LLAMA_WIDE = rjm.preset("tiny").replace(vocab_size=128, head_dim=32, ffw_dim=96,
                                        qkv_bias=True, dtype="bfloat16")


@needs_gemm
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("cfg", [WIDE, LLAMA_WIDE], ids=["mixed", "llama"])
def test_kernel_decode_at_batch_4_matches_xla(monkeypatch, packed, cfg):
  """A ragged batch of 4 rows (20 prefill rows, then a step of 4) runs every product
  in the GEMM kernels and the step's attention in `attend`, and gives XLA's logits:
  the kernels sum float32 in another order (measured max difference 9.5e-7 at logits
  up to 4.5; the bound is 1e-3); a wrong layer, mask or position moves them by ~1.
  With the weights also packed (`decode_params(packed=True)`), every product and the
  head read the packed forms (q/k/v and gate/up packed as one matrix each), and the
  real tokens' hidden states are the stacks' bit for bit, prefill and step (the
  packed prefill skips the padding tokens' rows). For Llama's form the step's norms and RoPE (of
  the fused q/k/v when packed) and every SiLU run in the kernels."""
  WIDE = cfg  # noqa: N806 (the name the body was written for)
  raw = _params(WIDE.replace(dtype="float32"))
  params = rjm.decode_params(raw, WIDE, cpu_matvec=True, packed=packed)
  if packed:
    assert sorted(params["packed"]) == ["w_down", "w_gate_up", "wo", "wqkv"]
    assert params["head_p"].shape == (1, WIDE.vocab_size // 16, WIDE.d_model // 2, 16, 2)
  calls = {"attend": 0, "matvec": 0, "rms_norm": 0, "rope": 0, "rope_qkv": 0,
           "silu_mul": 0}
  for name in calls:
    real = getattr(cpu_matvec, name)
    monkeypatch.setattr(cpu_matvec, name, lambda *a, _r=real, _n=name, **k: (
        calls.__setitem__(_n, calls[_n] + 1), _r(*a, **k))[1])
  tokens = jax.random.randint(jax.random.key(4), (4, 6), 0, WIDE.vocab_size)
  pos = jnp.asarray(np.arange(6)[None] - np.array([[0], [2], [1], [4]]), jnp.int32)
  step = jax.jit(rjm.forward, static_argnums=3, static_argnames="cpu_matvec")

  def run(p, cpu):
    cache = rjm.init_cache(WIDE, batch=4, length=8)
    a, cache = step(p, tokens[:, :5], pos[:, :5], WIDE, cache, cpu_matvec=cpu)
    b, _ = step(p, tokens[:, 5:], pos[:, 5:], WIDE, cache, cpu_matvec=cpu)
    return np.concatenate([np.asarray(a), np.asarray(b)], 1)

  got = run(params, True)
  # Traced once each: the prefill's and the step's 7 layer products (packed: 4, and
  # their heads), the step's attention (the prefill's 5 tokens attend in XLA).
  # Llama: the step's layer has 2 norms (each adding a residual; the last layer's MLP
  # output is added by one more after the loop) and RoPE 2 (packed: 1 fused); SiLU 1+1.
  llama = cfg is LLAMA_WIDE
  assert calls == {"attend": 1, "matvec": 10 if packed else 14, "rms_norm": 3 * llama,
                   "rope": 2 * llama * (not packed), "rope_qkv": llama * packed,
                   "silu_mul": 2 * llama}
  if packed:  # the hidden states (the heads sum in other orders), prefill and step
    hidden = jax.jit(rjm.forward_hidden, static_argnums=3, static_argnames="cpu_matvec")
    h = []
    for p in (params, rjm.decode_params(raw, WIDE, cpu_matvec=True)):
      a, cache = hidden(p, tokens[:, :5], pos[:, :5], WIDE,
                        rjm.init_cache(WIDE, batch=4, length=8), cpu_matvec=True)
      b, _ = hidden(p, tokens[:, 5:], pos[:, 5:], WIDE, cache, cpu_matvec=True)
      h.append(np.concatenate([np.asarray(a), np.asarray(b)], 1))
    # The packed prefill skips padding tokens' rows (their products come out 0).
    np.testing.assert_array_equal(h[0][np.asarray(pos >= 0)], h[1][np.asarray(pos >= 0)])
    assert (h[0][np.asarray(pos < 0)] != h[1][np.asarray(pos < 0)]).any()
  want = run(rjm.decode_params(raw, WIDE), False)
  real = pos >= 0  # padding queries attend to nothing real: their logits are noise
  err = np.abs(got - want)[np.asarray(real)]
  # Llama's step: the model rounds the residual h + o to bf16, and so does
  # `cpu_matvec.rms_norm`; XLA keeps it in float32 (excess precision allowed), so a
  # hidden value may differ by a bf16 ulp (measured max logit difference 0.046).
  assert err.max() < (0.1 if llama else 1e-3), err.max()
  assert np.abs(want).max() > 2


@needs_gemm
def test_packed_prefill_past_max_rows_runs_in_the_kernel(monkeypatch):
  """A prefill of more rows than `max_rows()` runs its products in the packed kernel
  when every layer matrix is packed (the same sums as within the limit, bit for bit),
  and takes the stacks' slices into XLA's products when they are not."""
  raw = _params(WIDE.replace(dtype="float32"))
  packed = rjm.decode_params(raw, WIDE, cpu_matvec=True, packed=True)
  stacked = rjm.decode_params(raw, WIDE, cpu_matvec=True)
  tokens = jax.random.randint(jax.random.key(5), (4, 5), 0, WIDE.vocab_size)
  pos = jnp.asarray(np.arange(5)[None] - np.array([[0], [2], [1], [4]]), jnp.int32)
  calls = []
  real = cpu_matvec.matvec
  monkeypatch.setattr(cpu_matvec, "matvec", lambda *a, **k: calls.append(1) or real(*a, **k))

  def prefill(p):  # a fresh jit each time: max_rows() is read while tracing
    fn = jax.jit(lambda p, t, q, c: rjm.forward_hidden(p, t, q, WIDE, c, cpu_matvec=True))
    return np.asarray(fn(p, tokens, pos, rjm.init_cache(WIDE, batch=4, length=8))[0])

  within = prefill(packed)  # 20 rows <= 64
  assert len(calls) == 4  # q/k/v, o, gate/up, down: traced once in the layer scan
  monkeypatch.setattr(cpu_matvec, "GEMM_MAX_ROWS", 8)
  assert cpu_matvec.max_rows() == 8
  calls.clear()
  np.testing.assert_array_equal(prefill(packed), within)
  assert len(calls) == 4
  calls.clear()
  sliced = prefill(stacked)
  assert not calls
  # XLA's products sum in another order; rounded to bf16 per layer, they agree here.
  real_rows = np.asarray(pos >= 0)
  err = np.abs(sliced.astype(np.float32) - within.astype(np.float32))[real_rows]
  assert err.max() <= 0.02 * np.abs(within.astype(np.float32)).max(), err.max()
