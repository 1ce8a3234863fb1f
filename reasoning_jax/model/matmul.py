"""Dense projections with float32 accumulation in both passes (mixed precision).

Every weight matmul of the model goes through `dense`. Two things make it fast on
CPUs and TPUs alike, measured in `benchmarks/train_step.py` (docs/benchmarks.md):

- In the backward pass tokens are flattened to one row axis (`[B, T, D] ->
  [B*T, D]`) and multi-axis weights to a matrix, so both gradients are plain 2-D
  GEMMs. XLA:CPU's einsum over two contracting axes (the weight gradient of a
  `btd,df` einsum contracts over b and t) does not reach the fast GEMM path:
  flattening halved that gradient's time. The forward keeps the einsum, so its
  values (and their rounding on any mesh) are exactly the plain einsum's.
- A custom VJP keeps the backward matmuls in the compute dtype with float32
  accumulation. Autodiff of `einsum(x_bf16, w_bf16, preferred_element_type=f32)`
  transposes it into float32-cotangent x bf16-operand products, which run as float32
  GEMMs (AMX/MXU bf16 units idle). Here the cotangent is cast to the compute dtype
  first, exactly what the forward did to its operands, and both gradients accumulate
  in float32. The weight gradient is returned in the weight's own dtype, so float32
  master weights get a float32 gradient (never rounded through bf16).

In float32 the result and both gradients equal plain autodiff of the einsum.

Float32 operands are multiplied at `Precision.HIGHEST` (`matmul_precision`): at the
default precision XLA runs a float32 matmul as TF32 on NVIDIA GPUs and as one bf16
pass on TPUs, so a float32 model would silently compute with ~1e-3 relative error
(measured on an H100: logits off by up to 1.3e-2 from transformers, which keeps
float32 matmuls exact; sampler logprobs off by 1e-3 from a full forward pass).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

F32 = jnp.float32
# The name `dense` gives its outputs (`jax.ad_checkpoint.checkpoint_name`).
DENSE = "dense"


def matmul_precision(dtype) -> jax.lax.Precision | None:
  """The precision for a matmul whose operands are `dtype`: HIGHEST for float32 (a
  true float32 product on every backend), None (the backend default) otherwise.

  bf16 operands are exact products in any mode (with float32 accumulation), so only
  float32 needs asking; on CPU float32 is always exact, so CPU results are unchanged.
  """
  return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == F32 else None


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _mm(x, w, n_in: int, transpose_w: bool, out_dtype):
  """x's last `n_in` axes contracted with w's first `n_in` (with w's last axis when
  `transpose_w`, n_in = 1), in x's dtype with float32 accumulation."""
  # jnp.einsum (not a hand-built dot_general) so the forward lowers exactly as the
  # model's einsums always did: same HLO, same rounding on every mesh.
  y = jnp.einsum(_equation(x.ndim, w.ndim, n_in, transpose_w), x, w.astype(x.dtype),
                 preferred_element_type=F32, precision=matmul_precision(x.dtype))
  return y.astype(out_dtype or x.dtype)


def _equation(x_ndim: int, w_ndim: int, n_in: int, transpose_w: bool) -> str:
  """The einsum of `_mm`, e.g. "abc,cd->abd" or (transposed) "abc,dc->abd"."""
  letters = "abcdefghijklmnopqrstuvwxyz"
  lead = letters[:x_ndim - n_in]
  ins = letters[x_ndim - n_in:x_ndim]
  outs = letters[x_ndim:x_ndim + w_ndim - n_in]
  w_sub = outs + ins if transpose_w else ins + outs
  return f"{lead}{ins},{w_sub}->{lead}{outs}"


def _mm_fwd(x, w, n_in, transpose_w, out_dtype):
  return _mm(x, w, n_in, transpose_w, out_dtype), (x, w)


def _mm_bwd(n_in, transpose_w, out_dtype, res, g):
  # The forward stays the einsum above (so its rounding, sharded or not, is the plain
  # einsum's); the backward runs on 2-D views: [M, K] activations, [K, F] weights.
  x, w = res
  cd = x.dtype
  k = math.prod(x.shape[x.ndim - n_in:])
  x2 = x.reshape(-1, k)
  g2 = g.astype(cd).reshape(x2.shape[0], -1)
  wc = w.astype(cd)
  hp = matmul_precision(cd)
  if transpose_w:  # w [F, K]
    dx = jnp.einsum("nf,fk->nk", g2, wc, preferred_element_type=F32, precision=hp)
    dw = jnp.einsum("fn,nk->fk", _rows_to_cols(g2), x2,
                    preferred_element_type=F32, precision=hp)
  else:            # w [*in, *out] viewed as [K, F]
    w2 = wc.reshape(k, -1)
    dx = jnp.einsum("nf,kf->nk", g2, w2, preferred_element_type=F32, precision=hp)
    dw = jnp.einsum("kn,nf->kf", _rows_to_cols(x2), g2,
                    preferred_element_type=F32, precision=hp)
  return dx.astype(cd).reshape(x.shape), dw.astype(w.dtype).reshape(w.shape)


def _rows_to_cols(a_NK: jax.Array) -> jax.Array:
  """`a.T` as a contiguous `[K, N]` array, so the weight gradient is a plain GEMM.

  Why: a weight gradient contracts over the token axis, the first axis of both
  operands. XLA:CPU's bf16 GEMM (YNNPACK) takes no operand contracted on its first
  axis, and a plain `a.T` is folded back into the dot's dimension numbers (or into
  the operand's layout), so XLA runs the product as float32 Eigen GEMM after
  converting both operands: every weight gradient of a bf16 train step ran at
  float32 speed. Transposing through a unit axis is not folded: the copy is
  materialised (a fraction of a millisecond) and the GEMM stays bf16
  (`[576, 2048] x [2048, 1536]`: 10.6 -> 5.8 ms, benchmarks/train_step.py for the
  whole step). The values are the same products summed in float32.
  """
  n, k = a_NK.shape
  return a_NK.reshape(n, k, 1).transpose(2, 1, 0).reshape(k, n)


_mm.defvjp(_mm_fwd, _mm_bwd)


class WeightOp:
  """A weight that is not a plain array (a base weight with LoRA adapters, a quantized
  weight): `dense` hands the product to its `apply`, so the forward has one call site
  per projection whatever the weight holds. Subclasses are pytrees (so scans slice
  them like arrays) and provide `shape` (the weight's logical `[*in, *out]`) and
  `astype` (the compute-dtype cast of `params.decode_params`)."""

  shape: tuple[int, ...]

  def apply(self, x: jax.Array, n_in: int, b: jax.Array | None, out_dtype) -> jax.Array:
    """`dense(x, self, n_in, b, out_dtype=out_dtype)`."""
    raise NotImplementedError

  def astype(self, dtype) -> "WeightOp":
    """This weight with its floating-point parts cast to `dtype`."""
    raise NotImplementedError


def dense(x: jax.Array, w: jax.Array, n_in: int = 1, b: jax.Array | None = None, *,
          out_dtype=None) -> jax.Array:
  """Contract the last `n_in` axes of `x` with the first `n_in` axes of `w`.

  Args:
    x: activations `[..., *in]` in the compute dtype.
    w: weights `[*in, *out]` (any dtype: cast to x's dtype for the product), or a
      `WeightOp` (adapters, quantized weights) that computes the product itself.
    n_in: how many trailing axes of x (leading axes of w) are contracted.
    b: optional bias `[*out]`, added in float32 before the final cast.
    out_dtype: result dtype (default x's dtype).

  Returns:
    `[..., *out]`, accumulated in float32.
  """
  ins = x.shape[x.ndim - n_in:]
  if w.shape[:n_in] != ins:
    raise ValueError(f"dense: x's contracted axes {ins} do not match w's {w.shape[:n_in]}")
  if isinstance(w, WeightOp):
    return w.apply(x, n_in, b, out_dtype)
  # Named for the "dots" remat policy: the custom VJP hides the product's dot from
  # jax's dot-based policies, so the projections are kept by name instead.
  return checkpoint_name(_with_bias(x, w, n_in, False, b, out_dtype), DENSE)


def _with_bias(x, w, n_in: int, transpose_w: bool, b, out_dtype) -> jax.Array:
  """`_mm`, with the optional bias added in float32 before the final cast."""
  if b is None:
    return _mm(x, w, n_in, transpose_w, out_dtype)
  y = _mm(x, w, n_in, transpose_w, F32)
  return (y + b.reshape((1,) * (y.ndim - b.ndim) + b.shape).astype(F32)).astype(
      out_dtype or x.dtype)


def dense_transposed(x: jax.Array, w_FD: jax.Array, b: jax.Array | None = None, *,
                     out_dtype=None) -> jax.Array:
  """`x @ w.T` for `x [..., D]` and `w [F, D]` (a tied embedding used as the output
  head, or a decode weight stored transposed), float32 accumulation; no transposed
  copy of w is made. `b` (`[F]`) is added in float32 before the final cast."""
  if w_FD.shape[1] != x.shape[-1]:
    raise ValueError(f"dense_transposed: x has {x.shape[-1]} features, w {w_FD.shape}")
  return _with_bias(x, w_FD, 1, True, b, out_dtype)
