"""The numba-compiled body of `cpu_matvec`: XLA FFI handlers for bf16 products,
decode attention and row-wise functions on CPU, split over XLA's own thread pool
(the 16-bit row gather, which needs none of this, is `_cpu_take`).

Imported only by `cpu_matvec`, which checks shapes and dtypes at trace time (the
handlers return no errors). numba caches the code on disk (~8 s to compile, ~1 s to
load); the call frame readers and intrinsics are in `_numba_ffi`.

Work split: the weight matrix is cut into chunks of contiguous rows (a layer's matrix
into one per thread, a large head into ~`CHUNK_BYTES` pieces): for `[N, K]` matrices
each chunk owns output columns, for `[K, N]` each sums its rows into a float32 partial
that the caller adds up at the end. Chunks are claimed from the job's counter
(`generation << 32 | next chunk`, by compare-and-swap) by the calling thread and by
helpers on XLA's intra-op pool.

The helpers spin. A decode step makes ~200 products of tens of microseconds each, and
a pool thread woken per product arrived so late that the caller did most of the work
alone; so a helper, once scheduled, polls the mailbox (one process-wide job slot) for
the next job (gaps are a few microseconds), returning to the pool after `SPIN_NS`
without one. One caller at a time owns the mailbox (a lock word); a call that finds
it taken (another program's product running concurrently) runs alone on its own job.
The caller never waits for a helper to start: when it has run out of chunks it closes
the job (no claim can succeed after that) and waits only for chunks already claimed,
so it cannot deadlock whatever the pool does.
"""
from __future__ import annotations

import llvmlite.binding as llvm
import numba as nb
import numpy as np
from numba import types

from reasoning_jax.model import _gemm_ir
from reasoning_jax.model._gemm_ir import (KN_ROWS, KN_SMALL_ROWS, KN_STRIP, KP_ROWS,
                                          KP_STRIP, NK_COLS, NK_ROWS)
from reasoning_jax.model._numba_ffi import (answer_metadata, api_call, atomic_add,
                                            atomic_cas, atomic_load, atomic_store,
                                            atomic_xchg, bf16_to_f32, bits_to_f32,
                                            call_gemm, expand_rows, free, gather_rows,
                                            malloc, now_ns, pad_rows, pool_threads, ptr,
                                            rows_to_bf16, symbol_address, to_bf16, words)

# Most weight bytes per chunk. Each thread should stream long contiguous runs
# (measured on the 57 MB SmolLM2 head: 64 KB chunks 19 GB/s, 4 MB 25.6 GB/s), and a
# layer's matrix (0.7-3.5 MB) is cut into one chunk per thread.
CHUNK_BYTES = 1 << 22
# How long an idle helper polls for the next job before it returns to the pool.
SPIN_NS = 500_000

# The job record, int64 words: 0 the rows-to-keep mask (modes 5, 6; 0: all), 1
# `generation << 32 | next chunk` (`_CLOSED` as the chunk once the caller stops), 2
# chunks done, 3 chunks, 4 rows of w (modes 0, 1) or column units (2, 3) per chunk, 5 x,
# 6 w (the layer's matrix), 7 y (padded to whole row blocks in modes 2, 3), 8 M, 9 N, 10
# K, 11 row blocks (modes 2, 3), 12 mode (0: w is [N, K]; 1: w is [K, N]; 2, 3: the same
# by `_gemm_ir`'s kn and nk kernels, more than one row; 5, 6: w packed, `_gemm_ir`'s kp
# at 8 or 16 rows a block), 13 the float32 partial sums [chunks, M, N] of mode 1, or x
# as bf16 bits padded to whole row blocks in modes 2, 3, 5, 6, 14-19 scratch for the FFI
# API's argument structs (no allocation per API call); mode 4 (decode attention,
# `attend_tasks`): 5 q, 6 the layer's keys, 7 out, 8 B, 9 kv heads, 10 head dim, 20 the
# layer's values, 21 the mask, 22 slots S, 23 query heads per kv head, 24-25 the scale
# and soft cap as float64; mode 7 (`row_logsumexp`): 5 x, 7 out, 8 rows, 9 V; mode 8
# (`row_silu_mul`): 5 gate, 6 up, 7 out, 8 rows, 9 F, 10 their row stride.
_JOB = 26
_SCRATCH = 14
_ATTN = 20
_CLOSED = 0xFFFFFFFF
_LOW = 0xFFFFFFFF

# The mailbox: words 0 lock (a caller owns the job slot), 1 helpers alive (or
# scheduled), 2 the owner's row buffer (`_ROWS`), 3 unused, then the job record.
# Bound to a JIT symbol so that cached code finds this process's copy.
_MB_JOB = 4
_MAILBOX = np.zeros(_MB_JOB + _JOB, np.int64)
# The kept rows of a product (`gather_rows`), reused (faulted in once per process).
ROWS_SCRATCH_BYTES = 1 << 23
_ROWS = np.zeros(ROWS_SCRATCH_BYTES, np.uint8)
_MAILBOX[2] = _ROWS.ctypes.data
_MAILBOX_SYMBOL = "reasoning_jax_matvec_mailbox"
llvm.add_symbol(_MAILBOX_SYMBOL, _MAILBOX.ctypes.data)
_mailbox_address = symbol_address(_MAILBOX_SYMBOL, function=False)



# The addresses of the kn, nk, kp8, kp16 and kn4 kernels (0 where they cannot run
# here), in a table bound to a JIT symbol (like the mailbox), so cached code finds them.
_GEMM = np.zeros(5, np.int64)
_GEMM_SYMBOL = "reasoning_jax_gemm_table"
llvm.add_symbol(_GEMM_SYMBOL, _GEMM.ctypes.data)
gemm_address = symbol_address(_GEMM_SYMBOL, function=False)
_compiled = _gemm_ir.compile_kernels()
# None when the kernels run here (products of more than one row), else why not.
GEMM_UNAVAILABLE = _compiled if isinstance(_compiled, str) else None
if GEMM_UNAVAILABLE is None:
  _GEMM[:] = _compiled


@nb.njit(fastmath=True, inline="always", cache=True)
def _exp_nonpositive(x):
  """exp(x) for float32 x <= 0 (x < -87 as -87: ~1e-38) in arithmetic LLVM vectorises
  (numba calls libm's expf one value at a time): x = n ln2 + r, |r| <= ln2 / 2, a
  degree-6 Taylor polynomial of exp(r) (< 2e-7 relative) times 2^n from its bits."""
  x = max(x, np.float32(-87.0))
  n = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))
  r = (x - n * np.float32(0.693359375)) + n * np.float32(2.12194440e-4)
  p = np.float32(1.0 / 720.0)
  p = p * r + np.float32(1.0 / 120.0)
  p = p * r + np.float32(1.0 / 24.0)
  p = p * r + np.float32(1.0 / 6.0)
  p = p * r + np.float32(0.5)
  p = p * r + np.float32(1.0)
  p = p * r + np.float32(1.0)
  return p * bits_to_f32(np.uint32(np.int32(n) + 127) << np.uint32(23))


@nb.njit(fastmath=True, error_model="numpy", cache=True)
def attend_tasks(q_addr, k_addr, v_addr, out_addr, mask_addr, B, KH, H, S, G, scale,
                 cap, t0, t1):
  """Decode attention for tasks [t0, t1) of (row b, kv head), for q and out `[B, KH *
  G, H]` float32 (bf16 bits when G has bit 32 set: no conversions around the call, and
  out rounded here as the model rounds it), the layer's keys and values `[B, KH, S,
  H]` bf16 bits and the mask `[B, S]` bool: the scores of the kv head's G query heads against every slot (the nk
  kernel, the keys read in place), a float32 softmax over the unmasked slots (scaled,
  soft-capped when `cap` > 0; masked slots weigh exactly 0, a row with none left is
  uniform, as `attention.MASKED` makes XLA's), the probabilities rounded to bf16, and
  their sum of values (the kn kernel): `attention._attend`'s values, summed in
  another order. Slots after a row's last unmasked one (the unwritten rest of the
  cache) are not read: they would weigh exactly 0."""
  gemm = words(gemm_address(), 5)
  io16, G = G >> 32, G & 0xFFFFFFFF
  Gq = (G + NK_ROWS - 1) // NK_ROWS * NK_ROWS
  Gp = (G + KN_SMALL_ROWS - 1) // KN_SMALL_ROWS * KN_SMALL_ROWS
  a_xq = malloc(2 * Gq * H + 4 * Gq * S + 2 * Gp * S + 4 * Gp * H)
  a_sc = a_xq + 2 * Gq * H
  a_pb = a_sc + 4 * Gq * S
  a_ob = a_pb + 2 * Gp * S
  xq = nb.carray(ptr(a_xq), (Gq, H), np.uint16)
  sc = nb.carray(ptr(a_sc), (Gq, S), np.float32)
  ob = nb.carray(ptr(a_ob), (Gp, H), np.float32)
  xq[:, :] = 0
  q = nb.carray(ptr(q_addr), (B, KH * G, H), np.float32)
  out = nb.carray(ptr(out_addr), (B, KH * G, H), np.float32)
  q16 = nb.carray(ptr(q_addr), (B, KH * G, H), np.uint16)
  out16 = nb.carray(ptr(out_addr), (B, KH * G, H), np.uint16)
  mask = nb.carray(ptr(mask_addr), (B, S), np.uint8)
  uniform = to_bf16(np.float32(1.0) / np.float32(S))
  for t in range(t0, t1):
    b, kh = t // KH, t % KH
    for g in range(G):
      for h in range(H):
        xq[g, h] = q16[b, kh * G + g, h] if io16 else to_bf16(q[b, kh * G + g, h])
    last = -1
    for s in range(S):
      last = s if mask[b, s] != 0 else last
    # The slots to read: through the last unmasked one, in whole units of the kernels
    # (4 columns of nk, pairs of kn); all of them when none is left.
    Se = S if last < 0 else min(S, (last + NK_COLS) // NK_COLS * NK_COLS)
    pb = nb.carray(ptr(a_pb), (Gp, Se), np.uint16)  # rows of Se: the kn kernel's x
    pb[G:, :] = 0
    at = 2 * (b * KH + kh) * S * H
    call_gemm(gemm[1], a_sc, a_xq, k_addr + at, H, H, S, 0, Se, Gq // NK_ROWS)
    for g in range(G):
      if last < 0:  # no slot left: XLA's softmax over all-MASKED is uniform
        pb[g, :] = uniform
        continue
      # Branch-free loops (so LLVM vectorises them) and no infinities (fastmath lets
      # LLVM assume there are none): masked slots score -3e38, then weigh 0.
      top = np.float32(-3.0e38)
      for s in range(Se):
        v = sc[g, s] * scale
        if cap > 0:
          v = np.float32(np.tanh(v / cap)) * cap
        v = v if mask[b, s] != 0 else np.float32(-3.0e38)
        sc[g, s] = v
        top = max(top, v)
      total = np.float32(0.0)
      for s in range(Se):
        e = _exp_nonpositive(sc[g, s] - top)
        e = e if mask[b, s] != 0 else np.float32(0.0)
        sc[g, s] = e
        total += e
      for s in range(Se):
        pb[g, s] = to_bf16(sc[g, s] / total)
    call_gemm(gemm[4], a_ob, a_pb, v_addr + at, Se, H, H, 0, H, Gp // KN_SMALL_ROWS)
    for g in range(G):
      if io16:
        for h in range(H):
          out16[b, kh * G + g, h] = to_bf16(ob[g, h])
      else:
        out[b, kh * G + g, :] = ob[g, :]
  free(a_xq)


# Reassociation (vectorised sums) without assuming away NaN and infinities.
_NAN_SAFE = {"nsz", "arcp", "contract", "afn", "reassoc"}


@nb.njit(fastmath=_NAN_SAFE, error_model="numpy", cache=True)
def row_logsumexp(x_addr, out_addr, V, r0, r1):
  """out[r] = log(sum_v exp(x[r, v])) for rows [r0, r1) of float32 `x [.., V]`, as
  `jax.nn.logsumexp`: the row's max m plus the log of the sum of exp(x - m) (the
  vectorisable `_exp_nonpositive`, < 2e-7 relative); a row whose max is not finite
  (all -inf, an inf, a NaN) gets that max, NaN if it holds any NaN."""
  out = nb.carray(ptr(out_addr), (r1,), np.float32)
  for r in range(r0, r1):
    row = nb.carray(ptr(x_addr + 4 * r * V), (V,), np.float32)
    # One integer pass (LLVM vectorises it; a float max it did not): whether any
    # value is NaN or infinite (all exponent bits set), and the max of the floats'
    # bits mapped to integers of the same order. NaN and infinities take the slow path.
    bits = nb.carray(ptr(x_addr + 4 * r * V), (V,), np.int32)
    special = np.int32(0)
    top = np.int32(-2147483648)
    for v in range(V):
      b = bits[v]
      special |= np.int32((b & np.int32(0x7F800000)) == np.int32(0x7F800000))
      key = b if b >= 0 else b ^ np.int32(0x7FFFFFFF)
      top = key if key > top else top
    nan = False
    if special == 0:
      m = bits_to_f32(np.uint32(top if top >= 0 else top ^ np.int32(0x7FFFFFFF)))
    else:
      m = np.float32(-np.inf)
      for v in range(V):
        m = max(m, row[v])
        nan |= row[v] != row[v]
    if nan or not np.isfinite(m):
      out[r] = np.float32(np.nan) if nan else m
      continue
    total = np.float32(0.0)
    for v in range(V):
      total += _exp_nonpositive(row[v] - m)
    out[r] = m + np.float32(np.log(total))


@nb.njit(fastmath=_NAN_SAFE, error_model="numpy", cache=True)
def row_silu_mul(g_addr, u_addr, out_addr, F, ld, r0, r1):
  """out[r] = bf16(silu(g) * u) for rows [r0, r1) of float32 `g, u [.., F]` (rows `ld`
  apart; fused `[.., 2F]`: u = g + F, ld = 2F), each first rounded to bf16, as
  `forward._mlp` computes it in XLA: silu(g) = g / (1 + exp(-g)), here from exp(-|g|)
  (`_exp_nonpositive`, < 2e-7 relative, no overflow): the loop vectorises."""
  for r in range(r0, r1):
    g = nb.carray(ptr(g_addr + 4 * r * ld), (F,), np.float32)
    u = nb.carray(ptr(u_addr + 4 * r * ld), (F,), np.float32)
    out = nb.carray(ptr(out_addr + 2 * r * F), (F,), np.uint16)
    for i in range(F):
      a, b = bf16_to_f32(to_bf16(g[i])), bf16_to_f32(to_bf16(u[i]))
      e = _exp_nonpositive(-abs(a))
      sig = (np.float32(1.0) if a >= 0 else e) / (np.float32(1.0) + e)
      sig = sig if a > np.float32(-87.0) else np.float32(0.0)  # as XLA's, ~1e-38 off
      out[i] = to_bf16(a * sig * b)


@nb.njit(fastmath=True, cache=True)
def _dot(x, w, K):
  """sum_k x[k] * w[k] over float32 x and bf16 bits w, in float32 (fastmath lets LLVM
  vectorise the sum into partial sums: the order differs from XLA's, not the
  products, which are exact)."""
  s = np.float32(0.0)
  for k in range(K):
    s += x[k] * bf16_to_f32(w[k])
  return s


@nb.njit(fastmath=True, cache=True)
def _rows_times_x(x, w, acc, k0, k1):
  """acc[m] = sum over k in [k0, k1) of x[m, k] * w[k] for a [K, N] bits matrix: one
  weight row per pass (measured: a pass over four rows at once does not vectorise
  and runs at 2/3 the speed)."""
  M, N = acc.shape
  for m in range(M):
    a = acc[m]
    a[:] = 0.0
    for k in range(k0, k1):
      xk, wk = x[m, k], w[k]
      for n in range(N):
        a[n] += xk * bf16_to_f32(wk[n])


@nb.njit(inline="always", cache=True)
def _unit(mode):
  """The columns of a unit of work of GEMM mode 2, 3, 5 or 6 (its kernel's step)."""
  return KN_STRIP if mode == 2 else NK_COLS if mode == 3 else KP_STRIP


@nb.njit(inline="always", cache=True)
def _block(mode):
  """The rows of a row block of GEMM mode 2, 3, 5 or 6."""
  return KN_ROWS if mode == 2 else NK_ROWS if mode == 3 else KP_ROWS[mode - 5]


@nb.njit(fastmath=True, cache=True)
def _chunk(job_addr, c):
  """Chunk `c` of the job's product."""
  job = words(job_addr, _JOB)
  M, N, K, n_chunks, rows = job[8], job[9], job[10], job[3], job[4]
  mode = job[12]
  if mode == 4:  # decode attention: chunk c owns (row, kv head) tasks
    tasks = job[8] * job[9]
    knobs = nb.carray(ptr(job_addr + 8 * (_ATTN + 4)), (2,), np.float64)
    attend_tasks(job[5], job[6], job[_ATTN], job[7], job[_ATTN + 1], job[8], job[9],
                 job[10], job[_ATTN + 2], job[_ATTN + 3], np.float32(knobs[0]),
                 np.float32(knobs[1]), c * rows, min(tasks, (c + 1) * rows))
    return
  if mode == 7:  # row log-sum-exp: chunk c owns rows
    row_logsumexp(job[5], job[7], N, c * rows, min(M, (c + 1) * rows))
    return
  if mode == 8:  # silu(gate) * up: chunk c owns rows
    row_silu_mul(job[5], job[6], job[7], N, K, c * rows, min(M, (c + 1) * rows))
    return
  if mode >= 2:  # `_gemm_ir`'s kernels own whole column units [n0, n1)
    unit = _unit(mode)
    n0, n1 = c * rows * unit, min(N, (c + 1) * rows * unit)
    ldw = K if mode == 3 else N
    call_gemm(words(gemm_address(), 5)[mode - 2 if mode < 4 else mode - 3], job[7],
              job[13], job[6], K, ldw, N, n0, n1, job[11])
    if mode >= 5 and job[0] != 0 and job[11] * _block(mode) <= M:  # kept rows, in y
      expand_rows(job[7], job[7], M, N, job[0], n0, n1)  # to their rows, these columns
    return
  x = nb.carray(ptr(job[5]), (M, K), np.float32)
  if mode == 0:  # w [N, K]: chunk c owns output columns [c rows, ...)
    w = nb.carray(ptr(job[6]), (N, K), np.uint16)
    y = nb.carray(ptr(job[7]), (M, N), np.float32)
    for n in range(c * rows, min(N, (c + 1) * rows)):
      for m in range(M):
        y[m, n] = _dot(x[m], w[n], K)
  else:  # w [K, N]: chunk c sums the contiguous rows [c rows, ...) into its partial
    w = nb.carray(ptr(job[6]), (K, N), np.uint16)
    part = nb.carray(ptr(job[13]), (n_chunks, M, N), np.float32)
    _rows_times_x(x, w, part[c], c * rows, min(K, (c + 1) * rows))


@nb.njit(fastmath=True, cache=True)
def _claim_and_run(job_addr, gen):
  """Claim and run chunks of job generation `gen` until none is left (or the job is
  closed or replaced); True when it ran any."""
  ran = False
  while True:
    v = atomic_load(job_addr + 8)
    c = v & _LOW
    if (v >> 32) != gen or c >= words(job_addr, _JOB)[3]:
      return ran
    if atomic_cas(job_addr + 8, v, v + 1):
      _chunk(job_addr, c)
      atomic_add(job_addr + 16, 1)
      ran = True


@nb.njit(fastmath=True, cache=True)
def _spin(mb):
  """A helper's life: run chunks of every job published in the mailbox until none has
  come for `SPIN_NS`."""
  job_addr = mb + 8 * _MB_JOB
  last = now_ns()
  i = 0
  while True:
    v = atomic_load(job_addr + 8)
    if (v & _LOW) < words(job_addr, _JOB)[3]:
      if _claim_and_run(job_addr, v >> 32):
        last = now_ns()
      continue
    i += 1
    if (i & 63) == 0:
      now = now_ns()
      if now < 0 or last < 0 or now - last > SPIN_NS:
        break
  atomic_add(mb + 8, -1)


@nb.cfunc(types.void(types.voidptr), fastmath=True, cache=True)
def _helper_task(data):
  _spin(_mailbox_address())


_HELPER_SYMBOL = "reasoning_jax_matvec_helper"
llvm.add_symbol(_HELPER_SYMBOL, _helper_task.address)
_helper_address = symbol_address(_HELPER_SYMBOL, function=True)


@nb.njit(cache=True)
def _run_job(api, ctx, job_addr, mb, x, w, y, M, N, K, mode):
  """Publish the product as a new generation of the job at `job_addr`, keep enough
  helpers alive when `mb` (the mailbox, owned by this caller) is not 0, run chunks,
  close the job, wait for the chunks helpers claimed and sum the partials (mode 1) or
  copy out the rows (modes 2, 3)."""
  job = words(job_addr, _JOB)
  threads = pool_threads(api, ctx, job_addr + 8 * _SCRATCH) if mb != 0 else 1
  scratch = words(mb, 3)[2] if mb != 0 else 0  # the mailbox owner's row buffer
  job[5], job[6], job[7] = x, w, y
  job[8], job[9], job[10], job[12] = M, N, K, mode
  if mode == 4 or mode >= 7:  # attention (the caller filled in its words) or rows
    tasks = M * N if mode == 4 else M
    job[4] = max(1, (tasks + 4 * threads - 1) // (4 * threads))
    n_chunks = (tasks + job[4] - 1) // job[4]
  elif mode >= 2:
    # x rounded to bf16 (exact for a bf16 model's activations) in whole row blocks, y
    # padded likewise, the columns cut into ~4 chunks per thread of whole units.
    block = _block(mode)
    if mode >= 5 and job[0] != 0:  # only the kept rows (a prefill's real tokens)
      xb, Mp = gather_rows(x, M, K, block, job[0], scratch, ROWS_SCRATCH_BYTES)
    elif mode >= 5:  # x arrives as bf16 bits: used in place when it fills whole blocks
      xb, Mp = pad_rows(x, M, K, block)
    else:
      xb, Mp = rows_to_bf16(x, M, K, block)
    units = N // _unit(mode)
    job[4] = max(1, (units + 4 * threads - 1) // (4 * threads))
    job[11] = Mp // block
    job[13] = xb
    keep = mode >= 5 and job[0] != 0  # then y's first rows take the kept ones
    job[7] = y if Mp == M or (keep and Mp < M) else malloc(4 * Mp * N)
    n_chunks = (units + job[4] - 1) // job[4]
  else:
    per_thread = (2 * N * K + threads * CHUNK_BYTES - 1) // (threads * CHUNK_BYTES)
    split = N if mode == 0 else K  # the axis chunks cut: contiguous rows of w
    rows = max(1, (split + threads * per_thread - 1) // (threads * per_thread))
    n_chunks = (split + rows - 1) // rows
    job[4] = rows
    job[13] = 0 if mode == 0 else malloc(4 * n_chunks * M * N)
  job[2], job[3] = 0, n_chunks
  gen = ((atomic_load(job_addr + 8) >> 32) + 1) & 0x7FFFFFFF  # stays positive
  atomic_store(job_addr + 8, gen << 32)  # open: claims may succeed from here on
  if mb != 0:
    want = min(threads, n_chunks) - 1
    while atomic_load(mb + 8) < want:
      atomic_add(mb + 8, 1)
      if not api_call(api, 17, job_addr + 8 * _SCRATCH, ctx, _helper_address(), 0):
        atomic_add(mb + 8, -1)  # Schedule failed
        break
  _claim_and_run(job_addr, gen)
  claimed = min(atomic_xchg(job_addr + 8, (gen << 32) | _CLOSED) & _LOW, n_chunks)
  while atomic_load(job_addr + 16) < claimed:
    pass  # only chunks a running helper has claimed remain
  if mode == 4 or mode >= 7:
    pass
  elif mode >= 2:
    if job[7] != y and mode >= 5 and job[0] != 0:  # (in y, the chunks moved them)
      expand_rows(job[7], y, M, N, job[0], 0, N)
      free(job[7])
    elif job[7] != y:
      out = nb.carray(ptr(y), (M * N,), np.float32)
      out[:] = nb.carray(ptr(job[7]), (M * N,), np.float32)
      free(job[7])
    if job[13] != x and job[13] != scratch:
      free(job[13])
  elif mode == 1:
    part = nb.carray(ptr(job[13]), (n_chunks * M * N,), np.float32)
    out = nb.carray(ptr(y), (M * N,), np.float32)
    for i in range(M * N):
      out[i] = part[i]
    for c in range(1, n_chunks):
      for i in range(M * N):
        out[i] += part[c * M * N + i]
    free(job[13])


@nb.njit(cache=True)
def _matvec(call_frame, transposed):
  """The body of both handlers: y[M, N] = x[M, K] @ w[layer] for x float32, w the bf16
  bits (uint16) of L stacked matrices, [L, N, K] when `transposed` else [L, K, N] or
  packed [L, N / 16, K / 2, 16, 2] (then x is bf16, and an optional 4th operand, a
  bool [M], keeps only the rows set), layer an int32 scalar; y float32."""
  frame = nb.carray(call_frame, (15,), np.int64)
  if answer_metadata(frame):
    return 0
  api, ctx = frame[2], frame[3]
  args, rets = words(frame[9], frame[7]), words(frame[14], 1)
  bx, bw, bl, by = (words(args[0], 6), words(args[1], 6), words(args[2], 6),
                    words(rets[0], 6))
  M = words(bx[5], 2)[0]
  wd = words(bw[5], 3)
  N, K = (wd[1], wd[2]) if transposed else (wd[2], wd[1])
  packed = bw[4] == 5  # [L, N / 16, K / 2, 16, 2] (`cpu_matvec.pack`)
  if packed:
    N, K = wd[1] * KP_STRIP, wd[2] * 2
  # Clamped like XLA's dynamic indexing, so a bad index never reads outside the stack.
  layer = min(max(nb.carray(ptr(bl[3]), (1,), np.int32)[0], 0), wd[0] - 1)
  w = bw[3] + 2 * layer * N * K
  gemm = words(gemm_address(), 5)
  mode = 0 if transposed else 1
  if packed:  # `cpu_matvec` packs only where the kernels run
    mode = 5 if M <= KP_ROWS[0] else 6
  elif M > 1 and transposed and gemm[1] != 0 and K % 32 == 0 and N % NK_COLS == 0:
    mode = 3
  elif M > 1 and not transposed and gemm[0] != 0 and K % 2 == 0 and N % KN_STRIP == 0:
    mode = 2
  keep = words(args[3], 6)[3] if frame[7] > 3 else 0  # packed only (`cpu_matvec`)
  _dispatch(api, ctx, bx[3], w, by[3], M, N, K, mode, keep)
  return 0


@nb.njit(cache=True)
def _dispatch(api, ctx, x, w, y, M, N, K, mode, extra):
  """Run the job in the mailbox (with helpers) if it is free, else alone in a job of
  its own; `extra` is the address of the 6 attention words (`_ATTN`) to copy in (mode
  4) or of the bool rows-to-keep mask `[M]` (modes 5, 6; 0 keeps all)."""
  mb = _mailbox_address()
  owner = atomic_cas(mb, 0, 1)
  job_addr = mb + 8 * _MB_JOB if owner else malloc(8 * _JOB)
  if not owner:
    words(job_addr, _JOB)[1] = 0
  if mode == 4:
    words(job_addr + 8 * _ATTN, 6)[:] = words(extra, 6)
  words(job_addr, 1)[0] = extra if mode == 5 or mode == 6 else 0
  _run_job(api, ctx, job_addr, mb if owner else 0, x, w, y, M, N, K, mode)
  if owner:
    atomic_store(mb, 0)
  else:  # another product owned the mailbox: this one ran alone
    free(job_addr)


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_t(call_frame):
  """XLA FFI handler: `y = x @ w[layer].T` for w `[L, N, K]` (see `_matvec`)."""
  return ptr(_matvec(call_frame, True))


@nb.njit(cache=True)
def _attention(call_frame):
  """The body of `handler_attention`: out [B, N, H] = decode attention of q [B, N, H]
  (both float32, or both bf16) over layer `layer` of the key and value stacks [L, B, K, S, H]
  (bf16 bits), with mask [B, S] (bool) and knobs [2] float32 (scale, soft cap; cap 0
  for none); see `attend_tasks`."""
  frame = nb.carray(call_frame, (15,), np.int64)
  if answer_metadata(frame):
    return 0
  api, ctx = frame[2], frame[3]
  args, rets = words(frame[9], 6), words(frame[14], 1)
  bq, bk, bv = words(args[0], 6), words(args[1], 6), words(args[2], 6)
  bl, bm, bs = words(args[3], 6), words(args[4], 6), words(args[5], 6)
  kd = words(bk[5], 5)
  L, B, KH, S, H = kd[0], kd[1], kd[2], kd[3], kd[4]
  N = words(bq[5], 3)[1]
  layer = min(max(nb.carray(ptr(bl[3]), (1,), np.int32)[0], 0), L - 1)
  knobs = nb.carray(ptr(bs[3]), (2,), np.float32)
  extra = np.zeros(6, np.int64)
  io16 = 1 if bq[2] == 16 else 0  # XLA_FFI_DataType BF16: q and out as bf16 bits
  extra[0], extra[1], extra[2] = bv[3] + 2 * layer * B * KH * S * H, bm[3], S
  extra[3] = N // KH | io16 << 32
  f = extra[4:].view(np.float64)
  f[0], f[1] = knobs[0], knobs[1]
  _dispatch(api, ctx, bq[3], bk[3] + 2 * layer * B * KH * S * H, words(rets[0], 6)[3],
            B, KH, H, 4, extra.ctypes.data)
  return 0


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_attention(call_frame):
  """XLA FFI handler: decode attention over a layer of the KV cache (see `_attention`)."""
  return ptr(_attention(call_frame))


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_n(call_frame):
  """XLA FFI handler: `y = x @ w[layer]` for w `[L, K, N]` (see `_matvec`)."""
  return ptr(_matvec(call_frame, False))


@nb.njit(cache=True)
def _logsumexp(call_frame):
  """The body of `handler_logsumexp`: out [M] float32 = `row_logsumexp` of x [M, V]
  float32, rows split over the threads."""
  frame = nb.carray(call_frame, (15,), np.int64)
  if answer_metadata(frame):
    return 0
  bx, bo = words(words(frame[9], 1)[0], 6), words(words(frame[14], 1)[0], 6)
  dims = words(bx[5], 2)
  _dispatch(frame[2], frame[3], bx[3], 0, bo[3], dims[0], dims[1], 0, 7, 0)
  return 0


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_logsumexp(call_frame):
  """XLA FFI handler: the log-sum-exp of each row (see `_logsumexp`)."""
  return ptr(_logsumexp(call_frame))


@nb.njit(cache=True)
def _silu_mul(call_frame):
  """The body of `handler_silu_mul`: out [M, F] bf16 = `row_silu_mul` of gate and up
  [M, F] float32, or of one fused [M, 2F] passed twice, rows split over the threads."""
  frame = nb.carray(call_frame, (15,), np.int64)
  if answer_metadata(frame):
    return 0
  args = words(frame[9], 2)
  bg, bu = words(args[0], 6), words(args[1], 6)
  bo = words(words(frame[14], 1)[0], 6)
  M, F, ld = words(bo[5], 2)[0], words(bo[5], 2)[1], words(bg[5], 2)[1]
  _dispatch(frame[2], frame[3], bg[3], bu[3] + 4 * (ld - F), bo[3], M, F, ld, 8, 0)
  return 0


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_silu_mul(call_frame):
  """XLA FFI handler: bf16 silu(gate) * up (see `_silu_mul`)."""
  return ptr(_silu_mul(call_frame))

