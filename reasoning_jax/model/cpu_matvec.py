"""A bf16 matrix-vector product for CPU decoding, as an XLA FFI custom call.

Why: a batch-1 decode step reads every weight once, so it is bound by memory
bandwidth, and XLA:CPU has no bf16 matrix-vector product: it converts each weight
slice to float32 and runs a float32 GEMV (docs/benchmarks.md measured ~13 GB/s
effective on a 37 GB/s machine, and 3.5 GB/s on a 2-core AVX2 EPYC). This kernel
reads the bf16 bits once, converts in registers and accumulates in float32, on both
the calling thread and XLA's own thread pool (`_cpu_kernel`).

`matvec(x [M, K], w [L, K, N] bf16, layer) -> [M, N] float32` (and `matvec_t` for
`[L, N, K]` stacks) takes the whole stacked weight and the layer index, so a layer
loop passes its weights in place (a scan slicing the stack would make XLA copy each
layer's slice out first).

numba compiles the kernel on first use (a few seconds per process); `available()`
is False where numba cannot be imported or the runtime refuses the handler, and the
decode plan then keeps XLA's own products (`sampling.loop.decode_plan`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

TARGETS = {True: "reasoning_jax_bf16_matvec_t", False: "reasoning_jax_bf16_matvec"}
TAKE_TARGET = "reasoning_jax_take16"
ATTENTION_TARGET = "reasoning_jax_decode_attention"
LOGSUMEXP_TARGET = "reasoning_jax_row_logsumexp"
SILU_MUL_TARGET = "reasoning_jax_silu_mul"
NORM_TARGETS = {False: "reasoning_jax_rms_norm", True: "reasoning_jax_add_rms_norm"}
ROPE_TARGET = "reasoning_jax_rope"
ROPE_QKV_TARGET = "reasoning_jax_rope_qkv"

# The most rows the decode sends to the kernel where `_gemm_ir`'s AVX-512 BF16 GEMMs
# run (a step of up to 64 rows: at 16 and 64 rows they ran at 1.4-2.1x XLA:CPU's
# GEMMs on a 2-core Zen 4, docs/benchmarks.md). Elsewhere one row: the numba loops
# re-read the converted weights per row (two rows ran at 15-18 GB/s).
GEMM_MAX_ROWS = 64
# Columns per strip of `pack`'s layout (`_gemm_ir.KP_STRIP`; kept here so that
# callers need not load the kernels to ask whether a matrix packs).
PACK_STRIP = 16


@functools.cache
def _register() -> str | None:
  """Compile and register the handlers once; None on success, else why not."""
  try:
    # Imported here: numba and the kernel load only in processes that decode with it.
    from reasoning_jax.model import _cpu_glue, _cpu_kernel, _cpu_take  # noqa: PLC0415
  except Exception as e:  # noqa: BLE001 (any import or compile failure disables it)
    return f"numba kernel unavailable: {type(e).__name__}: {e}"
  try:
    handlers = {TARGETS[True]: _cpu_kernel.handler_t,
                TARGETS[False]: _cpu_kernel.handler_n,
                LOGSUMEXP_TARGET: _cpu_kernel.handler_logsumexp,
                SILU_MUL_TARGET: _cpu_kernel.handler_silu_mul,
                TAKE_TARGET: _cpu_take.handler_take,
                NORM_TARGETS[False]: _cpu_glue.handler_norm,
                NORM_TARGETS[True]: _cpu_glue.handler_add_norm,
                ROPE_TARGET: _cpu_glue.handler_rope,
                ROPE_QKV_TARGET: _cpu_glue.handler_rope_qkv,
                ATTENTION_TARGET: _cpu_kernel.handler_attention}
    for name, fn in handlers.items():
      jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(fn.ctypes), platform="cpu")
  except Exception as e:  # noqa: BLE001
    return f"XLA refused the FFI handler: {e}"
  return None


def available() -> bool:
  """Whether the kernel can be used in this process (compiles it on first call)."""
  return _register() is None


def max_rows() -> int:
  """The most rows (tokens) the decode should send to the kernel in this process:
  `GEMM_MAX_ROWS` where the AVX-512 BF16 GEMM kernels run (`_gemm_ir`), else 1; 0
  where the kernel is unavailable."""
  if not available():
    return 0
  from reasoning_jax.model import _cpu_kernel  # noqa: PLC0415 (loaded by available)
  return GEMM_MAX_ROWS if _cpu_kernel.GEMM_UNAVAILABLE is None else 1


def packs(k: int, n: int) -> bool:
  """Whether a `[K, N]` matrix has a `pack`ed form and the packed kernels run here:
  K even, N a multiple of `PACK_STRIP`, and `max_rows() > 1`."""
  return k % 2 == 0 and n % PACK_STRIP == 0 and max_rows() > 1


def pack(w_LKN: jax.Array) -> jax.Array:
  """The stacked bf16 `[L, K, N]` matrices in the layout of `_gemm_ir`'s kp kernel,
  `[L, N / 16, K / 2, 16, 2]`: per layer, strips of 16 output columns, each strip one
  contiguous run, in it row pair (2j, 2j + 1) of the strip's columns, interleaved.

  Why: at 2-64 rows a CPU decode step is compute-bound, and `vdpbf16ps` multiplies
  pairs of adjacent bf16 values: in this layout a plain load is the vector it wants,
  and each strip is one stream for the prefetcher (2.4x the kn kernel on `[K, N]`,
  docs/benchmarks.md). One copy of the weights, made once per sampling call.
  `matvec` multiplies it, bit for bit as the `[K, N]` stack at more than one row.
  """
  L, K, N = w_LKN.shape
  if K % 2 or N % PACK_STRIP or w_LKN.dtype not in (jnp.bfloat16, jnp.uint16):
    raise ValueError(f"pack: w {w_LKN.shape} {w_LKN.dtype} must be bf16 [L, K, N] with "
                     f"K even and N a multiple of {PACK_STRIP}")
  # Each (2j, 2j + 1) pair as one 32-bit word (the first in the low half: little
  # endian), then a transpose of whole words: 2.2x as fast on XLA:CPU as transposing
  # the 16-bit values (47 vs 103 ms for SmolLM2-135M's MLP stacks on a 2-core Zen 4).
  u = jax.lax.bitcast_convert_type(w_LKN, jnp.uint16).astype(jnp.uint32)
  u = u.reshape(L, K // 2, 2, N)
  u = u[:, :, 0] | (u[:, :, 1] << 16)
  u = u.reshape(L, K // 2, N // PACK_STRIP, PACK_STRIP).transpose(0, 2, 1, 3)
  return jax.lax.bitcast_convert_type(u, jnp.bfloat16)


def matvec(x_MK: jax.Array, w_LKN: jax.Array, layer: jax.Array | int,
           keep_M: jax.Array | None = None) -> jax.Array:
  """`x @ w[layer]` in float32 for bf16 weights (or their bits).

  Args:
    x_MK: activations `[M, K]` (any float dtype; converted to float32, which is exact
      for bf16).
    w_LKN: `[L, K, N]` bfloat16 (or its bits as uint16): L stacked `[in, out]`
      matrices, read as they are (no conversion or copy is made); or their `pack`ed
      form `[L, N / 16, K / 2, 16, 2]` (where `packs`), any number of rows.
    layer: int32 scalar, the matrix to use (traced; no copy of the slice is made;
      clamped to [0, L) like XLA's dynamic indexing).
    keep_M: optional bool `[M]`, packed `w` only: only the rows where it is True are
      multiplied (gathered into whole row blocks), the others come out 0. For a
      prefill's padding tokens, whose products nothing reads (SmolLM2-135M at 16
      prompts of 16-32 tokens: 387 of 512 rows are real).

  Returns:
    `[M, N]` float32: each entry a float32 sum of exact bf16 x bf16 products (summed
    in another order than XLA's dot, so results differ in the last bits). With more
    than one row, where the AVX-512 BF16 kernels run (`max_rows`), x is first rounded
    to bf16 (exact for a bf16 model's activations).

  CPU only (the custom call exists for the host platform).
  """
  if keep_M is not None and (w_LKN.ndim != 5 or keep_M.shape != x_MK.shape[:1]):
    raise ValueError(f"matvec: keep_M {keep_M.shape} must be [M] for x {x_MK.shape}, "
                     f"with a packed w (`pack`), got w {w_LKN.shape}")
  return _call(x_MK, w_LKN, layer, transposed=False, keep=keep_M)


def matvec_t(x_MK: jax.Array, w_LNK: jax.Array, layer: jax.Array | int) -> jax.Array:
  """`x @ w[layer].T` for w `[L, N, K]` (stacked `[out, in]` matrices, e.g. a tied
  embedding as the output head); otherwise as `matvec`."""
  return _call(x_MK, w_LNK, layer, transposed=True)


def attention_fits(head_dim: int, slots: int) -> bool:
  """Whether `attend` runs for this head dim and cache length here: the AVX-512 BF16
  kernels (`max_rows() > 1`), a head dim that is a multiple of 32 and a slot count of
  4 (their vector widths)."""
  return head_dim % 32 == 0 and slots % 4 == 0 and max_rows() > 1


def attend(q_BNH: jax.Array, k_LBKSH: jax.Array, v_LBKSH: jax.Array,
           layer: jax.Array | int, mask_BS: jax.Array, scale: float,
           softcap: float = 0.0) -> jax.Array:
  """One query token's grouped-query attention over layer `layer` of a bf16 KV cache,
  read in place: float32 `[B, N, H]`, or bf16 for bf16 queries.

  Args:
    q_BNH: queries (any float dtype; rounded to bf16, exact for a bf16 model's). bf16
      queries go in as they are and the result comes out rounded to bf16 (as the
      model rounds it), with no conversion ops around the call (two XLA:CPU fusions,
      ~7 us of each 16-row SmolLM2-135M layer, docs/benchmarks.md).
    k_LBKSH, v_LBKSH: the cache's key and value stacks, bf16 or its bits (uint16);
      the layer's slices are read where they are (XLA:CPU copied both out of the
      stack for its dots, ~2 MB a layer at 16 rows of 160 slots, docs/benchmarks.md).
    layer: int32 scalar (clamped to [0, L)).
    mask_BS: bool, True where a slot may be attended.
    scale, softcap: the score scale and the tanh soft cap (0 for none).

  Returns:
    `[B, N, H]` float32 (bf16 for bf16 q): `attention.attention`'s values (float32
    softmax of the scaled, capped, masked scores, probabilities rounded to bf16,
    float32 sums of the values), summed in another order. CPU only, where
    `attention_fits`.
  """
  B, N, H = q_BNH.shape
  L, Bk, K, S, Hk = k_LBKSH.shape
  if (Bk, Hk) != (B, H) or N % K or v_LBKSH.shape != k_LBKSH.shape or (
      mask_BS.shape != (B, S)) or not attention_fits(H, S):
    raise ValueError(f"attend: q {q_BNH.shape}, keys {k_LBKSH.shape}, values "
                     f"{v_LBKSH.shape}, mask {mask_BS.shape} do not fit (or "
                     "attention_fits is False here)")
  if k_LBKSH.dtype not in (jnp.bfloat16, jnp.uint16) or v_LBKSH.dtype != k_LBKSH.dtype:
    raise ValueError(f"attend: the cache must be bf16 (or its bits), got {k_LBKSH.dtype}")
  io = jnp.bfloat16 if q_BNH.dtype == jnp.bfloat16 else jnp.float32
  call = jax.ffi.ffi_call(ATTENTION_TARGET, jax.ShapeDtypeStruct((B, N, H), io))
  knobs = jnp.asarray([scale, softcap], jnp.float32)
  return call(q_BNH.astype(io), k_LBKSH, v_LBKSH, jnp.asarray(layer, jnp.int32),
              mask_BS.astype(jnp.bool_), knobs)


def logsumexp(x_MV: jax.Array) -> jax.Array:
  """`jax.nn.logsumexp(x, axis=-1)` of float32 rows `[M, V]`, on both cores: `[M]`.

  Why: a decode step's model log-probabilities need the log-sum-exp of every row's
  logits, and XLA:CPU ran it on one thread at ~1 ns per exp (1.1 ms of a 17 ms
  SmolLM2-135M step at 16 rows, docs/benchmarks.md). Here the rows are split over
  the threads and the exps are a vectorised polynomial (< 2e-7 relative): within
  ~1e-6 of XLA's for SmolLM2's vocabulary. A row whose max is not finite gets it (NaN
  if the row holds a NaN), as XLA's. CPU only, where `available()`.
  """
  if x_MV.ndim != 2:
    raise ValueError(f"logsumexp: x {x_MV.shape} must be [M, V]")
  reason = _register()
  if reason is not None:
    raise RuntimeError(f"logsumexp: {reason}; check cpu_matvec.available() first")
  call = jax.ffi.ffi_call(LOGSUMEXP_TARGET,
                          jax.ShapeDtypeStruct((x_MV.shape[0],), jnp.float32))
  return call(x_MV.astype(jnp.float32))


def silu_mul(gate_MF: jax.Array, up_MF: jax.Array | None = None) -> jax.Array:
  """`(silu(bf16(gate)) * bf16(up)).astype(bfloat16)` (float32 math) of a bf16 model's
  gate and up products `[M, F]` (float32, as `matvec` returns them), on both cores.
  With `up_MF` None, `gate_MF` is the fused product `[M, 2F]`: gate, then up (read in
  place: XLA:CPU's two slices of it cost ~6 us of each 16-row SmolLM2-135M layer).

  Why: XLA:CPU ran this fusion on one thread at ~1 ns per value (25 us of each
  SmolLM2-135M layer at 16 rows, docs/benchmarks.md); here the rows are split over
  the threads and the exp is vectorised (< 2e-7 relative, so the bf16 result is
  XLA's but for the rare value at a rounding boundary). A NaN propagates; an
  infinite gate gives +-inf, not XLA's NaN for -inf. CPU only, where `available()`.
  """
  fused = up_MF is None
  M, F = gate_MF.shape if gate_MF.ndim == 2 else (0, -1)
  if fused:
    F, up_MF = F // 2, gate_MF
  if (gate_MF.ndim != 2 or up_MF.shape != gate_MF.shape
      or F * (1 + fused) != up_MF.shape[1]):
    raise ValueError(f"silu_mul: gate {gate_MF.shape} and up {up_MF.shape} must both "
                     "be [M, F], or a fused gate/up [M, 2F] alone")
  reason = _register()
  if reason is not None:
    raise RuntimeError(f"silu_mul: {reason}; check cpu_matvec.available() first")
  call = jax.ffi.ffi_call(SILU_MUL_TARGET, jax.ShapeDtypeStruct((M, F), jnp.bfloat16))
  gate_MF = gate_MF.astype(jnp.float32)
  # The fused product goes in twice (one buffer): the handler reads up F columns on.
  return call(gate_MF, gate_MF if fused else up_MF.astype(jnp.float32))


def rms_norm(h_MD: jax.Array, w_D: jax.Array, eps: float,
             residual_MD: jax.Array | None = None):
  """Llama's RMSNorm of bf16 rows, `bf16(bf16(h / rms(h)) * w)` (`forward.rms_norm`
  with no offset), on the calling thread.

  With `residual_MD` (float32 `[M, D]`, a product as `matvec` returns it), first the
  residual add `h = bf16(h + bf16(residual))`, and returns `(h, norm of h)`.

  Why: XLA:CPU ran the add, the mean of squares and the scaling as ~5 small fusions,
  ~11 us per norm of a 16-row SmolLM2-135M step, docs/benchmarks.md. The mean sums in
  another order than XLA's (float32), so a value at a bf16 rounding boundary may
  round the other way. CPU only, where `available()`.
  """
  M, D = h_MD.shape if h_MD.ndim == 2 else (0, -1)
  if h_MD.ndim != 2 or h_MD.dtype != jnp.bfloat16 or w_D.shape != (D,) or (
      residual_MD is not None and residual_MD.shape != h_MD.shape):
    raise ValueError(f"rms_norm: h {h_MD.shape} {h_MD.dtype} must be bf16 [M, D], w "
                     f"{w_D.shape} [D] and the residual (if any) [M, D]")
  reason = _register()
  if reason is not None:
    raise RuntimeError(f"rms_norm: {reason}; check cpu_matvec.available() first")
  out = jax.ShapeDtypeStruct(h_MD.shape, jnp.bfloat16)
  eps_1 = jnp.asarray([eps], jnp.float32)
  w_D = w_D.astype(jnp.bfloat16)
  if residual_MD is None:
    return jax.ffi.ffi_call(NORM_TARGETS[False], out)(h_MD, w_D, eps_1)
  call = jax.ffi.ffi_call(NORM_TARGETS[True], (out, out))
  return tuple(call(h_MD, residual_MD.astype(jnp.float32), w_D, eps_1))


def rope(x_MnH: jax.Array, cos_MH: jax.Array, sin_MH: jax.Array) -> jax.Array:
  """Rotate-half RoPE of a product's heads `[M, n, H]` (float32 as `matvec` returns
  them, each value first rounded to bf16 as the model rounds a product) at each row's
  `cos, sin [M, H]`: bf16 `[M, n, H]`, on the calling thread (`forward.apply_rope`'s
  values but for FMA pairing). Why: XLA:CPU's fusion of the keys' RoPE with their
  cache write ran at ~4 ns per value (docs/benchmarks.md). CPU only."""
  M, n, H = x_MnH.shape if x_MnH.ndim == 3 else (0, 0, -1)
  if x_MnH.ndim != 3 or H % 2 or cos_MH.shape != (M, H) or sin_MH.shape != (M, H):
    raise ValueError(f"rope: x {x_MnH.shape} must be [M, n, H] with H even, cos "
                     f"{cos_MH.shape} and sin {sin_MH.shape} [M, H]")
  reason = _register()
  if reason is not None:
    raise RuntimeError(f"rope: {reason}; check cpu_matvec.available() first")
  call = jax.ffi.ffi_call(ROPE_TARGET, jax.ShapeDtypeStruct(x_MnH.shape, jnp.bfloat16))
  return call(x_MnH.astype(jnp.float32), cos_MH.astype(jnp.float32),
              sin_MH.astype(jnp.float32))


def rope_qkv(qkv_MX: jax.Array, cos_MH: jax.Array, sin_MH: jax.Array, n_q: int,
             n_kv: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`rope` of the q and k heads of a fused q/k/v product `[M, (n_q + 2 n_kv) H]`
  (float32 as `matvec` returns it), and its v heads rounded to bf16: bf16 q `[M, n_q,
  H]`, k and v `[M, n_kv, H]`, on the calling thread. Why: XLA:CPU's slices of the
  fused product, one fusion each, cost ~10 us of each 16-row SmolLM2-135M layer
  (docs/benchmarks.md); here the heads are read where they lie. CPU only."""
  M, X = qkv_MX.shape if qkv_MX.ndim == 2 else (0, -1)
  H = cos_MH.shape[-1]
  if (qkv_MX.ndim != 2 or H % 2 or n_q < 1 or n_kv < 1 or X != (n_q + 2 * n_kv) * H
      or cos_MH.shape != (M, H) or sin_MH.shape != (M, H)):
    raise ValueError(f"rope_qkv: qkv {qkv_MX.shape} must be [M, (n_q + 2 n_kv) H] for "
                     f"n_q={n_q}, n_kv={n_kv} and cos {cos_MH.shape}, sin "
                     f"{sin_MH.shape} [M, H] with H even")
  reason = _register()
  if reason is not None:
    raise RuntimeError(f"rope_qkv: {reason}; check cpu_matvec.available() first")
  out = [jax.ShapeDtypeStruct((M, n, H), jnp.bfloat16) for n in (n_q, n_kv, n_kv)]
  call = jax.ffi.ffi_call(ROPE_QKV_TARGET, out)
  return tuple(call(qkv_MX.astype(jnp.float32), cos_MH.astype(jnp.float32),
                    sin_MH.astype(jnp.float32)))


def take(table: jax.Array, index: jax.Array | int) -> jax.Array:
  """`table[index]` (rows of a 16-bit table, indices clamped to [0, R) like XLA's
  dynamic indexing) as an opaque custom call.

  Why: when a loop slices a loop-invariant bf16 stack, XLA:CPU converts the whole
  stack to float32 before the loop (a fresh buffer of twice its size, page-faulted on
  every call: ~380 ms per SmolLM2-135M prefill, docs/benchmarks.md). XLA cannot move
  a conversion through a custom call, so the slice taken here is converted in the
  loop, one layer at a time; the embedding lookup likewise reads only its rows.

  Args:
    table: `[R, ...]` of a 16-bit dtype (bfloat16, float16, uint16, int16).
    index: an int32 scalar (result `table.shape[1:]`) or `[n]` vector (result
      `[n, *table.shape[1:]]`).

  Returns:
    The rows, in the table's dtype, bit for bit. CPU only.
  """
  table = jnp.asarray(table)
  index = jnp.asarray(index)
  if table.ndim < 1 or table.dtype.itemsize != 2 or index.ndim > 1 or not (
      jnp.issubdtype(index.dtype, jnp.integer)):
    raise ValueError(f"take: table {table.shape} {table.dtype} must be [R, ...] of a "
                     f"16-bit dtype and index {index.shape} {index.dtype} an integer "
                     "scalar or vector")
  reason = _register()
  if reason is not None:
    raise RuntimeError(f"take: {reason}; check cpu_matvec.available() first")
  idx = index.reshape(-1).astype(jnp.int32)
  call = jax.ffi.ffi_call(TAKE_TARGET, jax.ShapeDtypeStruct(
      (idx.shape[0], *table.shape[1:]), table.dtype))
  out = call(table, idx)
  return out[0] if index.ndim == 0 else out


def _call(x, w, layer, transposed: bool, keep=None) -> jax.Array:
  name = "matvec_t" if transposed else "matvec"
  k_axis = 2 if transposed else 1
  if not transposed and w.ndim == 5:  # `pack`ed
    k, n = w.shape[2] * 2, w.shape[1] * w.shape[3]
    if w.shape[3:] != (PACK_STRIP, 2) or x.ndim != 2 or x.shape[1] != k or not packs(k, n):
      raise ValueError(f"matvec: x {x.shape} must be [M, K] and the packed w {w.shape} "
                       f"[L, N / {PACK_STRIP}, K / 2, {PACK_STRIP}, 2] (`pack`), where the "
                       "packed kernels run (`packs`)")
  elif x.ndim != 2 or w.ndim != 3 or x.shape[1] != w.shape[k_axis]:
    form = "[L, N, K]" if transposed else "[L, K, N]"
    raise ValueError(f"{name}: x {x.shape} must be [M, K] and w {w.shape} {form} with "
                     "the same K")
  if w.dtype not in (jnp.bfloat16, jnp.uint16):
    raise ValueError(f"{name}: w must be bfloat16 (or its bits as uint16), got "
                     f"{w.dtype}; cast float32 weights with w.astype(jnp.bfloat16)")
  reason = _register()
  if reason is not None:
    raise RuntimeError(f"{name}: {reason}; check cpu_matvec.available() first")
  n = w.shape[1] if transposed else w.shape[2] if w.ndim == 3 else w.shape[1] * w.shape[3]
  call = jax.ffi.ffi_call(TARGETS[transposed],
                          jax.ShapeDtypeStruct((x.shape[0], n), jnp.float32))
  # The packed kernels take x as bf16 (they round it to bf16 anyway): a bf16 model's
  # activations then go in as they are, with no conversion on either side.
  x = x.astype(jnp.bfloat16 if w.ndim == 5 else jnp.float32)
  keep = () if keep is None else (keep.astype(jnp.bool_),)
  return call(x, w, jnp.asarray(layer, jnp.int32), *keep)
