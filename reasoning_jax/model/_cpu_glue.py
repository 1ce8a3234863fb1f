"""numba-compiled XLA FFI handlers for the small steps between the products of a CPU
decode step of a bf16 model: RMSNorm (with the residual add before it) and RoPE (of
a fused q/k/v product too, which it splits).

Why: XLA:CPU runs such fusions on one thread, and ones that end in a layout change or
a cache write at ~1-4 ns per value; at 16 rows they cost ~50 us of each SmolLM2-135M
layer (docs/benchmarks.md). Here each is one plain loop over bf16 bits on the calling
thread (a few thousand values: a few microseconds, no helper is worth waking).

Separate from `_cpu_kernel` (nothing here calls it; numba's disk cache notices only a
change of a function's own file, so numba code stays in the file of the numba code
it calls, `_numba_ffi`'s stable primitives aside). `cpu_matvec` checks shapes and
dtypes at trace time; the handlers return no errors.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba import types

from reasoning_jax.model._numba_ffi import answer_metadata, bf16_to_f32, ptr, to_bf16, words

# Reassociation (vectorised sums) without assuming away NaN and infinities.
_NAN_SAFE = {"nsz", "arcp", "contract", "afn", "reassoc"}


@nb.njit(fastmath=_NAN_SAFE, error_model="numpy", cache=True)
def norm_rows(h_addr, w_addr, x_addr, M, D, eps):
  """x[m] = bf16(bf16(h[m] / rms(h[m])) * w) for bf16 bits `h, x [M, D]`, `w [D]`, as
  `forward.rms_norm` (Llama's order: normalised, rounded, then scaled): rms = sqrt of
  the float32 mean of squares plus `eps`, summed in another order than XLA's."""
  h = nb.carray(ptr(h_addr), (M, D), np.uint16)
  w = nb.carray(ptr(w_addr), (D,), np.uint16)
  x = nb.carray(ptr(x_addr), (M, D), np.uint16)
  for m in range(M):
    s = np.float32(0.0)
    for d in range(D):
      v = bf16_to_f32(h[m, d])
      s += v * v
    r = np.float32(1.0) / np.sqrt(s / np.float32(D) + eps)
    for d in range(D):
      y = bf16_to_f32(to_bf16(bf16_to_f32(h[m, d]) * r))
      x[m, d] = to_bf16(y * bf16_to_f32(w[d]))


@nb.njit(fastmath=_NAN_SAFE, error_model="numpy", cache=True)
def add_rows(h_addr, y_addr, out_addr, n):
  """out = bf16(h + bf16(y)) for `n` values: bf16 bits `h`, `out`, float32 `y` (a
  product as the kernel returns it, rounded as the model rounds it)."""
  h = nb.carray(ptr(h_addr), (n,), np.uint16)
  y = nb.carray(ptr(y_addr), (n,), np.float32)
  out = nb.carray(ptr(out_addr), (n,), np.uint16)
  for i in range(n):
    out[i] = to_bf16(bf16_to_f32(h[i]) + bf16_to_f32(to_bf16(y[i])))


@nb.njit(fastmath=_NAN_SAFE, error_model="numpy", cache=True)
def rope_rows(x_addr, ld, c0, cos_addr, sin_addr, out_addr, M, n, H):
  """Rotate-half RoPE of `n` heads of float32 `x [M, ld]` from column `c0` (each value
  first rounded to bf16, as the model rounds a product) with float32 `cos, sin [M,
  H]`, into bf16 bits `out [M, n, H]`, per half as `forward.apply_rope`."""
  x = nb.carray(ptr(x_addr), (M, ld), np.float32)
  cos = nb.carray(ptr(cos_addr), (M, H), np.float32)
  sin = nb.carray(ptr(sin_addr), (M, H), np.float32)
  out = nb.carray(ptr(out_addr), (M, n, H), np.uint16)
  half = H // 2
  for m in range(M):
    c, s = cos[m], sin[m]
    for j in range(n):
      # 1-D views: LLVM vectorises the loop over them (3.5x the 2-D indexing).
      xr, o = x[m, c0 + j * H:c0 + (j + 1) * H], out[m, j]
      for i in range(half):
        x1 = bf16_to_f32(to_bf16(xr[i]))
        x2 = bf16_to_f32(to_bf16(xr[i + half]))
        o[i] = to_bf16(x1 * c[i] - x2 * s[i])
        o[i + half] = to_bf16(x2 * c[i + half] + x1 * s[i + half])


@nb.njit(fastmath=_NAN_SAFE, error_model="numpy", cache=True)
def round_rows(x_addr, ld, c0, out_addr, M, n):
  """out[m] = bf16(x[m, c0:c0 + n]) for float32 `x [M, ld]` into bf16 bits `[M, n]`."""
  x = nb.carray(ptr(x_addr), (M, ld), np.float32)
  out = nb.carray(ptr(out_addr), (M, n), np.uint16)
  for m in range(M):
    xr, o = x[m, c0:c0 + n], out[m]
    for i in range(n):
      o[i] = to_bf16(xr[i])


@nb.njit(cache=True)
def _norm(call_frame, add):
  """The body of both norm handlers. Args: h bf16 `[M, D]`, (with `add`) y float32
  `[M, D]`, w bf16 `[D]`, eps float32 `[1]`; returns x bf16 `[M, D]` and (with `add`)
  first the new residual bf16 `[M, D]` = `add_rows(h, y)`, whose norm x then is."""
  frame = nb.carray(call_frame, (15,), np.int64)
  if answer_metadata(frame):
    return 0
  args, rets = words(frame[9], 3 + add), words(frame[14], 1 + add)
  bh = words(args[0], 6)
  bw, be = words(args[1 + add], 6), words(args[2 + add], 6)
  dims = words(bh[5], 2)
  M, D = dims[0], dims[1]
  eps = nb.carray(ptr(be[3]), (1,), np.float32)[0]
  h = bh[3]
  if add:
    h = words(rets[0], 6)[3]
    add_rows(bh[3], words(args[1], 6)[3], h, M * D)
  norm_rows(h, bw[3], words(rets[add], 6)[3], M, D, eps)
  return 0


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_norm(call_frame):
  """XLA FFI handler: RMSNorm of bf16 rows (see `_norm`)."""
  return ptr(_norm(call_frame, 0))


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_add_norm(call_frame):
  """XLA FFI handler: a residual add, then the RMSNorm of the sum (see `_norm`)."""
  return ptr(_norm(call_frame, 1))


@nb.njit(cache=True)
def _rope(call_frame, qkv):
  """The body of both RoPE handlers. Args: x float32 `[M, n, H]` (with `qkv`: `[M, (n +
  2 nk) H]`, a fused q/k/v product), cos and sin float32 `[M, H]`; returns bf16 `[M,
  n, H]` (with `qkv`: q `[M, n, H]`, k and v `[M, nk, H]`, v only rounded)."""
  frame = nb.carray(call_frame, (15,), np.int64)
  if answer_metadata(frame):
    return 0
  args, rets = words(frame[9], 3), words(frame[14], 1 + 2 * qkv)
  bx, bq = words(args[0], 6), words(rets[0], 6)
  dims = words(bq[5], 3)
  M, n, H = dims[0], dims[1], dims[2]
  cos, sin = words(args[1], 6)[3], words(args[2], 6)[3]
  nk = words(words(rets[1], 6)[5], 3)[1] if qkv else 0
  ld = (n + 2 * nk) * H
  rope_rows(bx[3], ld, 0, cos, sin, bq[3], M, n, H)
  if qkv:
    rope_rows(bx[3], ld, n * H, cos, sin, words(rets[1], 6)[3], M, nk, H)
    round_rows(bx[3], ld, (n + nk) * H, words(rets[2], 6)[3], M, nk * H)
  return 0


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_rope(call_frame):
  """XLA FFI handler: RoPE of a product's heads, rounded to bf16 (see `_rope`)."""
  return ptr(_rope(call_frame, 0))


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_rope_qkv(call_frame):
  """XLA FFI handler: RoPE of a fused q/k/v product's q and k, and v, in bf16 (see
  `_rope`)."""
  return ptr(_rope(call_frame, 1))
