"""Grouped-query attention with a hand-written backward pass in the compute dtype.

The forward pass is the plain computation (scores and the weighted sum as bf16
products with float32 accumulation, a float32 softmax). Autodiff of it runs all four
backward products as float32 GEMMs: the cotangent of a float32-accumulated product
is float32, and the two products that contract over the query axis (dK, dV) need
the `[t, s]` operand transposed, which XLA:CPU does in float32 and then runs the
product in float32 too. `_attend`'s backward casts the cotangents to the compute
dtype (as `matmul.dense` does) and makes the two transposed copies itself in that
dtype, so every product is a bf16 GEMM with float32 accumulation (measured in
`benchmarks/train_step.py`, docs/benchmarks.md). In float32 the gradients equal
autodiff's to float32 rounding (`tests/model/test_forward.py`).

Shape key: B batch, T queries, S keys, K kv heads, G query heads per kv head, H head
dim, X = G*T (the query rows of one kv head).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from reasoning_jax.model.config import ModelConfig
from reasoning_jax.model.matmul import matmul_precision

F32 = jnp.float32
# A finite "minus infinity": a fully masked row (a padding query) then gives a uniform
# softmax instead of NaN, and the NaN can never leak into real rows' gradients.
MASKED = -1e30


def attention(q_BTNH, k_BKSH, v_BKSH, mask_BTS, cfg: ModelConfig, *,
              by_sums: bool = False) -> jax.Array:
  """Grouped-query attention with optional soft cap; softmax in float32. Keys and
  values come heads-major (`[B, K, S, H]`, the KV cache's layout); the result is
  `[B, T, N, H]` in q's dtype.

  `by_sums` writes both products as broadcast multiplies and float32 sums instead of
  dots (no custom gradient: for decoding). On a GPU, XLA then reads each layer's keys
  inside the score reduction and fuses the softmax with the weighted sum, where the
  dots made it copy every layer's key and value slices out of the cache for GEMM
  kernels (5 kernels -> 3 per layer, `benchmarks/gpu_kernels.py`). The products are
  the dots' (exact bf16 x bf16 in float32); only the order of the float32 sums may
  differ."""
  B, T, N, H = q_BTNH.shape
  K = k_BKSH.shape[1]
  q_BKGTH = q_BTNH.reshape(B, T, K, N // K, H).transpose(0, 2, 3, 1, 4)
  if by_sums:
    o = _attend_by_sums(q_BKGTH, k_BKSH, v_BKSH, mask_BTS, cfg.query_scale,
                        cfg.attn_softcap)
  elif cfg.attn_softcap:  # Gemma 2: autodiff through the tanh (rarely trained here)
    o = _attend_autodiff(q_BKGTH, k_BKSH, v_BKSH, mask_BTS, cfg.query_scale,
                         cfg.attn_softcap)
  else:
    o = _attend(q_BKGTH, k_BKSH, v_BKSH, mask_BTS, cfg.query_scale)
  # Output in the batched-matmul layout ([b, k] batch, [g t, h] rows x cols), then
  # transposed (small): asking for "btkgh" directly made XLA:CPU emit a bf16 dot with
  # a transposed operand that its runtime cannot execute.
  return o.transpose(0, 3, 1, 2, 4).reshape(B, T, N, H).astype(q_BTNH.dtype)


def _probs(q_BKGTH, k_BKSH, mask_BTS, scale, softcap=0.0):
  """Float32 softmax probabilities `[B, K, G, T, S]`; masked keys get exactly 0."""
  s = jnp.einsum("bkgth,bksh->bkgts", q_BKGTH, k_BKSH, preferred_element_type=F32,
                 precision=matmul_precision(q_BKGTH.dtype))
  return _softmax(s, mask_BTS, scale, softcap)


def _softmax(s_BKGTS, mask_BTS, scale, softcap):
  """The float32 softmax of scaled (soft-capped) scores over keys, masked keys 0."""
  s = s_BKGTS * scale
  if softcap:
    s = jnp.tanh(s / softcap) * softcap
  s = jnp.where(mask_BTS[:, None, None], s, MASKED)
  return jax.nn.softmax(s, axis=-1)


def _attend_by_sums(q_BKGTH, k_BKSH, v_BKSH, mask_BTS, scale, softcap):
  """`_attend_autodiff`'s values with the products as multiplies and float32 sums."""
  q = q_BKGTH[:, :, :, :, None].astype(F32)
  s = jnp.sum(q * k_BKSH[:, :, None, None].astype(F32), axis=-1)
  p = _softmax(s, mask_BTS, scale, softcap).astype(v_BKSH.dtype)
  return jnp.sum(p[..., None].astype(F32) * v_BKSH[:, :, None, None].astype(F32), axis=-2)


def _attend_autodiff(q_BKGTH, k_BKSH, v_BKSH, mask_BTS, scale, softcap):
  p = _probs(q_BKGTH, k_BKSH, mask_BTS, scale, softcap).astype(v_BKSH.dtype)
  return jnp.einsum("bkgts,bksh->bkgth", p, v_BKSH, preferred_element_type=F32,
                    precision=matmul_precision(p.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attend(q_BKGTH, k_BKSH, v_BKSH, mask_BTS, scale):
  """softmax(q k^T * scale, masked) v, float32 `[B, K, G, T, H]`."""
  return _attend_autodiff(q_BKGTH, k_BKSH, v_BKSH, mask_BTS, scale, 0.0)


def _attend_fwd(q, k, v, mask, scale):
  p = _probs(q, k, mask, scale)
  o = jnp.einsum("bkgts,bksh->bkgth", p.astype(v.dtype), v, preferred_element_type=F32,
                 precision=matmul_precision(v.dtype))
  return o, (q, k, v, mask, p)


def _attend_bwd(scale, res, g_BKGTH):
  q, k, v, mask, p = res
  B, K, G, T, H = q.shape
  cd = v.dtype
  g = g_BKGTH.astype(cd)
  pc = p.astype(cd)
  hp = matmul_precision(cd)
  dp = jnp.einsum("bkgth,bksh->bkgts", g, v, preferred_element_type=F32, precision=hp)
  # Softmax backward in float32, then the mask's: no gradient reaches masked scores
  # (they are 0 already except in fully masked rows, whose softmax is uniform).
  ds = p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True))
  ds = jnp.where(mask[:, None, None], ds * scale, 0.0).astype(cd)
  dq = jnp.einsum("bkgts,bksh->bkgth", ds, k, preferred_element_type=F32, precision=hp)
  rows = lambda x: x.reshape(B, K, G * T, -1)  # noqa: E731
  dk = jnp.einsum("bksx,bkxh->bksh", _swap_last(rows(ds)), rows(q),
                  preferred_element_type=F32, precision=hp)
  dv = jnp.einsum("bksx,bkxh->bksh", _swap_last(rows(pc)), rows(g),
                  preferred_element_type=F32, precision=hp)
  return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None)


_attend.defvjp(_attend_fwd, _attend_bwd)


def _swap_last(a_BKXS: jax.Array) -> jax.Array:
  """The last two axes swapped, as a materialised copy (see `matmul._rows_to_cols`:
  a plain transpose is folded into the product, which XLA:CPU then runs in float32)."""
  B, K, X, S = a_BKXS.shape
  return a_BKXS.reshape(B, K, X, S, 1).transpose(0, 1, 4, 3, 2).reshape(B, K, S, X)
