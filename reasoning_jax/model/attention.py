"""Attention: the backend seam, and the XLA implementation every kernel is tested
against.

`attention` is the one call site. `ModelConfig.attention_backend` picks the
implementation: "xla" (this module), "pallas" (a library Pallas kernel from
`reasoning_jax.kernels`), or "auto", which takes the Pallas kernel when the program
is lowered for a TPU (for bf16 compute; float32 stays on XLA's HIGHEST-precision
products) and XLA elsewhere. "auto" is decided by `lax.platform_dependent`
at lowering time, i.e. by the platform of the devices the program is compiled for,
not by `jax.default_backend()`: a program compiled on a CPU host for a TPU topology
takes the TPU kernel, and only the chosen branch is lowered.

The XLA forward is the plain computation (scores and the weighted sum as products in
the compute dtype with float32 accumulation, a float32 softmax). Its backward
(`_attend`) casts the cotangents to the compute dtype (as `matmul.dense` does) and
makes the two transposed copies itself in that dtype, so every product is a GEMM in
the compute dtype with float32 accumulation; autodiff would run all four backward
products as float32 GEMMs. In float32 the gradients equal autodiff's to float32
rounding (`tests/model/test_forward.py`).

Shape key: B batch, T queries, S keys, N query heads, K kv heads, G query heads per
kv head, H head dim, X = G*T (the query rows of one kv head).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from reasoning_jax.model.config import ModelConfig
from reasoning_jax.model.matmul import matmul_precision
from reasoning_jax.sharding.rules import ROLLOUT_RULES, TRAIN_RULES

# The mesh axes rows and heads are split over: the same in both rule tables, so a
# kernel under `shard_map` sees whole heads and whole rows either way.
assert TRAIN_RULES.lookup("batch") == ROLLOUT_RULES.lookup("batch")
assert TRAIN_RULES.lookup("q_heads") == ROLLOUT_RULES.lookup("q_heads")
_BATCH_AXES = tuple(TRAIN_RULES.lookup("batch"))
_HEAD_AXIS = TRAIN_RULES.lookup("q_heads")

F32 = jnp.float32
# A finite "minus infinity": a fully masked row (a padding query) then gives a uniform
# softmax instead of NaN, and the NaN can never leak into real rows' gradients.
MASKED = -1e30


@dataclasses.dataclass(frozen=True)
class Positions:
  """What attention masks derive from: the queries' and keys' logical positions
  (negative on padding), and the causal and sliding-window masks built from them once
  per forward (every layer shares them).

  Attributes:
    q_BT: int32 positions of the queries.
    k_BS: int32 positions of the keys (cache slots; -1 empty or padding).
    causal_BTS: bool, key valid and not after the query.
    local_BTS: bool, also within the sliding window; None without local layers.
    decode: one query per row over a cache (static).
  """
  q_BT: jax.Array
  k_BS: jax.Array
  causal_BTS: jax.Array
  local_BTS: jax.Array | None
  decode: bool = False

  @classmethod
  def of(cls, q_BT: jax.Array, k_BS: jax.Array, cfg: ModelConfig, *,
         decode: bool = False) -> "Positions":
    """The positions and their masks under `cfg` (its sliding window)."""
    q, k = q_BT[:, :, None], k_BS[:, None, :]
    causal = (k >= 0) & (k <= q)
    local = causal & (q - k < cfg.sliding_window) if any(cfg.local_flags) else None
    return cls(q_BT=q_BT, k_BS=k_BS, causal_BTS=causal, local_BTS=local, decode=decode)

  def mask(self, is_local: jax.Array) -> jax.Array:
    """The `[B, T, S]` mask of a layer (`is_local`: a traced per-layer flag)."""
    if self.local_BTS is None:
      return self.causal_BTS
    return jnp.where(is_local, self.local_BTS, self.causal_BTS)


def attention(q_BTNH: jax.Array, k_BKSH: jax.Array, v_BKSH: jax.Array, pos: Positions,
              is_local: jax.Array, cfg: ModelConfig) -> jax.Array:
  """Grouped-query attention with optional soft cap, by `cfg.attention_backend`.

  Keys and values come heads-major (`[B, K, S, H]`, the KV cache's layout); the
  result is `[B, T, N, H]` in q's dtype. One query token over a cache is decode
  attention; several are training/prefill attention.
  """
  backend = cfg.attention_backend
  mask_BTS = pos.mask(is_local)
  # The kernel multiplies at the TPU's default precision, exact for bf16 operands but
  # one bf16 pass for float32 ones: "auto" keeps float32 models on the HIGHEST-precision
  # XLA path (`matmul.matmul_precision`).
  if backend == "xla" or (backend == "auto" and q_BTNH.dtype == jnp.float32):
    return xla_attention(q_BTNH, k_BKSH, v_BKSH, mask_BTS, cfg)

  def xla(q, k, v, mask):
    return xla_attention(q, k, v, mask, cfg)

  def kernel(interpret: bool):
    def run(q, k, v, mask):
      # Imported here: only a program that takes the Pallas branch needs the kernels.
      from reasoning_jax.kernels.attention import splash_attention
      o = splash_attention(q, k, v, pos.q_BT, pos.k_BS, mask, is_local,
                           scale=cfg.query_scale, softcap=cfg.attn_softcap,
                           window=cfg.sliding_window, has_local=pos.local_BTS is not None,
                           decode=pos.decode, batch_axes=_BATCH_AXES,
                           head_axis=_HEAD_AXIS, interpret=interpret)
      return xla(q, k, v, mask) if o is None else o.astype(q.dtype)
    return run

  args = (q_BTNH, k_BKSH, v_BKSH, mask_BTS)
  if backend == "pallas":  # off a TPU, the same kernel in Pallas' interpreter
    return lax.platform_dependent(*args, tpu=kernel(False), default=kernel(True))
  return lax.platform_dependent(*args, tpu=kernel(False), default=xla)


def xla_attention(q_BTNH, k_BKSH, v_BKSH, mask_BTS, cfg: ModelConfig) -> jax.Array:
  """The XLA implementation of `attention` (the reference for every kernel).

  One query token (decode) on a GPU writes both products as broadcast multiplies and
  float32 sums instead of dots: XLA:GPU then reads each layer's keys inside the score
  reduction and fuses the softmax with the weighted sum, where the dots made it copy
  every layer's key and value slices out of the cache for GEMM kernels
  (`benchmarks/gpu_kernels.py` counts the kernels). The products are the dots' (exact
  in float32); only the order of the float32 sums may differ.
  """
  B, T, N, H = q_BTNH.shape
  K = k_BKSH.shape[1]
  q_BKGTH = q_BTNH.reshape(B, T, K, N // K, H).transpose(0, 2, 3, 1, 4)
  args = (q_BKGTH, k_BKSH, v_BKSH, mask_BTS, cfg.query_scale)
  if T == 1:
    by_sums = functools.partial(_attend_by_sums, softcap=cfg.attn_softcap)
    plain = functools.partial(_attend_autodiff, softcap=cfg.attn_softcap)
    o = lax.platform_dependent(*args, cuda=by_sums, rocm=by_sums, default=plain)
  elif cfg.attn_softcap:  # Gemma 2: autodiff through the tanh
    o = _attend_autodiff(*args, softcap=cfg.attn_softcap)
  else:
    o = _attend(*args)
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


def _attend_by_sums(q_BKGTH, k_BKSH, v_BKSH, mask_BTS, scale, softcap=0.0):
  """`_attend_autodiff`'s values with the products as multiplies and float32 sums."""
  q = q_BKGTH[:, :, :, :, None].astype(F32)
  s = jnp.sum(q * k_BKSH[:, :, None, None].astype(F32), axis=-1)
  p = _softmax(s, mask_BTS, scale, softcap).astype(v_BKSH.dtype)
  return jnp.sum(p[..., None].astype(F32) * v_BKSH[:, :, None, None].astype(F32), axis=-2)


def _attend_autodiff(q_BKGTH, k_BKSH, v_BKSH, mask_BTS, scale, softcap=0.0):
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
