"""The numba-compiled body of `cpu_matvec`: XLA FFI handlers for a bf16 matrix-vector
product on CPU, split over XLA's own thread pool, and a 16-bit row gather.

Imported only by `cpu_matvec` (numba is imported lazily there). numba caches the
compiled code on disk (~8 s to compile, ~1 s to load); the call frame readers and
intrinsics are in `_numba_ffi`. The handlers return no errors: `cpu_matvec` checks
shapes and dtypes at trace time.

Work split: the weight matrix is cut into chunks of contiguous rows (a layer's matrix
into one per thread, a large head into ~`CHUNK_BYTES` pieces): for `[N, K]` matrices
each chunk owns output columns, for `[K, N]` each sums its rows into a float32 partial
that the caller adds up at the end. Chunks are claimed from the job's counter
(`generation << 32 | next chunk`, by compare-and-swap) by the calling thread and by
helpers on XLA's intra-op pool.

The helpers spin. A decode step makes ~200 products of 0.2-3.5 MB each (tens of
microseconds), and a pool thread woken per product arrived late enough that the caller
did most of the work alone; so a helper, once scheduled, stays and polls the mailbox
(one process-wide job slot) for the next job, returning to the pool after
`SPIN_NS` without one (during decoding the gap between products is a few
microseconds). One caller at a time owns the mailbox (a lock word); a call that finds
it taken (another program's product running concurrently) runs alone on its own
job. The caller never waits for a helper to start: when it has run out of chunks it
closes the job (no claim can succeed after that) and waits only for chunks already
claimed, so it cannot deadlock whatever the pool does.
"""
from __future__ import annotations

import llvmlite.binding as llvm
import numba as nb
import numpy as np
from numba import types

from reasoning_jax.model._numba_ffi import (answer_metadata, api_call, atomic_add,
                                            atomic_cas, atomic_load, atomic_store,
                                            atomic_xchg, bits_to_f32, free, malloc,
                                            now_ns, pool_threads, ptr, symbol_address,
                                            words)

# Most weight bytes per chunk. Each thread should stream long contiguous runs
# (measured on the 57 MB SmolLM2 head: 64 KB chunks 19 GB/s, 4 MB 25.6 GB/s), and a
# layer's matrix (0.7-3.5 MB) is cut into one chunk per thread.
CHUNK_BYTES = 1 << 22
# How long an idle helper polls for the next job before it returns to the pool.
SPIN_NS = 500_000

# The job record, int64 words: 0 unused, 1 `generation << 32 | next chunk` (`_CLOSED`
# as the chunk once the caller stops), 2 chunks done, 3 chunks, 4 rows of w per
# chunk, 5 x, 6 w (the layer's matrix), 7 y, 8 M, 9 N, 10 K, 11 unused, 12 layout (0:
# w is [N, K]; 1: w is [K, N]), 13 the float32 partial sums [chunks, M, N] of layout
# 1, 14-19 scratch for the FFI API's argument structs (no allocation per API call).
_JOB = 20
_SCRATCH = 14
_CLOSED = 0xFFFFFFFF
_LOW = 0xFFFFFFFF

# The mailbox: words 0 lock (a caller owns the job slot), 1 helpers alive (or
# scheduled), 2-3 unused, then the job record. Bound to a JIT symbol so that cached
# code finds this process's copy.
_MB_JOB = 4
_MAILBOX = np.zeros(_MB_JOB + _JOB, np.int64)
_MAILBOX_SYMBOL = "reasoning_jax_matvec_mailbox"
llvm.add_symbol(_MAILBOX_SYMBOL, _MAILBOX.ctypes.data)
_mailbox_address = symbol_address(_MAILBOX_SYMBOL, function=False)


@nb.njit(fastmath=True, inline="always", cache=True)
def _f32(bits):
  return bits_to_f32(np.uint32(bits) << np.uint32(16))


@nb.njit(fastmath=True, cache=True)
def _dot(x, w, K):
  """sum_k x[k] * w[k] over float32 x and bf16 bits w, in float32 (fastmath lets LLVM
  vectorise the sum into partial sums: the order differs from XLA's, not the
  products, which are exact)."""
  s = np.float32(0.0)
  for k in range(K):
    s += x[k] * _f32(w[k])
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
        a[n] += xk * _f32(wk[n])


@nb.njit(fastmath=True, cache=True)
def _chunk(job_addr, c):
  """Chunk `c` of the job's product."""
  job = words(job_addr, _JOB)
  M, N, K, n_chunks, rows = job[8], job[9], job[10], job[3], job[4]
  x = nb.carray(ptr(job[5]), (M, K), np.float32)
  if job[12] == 0:  # w [N, K]: chunk c owns output columns [c rows, ...)
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
def _run_job(api, ctx, job_addr, mb, x, w, y, M, N, K, transposed):
  """Publish the product as a new generation of the job at `job_addr`, keep enough
  helpers alive when `mb` (the mailbox, owned by this caller) is not 0, run chunks,
  close the job, wait for the chunks helpers claimed and sum the partials."""
  job = words(job_addr, _JOB)
  threads = pool_threads(api, ctx, job_addr + 8 * _SCRATCH) if mb != 0 else 1
  per_thread = (2 * N * K + threads * CHUNK_BYTES - 1) // (threads * CHUNK_BYTES)
  split = N if transposed else K  # the axis chunks cut: contiguous rows of w
  rows = max(1, (split + threads * per_thread - 1) // (threads * per_thread))
  n_chunks = (split + rows - 1) // rows
  job[2], job[3], job[4] = 0, n_chunks, rows
  job[5], job[6], job[7] = x, w, y
  job[8], job[9], job[10], job[12] = M, N, K, 0 if transposed else 1
  job[13] = 0 if transposed else malloc(4 * n_chunks * M * N)
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
  if not transposed:
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
  bits (uint16) of L stacked matrices, [L, N, K] when `transposed` else [L, K, N],
  layer an int32 scalar; y float32."""
  frame = nb.carray(call_frame, (15,), np.int64)
  if answer_metadata(frame):
    return 0
  api, ctx = frame[2], frame[3]
  args, rets = words(frame[9], 3), words(frame[14], 1)
  bx, bw, bl, by = (words(args[0], 6), words(args[1], 6), words(args[2], 6),
                    words(rets[0], 6))
  M = words(bx[5], 2)[0]
  wd = words(bw[5], 3)
  N, K = (wd[1], wd[2]) if transposed else (wd[2], wd[1])
  # Clamped like XLA's dynamic indexing, so a bad index never reads outside the stack.
  layer = min(max(nb.carray(ptr(bl[3]), (1,), np.int32)[0], 0), wd[0] - 1)
  w = bw[3] + 2 * layer * N * K
  mb = _mailbox_address()
  if atomic_cas(mb, 0, 1):
    _run_job(api, ctx, mb + 8 * _MB_JOB, mb, bx[3], w, by[3], M, N, K, transposed)
    atomic_store(mb, 0)
  else:  # another product owns the mailbox: this one runs alone
    job_addr = malloc(8 * _JOB)
    words(job_addr, _JOB)[1] = 0
    _run_job(api, ctx, job_addr, 0, bx[3], w, by[3], M, N, K, transposed)
    free(job_addr)
  return 0


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_t(call_frame):
  """XLA FFI handler: `y = x @ w[layer].T` for w `[L, N, K]` (see `_matvec`)."""
  return ptr(_matvec(call_frame, True))


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_n(call_frame):
  """XLA FFI handler: `y = x @ w[layer]` for w `[L, K, N]` (see `_matvec`)."""
  return ptr(_matvec(call_frame, False))


@nb.njit(cache=True)
def _take(call_frame):
  """The body of `handler_take`: out[i] = table[clamp(idx[i], 0, R - 1)] for a table
  `[R, ...]` of 16-bit values (any float or int dtype: the bits are copied), idx int32
  `[n]`, out `[n, ...]` of the table's dtype."""
  frame = nb.carray(call_frame, (15,), np.int64)
  if answer_metadata(frame):
    return 0
  args, rets = words(frame[9], 2), words(frame[14], 1)
  bt, bi, bo = words(args[0], 6), words(args[1], 6), words(rets[0], 6)
  dims = words(bt[5], bt[4])
  width = 1
  for d in range(1, bt[4]):
    width *= dims[d]
  R, n = dims[0], words(bi[5], 1)[0]
  table = nb.carray(ptr(bt[3]), (R, width), np.uint16)
  idx = nb.carray(ptr(bi[3]), (n,), np.int32)
  out = nb.carray(ptr(bo[3]), (n, width), np.uint16)
  for i in range(n):
    out[i, :] = table[min(max(idx[i], 0), R - 1)]
  return 0


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_take(call_frame):
  """XLA FFI handler: rows of a 16-bit table by clamped index (see `_take`)."""
  return ptr(_take(call_frame))
