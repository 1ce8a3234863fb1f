"""Mixed precision and rematerialisation: `dense`'s custom VJP, f32 master weights,
and the remat policies (all must leave values and gradients unchanged in float32)."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax import model as rjm
from reasoning_jax.model import attention as attention_lib
from reasoning_jax.model.matmul import dense, dense_transposed

F32 = jnp.float32


def _grads(f, *args):
  return jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a).astype(F32))),
                  argnums=tuple(range(len(args))))(*args)


def _close(a, b):
  # Flattened 2-D GEMMs sum in a different order than the einsum: float32 rounding,
  # bounded relative to the array's scale (sin' amplifies the output's rounding).
  assert np.max(np.abs(np.asarray(a) - np.asarray(b))) <= 1e-5 * np.max(np.abs(b))


def test_dense_equals_einsum_and_its_autodiff_in_float32():
  """Multi-axis contraction (the attention output projection `btnh,nhd->btd`), a
  bias, and the transposed (tied-embedding) head: values and both gradients equal
  plain einsum autodiff to float32 rounding. The reference asks for HIGHEST precision:
  at the default a float32 einsum runs as TF32 on a GPU (measured on an H100: 6.8e-3
  off), while `dense` multiplies float32 exactly on every backend."""
  hi = jax.lax.Precision.HIGHEST
  k = jax.random.split(jax.random.key(0), 5)
  x = jax.random.normal(k[0], (3, 5, 4, 8))
  w = jax.random.normal(k[1], (4, 8, 6))
  b = jax.random.normal(k[2], (6,))
  ref = lambda x, w, b: jnp.einsum("btnh,nhd->btd", x, w, precision=hi) + b[None, None]
  got = lambda x, w, b: dense(x, w, 2, b)
  np.testing.assert_allclose(got(x, w, b), ref(x, w, b), rtol=1e-6, atol=1e-6)
  for g, r in zip(_grads(got, x, w, b), _grads(ref, x, w, b)):
    _close(g, r)
  h = jax.random.normal(k[3], (2, 7, 8))
  e = jax.random.normal(k[4], (11, 8))
  ref_t = lambda h, e: jnp.einsum("btd,vd->btv", h, e, precision=hi)
  np.testing.assert_allclose(dense_transposed(h, e), ref_t(h, e), rtol=1e-6, atol=1e-6)
  for g, r in zip(_grads(dense_transposed, h, e), _grads(ref_t, h, e)):
    _close(g, r)


def test_bf16_dense_gradients_accumulate_in_float32_and_keep_the_weight_dtype():
  """bf16 activations with a float32 master weight: the weight gradient comes back in
  float32 and equals the float32 product of the bf16-rounded operands (x and the
  cotangent cast to bf16, exactly as the forward casts its operands), accumulated in
  float32 over a long contraction (4096 rows) where bf16 accumulation would be off
  by ~1e-2 relative."""
  k = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(k[0], (4096, 16)).astype(jnp.bfloat16)
  w = jax.random.normal(k[1], (16, 8))  # float32 master
  g = jax.random.normal(k[2], (4096, 8))
  _, vjp = jax.vjp(lambda x, w: dense(x, w), x, w)
  dx, dw = vjp(g.astype(jnp.bfloat16))
  assert dw.dtype == F32 and dx.dtype == jnp.bfloat16
  gb = g.astype(jnp.bfloat16).astype(F32)
  want_dw = np.asarray(x.astype(F32)).T.astype(np.float64) @ np.asarray(gb, np.float64)
  np.testing.assert_allclose(dw, want_dw, rtol=1e-5, atol=1e-4)
  want_dx = np.asarray(gb, np.float64) @ np.asarray(
      w.astype(jnp.bfloat16).astype(F32), np.float64).T
  # dx is rounded once to bf16 at the end (relative 2^-8).
  np.testing.assert_allclose(np.asarray(dx.astype(F32)), want_dx, rtol=2 ** -8, atol=1e-2)


def _dot_operand_dtypes(hlo: str) -> list[tuple[str, ...]]:
  """The element types of every dot's operands in an optimised HLO module's text."""
  types = dict(re.findall(r"%?([\w.\-]+): (\w+)\[", hlo))   # computation parameters
  types.update(re.findall(r"%([\w.\-]+) = (\w+)\[", hlo))   # instructions
  return [tuple(types[o.strip().lstrip("%")] for o in ops.split(","))
          for ops in re.findall(r" dot\(([^)]*)\)", hlo)]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's GEMM selection")
def test_bf16_weight_gradients_compile_to_bf16_gemms():
  """Every product of a bf16 `dense`/`dense_transposed` backward stays a bf16 GEMM.

  XLA:CPU folds a plain transpose of the token-major activations back into the
  dot, which its bf16 GEMM cannot run, and then converts both operands to float32
  (the weight gradients of a bf16 train step ran at float32 speed until
  `_rows_to_cols`). The compiled program must contain no float32 dot."""
  x = jnp.ones((4, 16, 32), jnp.bfloat16)
  w = jnp.ones((32, 48), F32)  # float32 master weights, cast to bf16 in the product
  e = jnp.ones((40, 32), F32)
  loss = lambda x, w, e: (jnp.sum(dense(x, w).astype(F32) ** 2)  # noqa: E731
                          + jnp.sum(dense_transposed(x, e, out_dtype=F32) ** 2))
  hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, w, e).compile().as_text()
  dtypes = _dot_operand_dtypes(hlo)
  assert len(dtypes) == 6, hlo  # two forward products, dx and dw of each
  assert all(t == ("bf16", "bf16") for t in dtypes), dtypes


def _attention_case(dtype):
  """q, k, v of a small grouped-query case with two padding queries, and the loss
  `sum(w * attention)` for a given attention function."""
  k = jax.random.split(jax.random.key(3), 4)
  B, T, N, K, H = 2, 5, 4, 2, 8
  q = jax.random.normal(k[0], (B, T, N, H)).astype(dtype)
  kk = jax.random.normal(k[1], (B, K, T, H)).astype(dtype)
  v = jax.random.normal(k[2], (B, K, T, H)).astype(dtype)
  pos = jnp.array([[0, 1, 2, 3, 4], [-1, -1, 0, 1, 2]])
  mask = (pos[:, None, :] >= 0) & (pos[:, None, :] <= pos[:, :, None])
  w = jax.random.normal(k[3], (B, T, N, H))
  cfg = rjm.ModelConfig(vocab_size=8, d_model=N * H, n_layers=1, n_heads=N,
                        n_kv_heads=K, head_dim=H, ffw_dim=8, attn_scale=0.3)

  def loss(attend):
    return lambda q, kk, v: jnp.sum(w * attend(q, kk, v, mask, cfg).astype(F32))
  return (q, kk, v), loss


def _attention_by_autodiff(q, k, v, mask, cfg):
  B, T, N, H = q.shape
  K = k.shape[1]
  q5 = q.reshape(B, T, K, N // K, H).transpose(0, 2, 3, 1, 4)
  o = attention_lib._attend_autodiff(q5, k, v, mask, cfg.query_scale, 0.0)
  return o.transpose(0, 3, 1, 2, 4).reshape(B, T, N, H).astype(q.dtype)


def test_attention_backward_equals_autodiff_in_float32():
  """The hand-written attention backward equals autodiff of the same forward in
  float32, fully masked (padding) query rows included; the loss (forward) is
  bit-identical."""
  args, loss = _attention_case(F32)
  assert loss(attention_lib.xla_attention)(*args) == loss(_attention_by_autodiff)(*args)
  grads = jax.grad(loss(attention_lib.xla_attention), argnums=(0, 1, 2))(*args)
  want = jax.grad(loss(_attention_by_autodiff), argnums=(0, 1, 2))(*args)
  for g, r in zip(grads, want):
    _close(g, r)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's GEMM selection")
def test_bf16_attention_backward_compiles_to_bf16_gemms():
  """In bf16 every attention product, forward and backward, is a bf16 GEMM (autodiff
  ran four of them in float32), and the gradients stay within bf16 rounding of
  autodiff's."""
  args, loss = _attention_case(jnp.bfloat16)
  grad = jax.jit(jax.grad(loss(attention_lib.xla_attention), argnums=(0, 1, 2)))
  dtypes = _dot_operand_dtypes(grad.lower(*args).compile().as_text())
  assert len(dtypes) == 5, dtypes  # scores; dp, dq, dk, dv (the output is linear)
  assert all(t == ("bf16", "bf16") for t in dtypes), dtypes
  want = jax.grad(loss(_attention_by_autodiff), argnums=(0, 1, 2))(*args)
  for g, r in zip(grad(*args), want):
    g, r = np.asarray(g.astype(F32)), np.asarray(r.astype(F32))
    assert np.max(np.abs(g - r)) <= 2 ** -7 * np.max(np.abs(r))


def _loss(params, cfg, tokens, positions):
  logp, _ = rjm.token_logprobs(params, cfg, tokens, positions, chunk=4)
  return jnp.sum(logp)


@pytest.mark.parametrize("policy", ["layer", "dots"])
def test_remat_policies_leave_the_loss_and_gradients_unchanged(policy):
  """Remat only changes what is stored for the backward pass, never the math."""
  cfg = rjm.preset("ref_tiny").replace(n_layers=2, d_model=32, n_heads=2, n_kv_heads=1,
                                       head_dim=16, ffw_dim=64, vocab_size=40)
  params = rjm.init_params(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, 40)
  positions = jnp.broadcast_to(jnp.arange(9), (2, 9)) - jnp.array([[0], [2]])
  l0, g0 = jax.value_and_grad(_loss)(params, cfg, tokens, positions)
  l1, g1 = jax.value_and_grad(_loss)(params, cfg.replace(remat=policy), tokens, positions)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  # Recomputation lets XLA fuse (and so round) the recomputed forward differently:
  # float32 rounding of sums over ~100 terms, bounded relative to each leaf's scale.
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b)), policy


def test_float32_master_weights_with_bf16_compute():
  """param_dtype float32 + dtype bfloat16: params (and so grads and Adam state) stay
  float32, the forward computes in bf16 and matches casting the weights to bf16
  first (the cast happens inside each matmul)."""
  base = rjm.preset("ref_tiny").replace(n_layers=2, d_model=32, n_heads=2, n_kv_heads=1,
                                        head_dim=16, ffw_dim=64, vocab_size=40)
  mixed = base.replace(dtype="bfloat16", param_dtype="float32")
  params = rjm.init_params(mixed, jax.random.key(0))
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(F32)}
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, 40)
  positions = jnp.broadcast_to(jnp.arange(9), (2, 9))
  logits, _ = rjm.forward(params, tokens, positions, mixed)
  bf = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  want, _ = rjm.forward(bf, tokens, positions, base.replace(dtype="bfloat16"))
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(want))
  grads = jax.grad(_loss)(params, mixed, tokens, positions)
  assert {x.dtype for x in jax.tree.leaves(grads)} == {jnp.dtype(F32)}


def test_bad_precision_settings_are_named():
  with pytest.raises(ValueError, match="remat 'full'"):
    rjm.preset("tiny", remat="full")
  with pytest.raises(ValueError, match="param_dtype 'float16'"):
    rjm.preset("tiny", param_dtype="float16")


def test_bf16_cache_is_stored_as_bits_and_reads_back_exactly():
  """A bf16 KV cache lives as uint16 bit patterns (in-place updates on XLA:CPU); the
  keys read back are exactly the bf16 keys written: a prefill through the cache gives
  the same logits as the cache-free forward, and decoding the next token through the
  cache equals the cache-free forward of the whole sequence (bf16 rounding only)."""
  cfg = rjm.preset("ref_tiny", dtype="bfloat16").replace(
      n_layers=2, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, ffw_dim=64,
      vocab_size=40)
  params = rjm.init_params(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, 40)
  positions = jnp.broadcast_to(jnp.arange(7), (2, 7))
  cache = rjm.init_cache(cfg, 2, 12)
  assert cache.k_LBKSH.dtype == jnp.uint16
  pre, cache = rjm.forward(params, tokens[:, :6], positions[:, :6], cfg, cache)
  assert cache.k_LBKSH.dtype == jnp.uint16
  full, _ = rjm.forward(params, tokens, positions, cfg)
  np.testing.assert_array_equal(np.asarray(pre), np.asarray(full[:, :6]))
  step, _ = rjm.forward(params, tokens[:, 6:], positions[:, 6:], cfg, cache)
  np.testing.assert_allclose(np.asarray(step[:, 0]), np.asarray(full[:, 6]),
                             rtol=0, atol=0.05 * float(jnp.max(jnp.abs(full))))


def _dot_precisions(jaxpr) -> list:
  """The `precision` of every dot_general in a jaxpr, sub-jaxprs (scan bodies, custom
  VJPs, remat) included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(eqn.params["precision"])
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
        if hasattr(inner, "eqns"):
          found += _dot_precisions(inner)
  return found


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_float32_matmuls_ask_for_highest_precision(dtype):
  """Every matmul of a float32 forward and its gradient asks for HIGHEST precision;
  bf16 ones keep the backend default. Why a structural test: at the default precision
  XLA runs float32 matmuls as TF32 on NVIDIA GPUs and as one bf16 pass on TPUs, which
  CPU values cannot show (XLA:CPU multiplies float32 exactly either way). Measured on
  an H100 before the fix: logits 1.3e-2 off transformers, sampler logprobs 1e-3 off a
  full forward pass."""
  cfg = rjm.preset("tiny", dtype=dtype)
  params = rjm.init_params(cfg, jax.random.key(0))
  tokens = jnp.zeros((2, 5), jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(5, dtype=jnp.int32), (2, 5))
  loss = lambda p: jnp.sum(rjm.forward(p, tokens, pos, cfg)[0])  # noqa: E731
  precisions = _dot_precisions(jax.make_jaxpr(jax.value_and_grad(loss))(params).jaxpr)
  # Forward: q, k, v, o, gate, up, down, two attention products, the head; backward
  # adds two per matmul. The count guards against a walk that misses the scan body.
  assert len(precisions) >= 3 * 10
  hi = jax.lax.Precision.HIGHEST
  if dtype == "float32":
    # The master weights are float32, so the scale_last column sums are float32 too.
    assert all(p is not None and tuple(p) == (hi, hi) for p in precisions), precisions
  else:
    bf16_dots = [p for p in precisions if p is None]
    assert len(bf16_dots) >= 3 * 10, precisions
